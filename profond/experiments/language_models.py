r"""Language models compared: scaling law, GPT vs LSTM, masked vs autoregressive likelihood.

Three experiments, every model trained through the one loop (:func:`profond.train.train`):

``scaling-law`` (course §7.10, eq. 7.16; exercise 11.7)
    GPTs (method ``char-lm``, recipe ``fortune-char-gpt``) of increasing width and depth,
    every one trained on the same characters for the same number of tokens (same epochs,
    batch and window), then the test loss ``L`` (nats per character) against the
    non-embedding parameter count ``N`` (Kaplan et al.'s count,
    :meth:`~profond.models.transformer.GPT.num_parameters`). Eq. 7.16,
    ``L(N) = (N_c / N)^{α_N}``, is a straight line in log-log axes,
    ``log L = α_N log N_c − α_N log N``, so :func:`fit_power_law` fits it by ordinary least
    squares of ``log L`` on ``log N`` and gives ``α_N`` with its standard error. The same fit
    is run on exercise 11.7's four points (``N = 10^6 … 10^9``, ``L = 3.2, 2.8, 2.5, 2.3``) and
    extrapolated to ``N = 10^11``. Whether a power law describes the points is judged in
    code (:func:`judge_power_law`): the largest residual of the line and the curvature of a
    quadratic fit in ``log N`` (significant when more than 2 standard errors from 0).
    Eq. 7.16 is a law for models trained to convergence on unlimited data; here data and
    compute are fixed and small, so the larger models are the least converged: the fitted
    ``α_N`` is a property of this budget, not the course's ``0.076``.

``gpt-vs-lstm`` (exercise 6.4)
    A GPT and an LSTM language model of nearly equal parameter count on ``fortune-chars``
    (recipes ``fortune-char-gpt`` and ``fortune-char-lstm``, same epochs): test bits per
    character, training time, and greedy generation time per token for :data:`GEN_LENGTH`
    new characters on one thread, batch 1: the GPT with its KV cache (each step projects the
    new token only, ``O(t)`` attention), the GPT without it (each step reads the whole
    window again: ``O(t^2)`` per token up to the context, :func:`timed_greedy`), and the LSTM
    (one recurrent step per token, ``O(1)``). The cached loop must give the text of
    ``method.generate(temperature=0)``, and with and without the cache the GPT must agree on
    every token generated before the context is full (checked, in the table). Evaluation
    context differs: the GPT reads the test text in windows of ``max_len`` characters, the
    LSTM carries its state through the whole stream.

``mlm-vs-ar`` (exercise 7.5)
    A GPT (``char-lm`` on the fortunes of the topic files) and a BERT (``mlm``, recipe
    ``fortune-topics-bert`` with a character tokenizer) of the same width and depth, scored on
    the same short test fortunes (in neither training set; both splits hash the fortune
    the same way): the GPT's exact log-likelihood by the chain rule (eq. 7.14),
    ``log p(x) = Σ_t log p(x_t | x_{<t})``, and the BERT's pseudo-log-likelihood
    ``PLL(x) = Σ_i log p(x_i | x_{−i})`` (each position masked in turn,
    :func:`pseudo_log_likelihood`), both in bits per character. PLL is not ``log p(x)``:
    :func:`enumerate_normalisation` sums ``exp`` of each score over all ``V^T`` sequences
    of a tiny vocabulary for small random (untrained) models, exactly; the GPT's sum is 1,
    the BERT's is not; :func:`joint_pll_sum` does the same with the exact conditionals of a
    known joint (a perfect masked LM), which is not 1 either. Fine-tuning accuracy
    (exercise 7.5.3) is not measured.

``--quick`` (CI): tiny models, the ``fortunes`` (and ``riddles``) files only, one epoch:
plumbing, the fits and the enumeration, not the claims.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..errors import ConfigError  # noqa: E402
from ..registry import EXPERIMENTS, MODELS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, finite, num_threads, run_training, verdict  # noqa: E402

LN2 = math.log(2)
#: exponent of eq. 7.16 quoted by the course (Kaplan et al., 2020)
COURSE_ALPHA = 0.076
#: exercise 11.7: model sizes and their test losses
EXERCISE_N = (1e6, 1e7, 1e8, 1e9)
EXERCISE_L = (3.2, 2.8, 2.5, 2.3)
#: exercise 11.7.3: where the fit is extrapolated
EXTRAPOLATE_N = 1e11
#: a power law "describes" points whose log-residuals stay within this (about 2 % of L) ...
MAX_LOG_RESIDUAL = 0.02
#: ... and whose quadratic term in log N is not significant at 5 % (two-sided Student t,
#: critical values for 1..10 degrees of freedom; 2 beyond)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
#: new characters generated for the timings (exercise 6.4.4)
GEN_LENGTH = 256
#: random models enumerated in mlm-vs-ar, and the distance from 1 that counts as "not 1"
ENUM_SEEDS = 4
NOT_ONE = 1e-3
#: generation prompt (after the fortune separator, as ``profond generate`` primes it)
PROMPT = "The "


# ----------------------------------------------------------------------------------------
# power-law fit (eq. 7.16, exercise 11.7)


@dataclass(frozen=True)
class PowerLawFit:
    """``L = (N_c / N)^α`` fitted by least squares of ``log L`` on ``log N``."""

    alpha: float
    alpha_se: float
    n_c: float
    r2: float
    residuals: tuple[float, ...]  # log L - fitted log L, natural log (≈ relative error)
    curvature: float  # quadratic coefficient of log L in (log N - mean): 0 for a power law
    curvature_se: float
    points: int

    def predict(self, n: float | np.ndarray) -> Any:
        return (self.n_c / np.asarray(n, dtype=float)) ** self.alpha  # (7.16)


def _ols(x: np.ndarray, y: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polynomial least squares ``y ≈ Σ_k b_k x^k``: coefficients, their standard errors
    (NaN without residual degrees of freedom), residuals."""
    a = np.vander(x, degree + 1, increasing=True)  # (n, degree+1)
    b, *_ = np.linalg.lstsq(a, y, rcond=None)
    res = y - a @ b
    dof = len(x) - degree - 1
    if dof > 0:
        s2 = float(res @ res) / dof
        se = np.sqrt(np.diag(s2 * np.linalg.inv(a.T @ a)))
    else:
        se = np.full(degree + 1, math.nan)
    return b, se, res


def fit_power_law(n: Sequence[float], loss: Sequence[float]) -> PowerLawFit:
    """Fit eq. 7.16 to ``(N, L)`` points: ``log L = a + b log N`` with ``α = −b`` and
    ``N_c = exp(a / α)``; ``alpha_se`` is the usual OLS standard error of the slope
    (``sqrt(s² / Σ (x − x̄)²)``, ``s²`` = residual sum of squares / (n − 2)). The curvature
    is the ``x²`` coefficient of a quadratic fit in centred ``x = log N`` (NaN below 4
    points)."""
    n_arr, l_arr = np.asarray(n, dtype=float), np.asarray(loss, dtype=float)
    if len(n_arr) < 3 or len(n_arr) != len(l_arr):
        raise ConfigError(f"a power-law fit needs at least 3 (N, L) pairs of equal length, got {len(n_arr)} "
                          f"and {len(l_arr)}.")
    if not (np.all(np.isfinite(n_arr) & (n_arr > 0)) and np.all(np.isfinite(l_arr) & (l_arr > 0))):
        raise ConfigError("a power-law fit needs finite, positive N and L (a diverged run has no loss to fit).")
    x, y = np.log(n_arr), np.log(l_arr)
    (a, b), (_, b_se), res = _ols(x, y, 1)
    alpha = -float(b)
    n_c = math.exp(a / alpha) if alpha != 0 else math.nan
    tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float(res @ res) / tot if tot > 0 else math.nan
    curv, curv_se = math.nan, math.nan
    if len(x) >= 4:
        c, c_se, _ = _ols(x - x.mean(), y, 2)
        curv, curv_se = float(c[2]), float(c_se[2])
    return PowerLawFit(alpha, float(b_se), n_c, r2, tuple(float(r) for r in res), curv, curv_se, len(x))


def t_critical(dof: int) -> float:
    """Two-sided 5 % critical value of Student's t with ``dof`` degrees of freedom."""
    return T975[dof - 1] if 1 <= dof <= len(T975) else 2.0


def judge_power_law(fit: PowerLawFit) -> tuple[bool, str]:
    """Does a power law describe the points? Yes when every log-residual is within
    :data:`MAX_LOG_RESIDUAL` and the quadratic term of a fit in ``log N`` is not significant
    (``|c| / se(c)`` below :func:`t_critical` of ``points − 3`` degrees of freedom; not
    testable, hence ignored, with fewer than 4 points)."""
    worst = max(abs(r) for r in fit.residuals)
    t_crit = t_critical(fit.points - 3)
    curved = (math.isfinite(fit.curvature_se) and fit.curvature_se > 0
              and abs(fit.curvature) > t_crit * fit.curvature_se)
    ok = worst <= MAX_LOG_RESIDUAL and not curved
    bend = ("concave in log-log: the loss falls more slowly at large N than the line says" if fit.curvature > 0
            else "convex in log-log: the loss falls faster at large N than the line says")
    if not math.isfinite(fit.curvature_se):
        curv_txt = "curvature not testable with so few points"
    else:
        curv_txt = (f"quadratic term {fit.curvature:+.5f} ± {fit.curvature_se:.5f}, |t| = "
                    f"{abs(fit.curvature) / fit.curvature_se:.2f} vs {t_crit} at {fit.points - 3} dof "
                    + (f"(significant: {bend})" if curved else "(not significant)"))
    return ok, f"largest |log residual| {worst:.4f} (limit {MAX_LOG_RESIDUAL}), {curv_txt}"


def local_alphas(n: Sequence[float], loss: Sequence[float]) -> list[float]:
    """Slopes ``−Δ log L / Δ log N`` between consecutive points (constant for a power law)."""
    x, y = np.log(np.asarray(n, dtype=float)), np.log(np.asarray(loss, dtype=float))
    return [float(-(y[i + 1] - y[i]) / (x[i + 1] - x[i])) for i in range(len(x) - 1)]


# ----------------------------------------------------------------------------------------
# likelihoods (exercise 7.5)


@torch.no_grad()
def sequence_log_likelihood(model: nn.Module, prefix: Sequence[int], ids: Sequence[int],
                            allowed: Sequence[int] | None = None) -> float:
    """``log p(ids | prefix) = Σ_t log p(x_t | prefix, x_{<t})`` (nats) of a causal LM
    (``model(idx, None, use_cache=False) -> (logits, _)``), by the chain rule (eq. 7.14).
    ``allowed``: renormalise each next-token distribution over these ids only."""
    x = torch.tensor([[*prefix, *ids]], dtype=torch.int64)
    logits, _ = model(x, None, use_cache=False)  # (1, P+T, V)
    logits = logits[0, len(prefix) - 1: -1].double()  # (T, V): the predictions of ids
    tgt = torch.tensor(list(ids), dtype=torch.int64)
    if allowed is not None:
        logits, tgt = _restrict(logits, tgt, allowed)
    return float(logits.log_softmax(-1).gather(1, tgt[:, None]).sum())


@torch.no_grad()
def pseudo_log_likelihood(model: nn.Module, ids: Sequence[int], mask_id: int, *, first: int = 1,
                          allowed: Sequence[int] | None = None) -> float:
    """``PLL(x) = Σ_i log p(x_i | x_{−i})`` (nats) of a masked LM (``model(tokens) -> logits
    (B, T, V)``): one copy of ``ids`` per position ``i ≥ first`` with ``x_i`` replaced by
    ``mask_id``, all in one batch; position 0 ([CLS]) is never scored."""
    x = torch.tensor(list(ids), dtype=torch.int64)
    pos = torch.arange(first, len(ids))  # (n,)
    batch = x.repeat(len(pos), 1)  # (n, T)
    batch[torch.arange(len(pos)), pos] = mask_id
    logits = model(batch)[torch.arange(len(pos)), pos].double()  # (n, V)
    tgt = x[pos]
    if allowed is not None:
        logits, tgt = _restrict(logits, tgt, allowed)
    return float(logits.log_softmax(-1).gather(1, tgt[:, None]).sum())


def _restrict(logits: torch.Tensor, tgt: torch.Tensor, allowed: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    allowed_t = torch.tensor(list(allowed), dtype=torch.int64)
    where = {int(a): k for k, a in enumerate(allowed)}
    return logits[:, allowed_t], torch.tensor([where[int(t)] for t in tgt], dtype=torch.int64)


def _randomise(model: nn.Module, seed: int, std: float) -> nn.Module:
    """Every matrix ~ N(0, std²): peaked conditionals (the default small init is nearly
    uniform, and uniform conditionals make exp(PLL) sum to 1 by accident)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return model.eval()


def enumerate_normalisation(vocab: int = 3, length: int = 3, *, seed: int = 0, d_model: int = 8,
                            std: float = 1.0) -> dict[str, float]:
    """Sum of ``exp(score(x))`` over all ``vocab^length`` sequences, exactly (float64), for a
    random untrained GPT (``score = log p(x)``, chain rule) and BERT (``score = PLL(x)``).

    The letters are ids ``0 … vocab−1``; the GPT also has a start token (id ``vocab``, the
    context of ``x_1``) and the BERT a [CLS] (``vocab``) and a [MASK] (``vocab+1``); both
    renormalise their predictions over the letters. The GPT's sum is 1 (up to rounding) for
    any weights; the BERT's is not 1 in general (it is 1 when its conditionals ignore the
    context: a product distribution, which random models approach more or less closely).
    """
    torch.manual_seed(seed)
    kw = {"d_model": d_model, "num_heads": 2, "num_layers": 1, "max_len": length + 2,
          "dropout": 0.0, "attn_dropout": 0.0}
    gpt = _randomise(MODELS.build("gpt", vocab_size=vocab + 1, **kw).double(), seed, std)
    bert = _randomise(MODELS.build("bert", vocab_size=vocab + 2, **kw).double(), seed + 1, std)
    letters = list(range(vocab))
    total_ar = total_pll = 0.0
    for seq in itertools.product(letters, repeat=length):
        total_ar += math.exp(sequence_log_likelihood(gpt, [vocab], seq, allowed=letters))
        total_pll += math.exp(pseudo_log_likelihood(bert, [vocab, *seq], vocab + 1, allowed=letters))
    return {"vocab": vocab, "length": length, "seed": seed, "sequences": vocab ** length,
            "sum_exp_log_p_gpt": total_ar, "sum_exp_pll_bert": total_pll}


def joint_pll_sum(joint: np.ndarray) -> float:
    """``Σ_x Π_i p(x_i | x_{−i})`` for the exact full conditionals of a joint distribution
    ``joint`` (a non-negative array of shape ``(V,) * T`` summing to 1): the PLL of a
    perfect masked LM, exponentiated and summed over all sequences. 1 for a product
    distribution; 2 for ``p(aa) = p(bb) = 1/2`` (every conditional is 1)."""
    p = np.asarray(joint, dtype=float)
    if p.min() < 0 or abs(p.sum() - 1) > 1e-9:
        raise ConfigError("joint_pll_sum needs a probability array (non-negative, summing to 1).")
    prod = np.ones_like(p)
    for axis in range(p.ndim):
        marg = p.sum(axis=axis, keepdims=True)  # p(x_{-i})
        prod *= np.divide(p, marg, out=np.zeros_like(p), where=marg > 0)  # p(x_i | x_{-i})
    return float(prod.sum())


def random_joint(vocab: int = 3, length: int = 3, *, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    """A correlated joint on ``vocab^length`` sequences: ``p(x) ∝ exp(scale · z_x)``, ``z ~ N(0, 1)``."""
    z = np.random.default_rng(seed).standard_normal((vocab,) * length)
    p = np.exp(scale * z)
    return p / p.sum()


# ----------------------------------------------------------------------------------------
# generation timing (exercise 6.4.4)


@torch.no_grad()
def timed_greedy(model: nn.Module, context: Sequence[int], length: int, *, cache: bool
                 ) -> tuple[list[int], list[float]]:
    """Greedy continuation of ``context`` by ``length`` tokens, batch 1, and the wall seconds
    of each step (step 0 includes reading the context).

    ``cache=True``: ``model(next (1, 1), state)`` continues from the carried state (a GPT's
    KV cache, an LSTM's ``(h, c)``), as ``method.generate`` does. ``cache=False`` (a GPT):
    every step reads the last ``max_len`` tokens again with ``use_cache=False``.
    """
    model.eval()
    seq = list(context)
    times: list[float] = []
    state = None
    window = getattr(model, "max_len", None)
    for t in range(length):
        t0 = time.perf_counter()
        if cache:
            inp = torch.tensor([seq if t == 0 else seq[-1:]], dtype=torch.int64)
            logits, state = model(inp, state)
        else:
            inp = torch.tensor([seq[-window:] if window else seq], dtype=torch.int64)
            logits, _ = model(inp, None, use_cache=False)
        seq.append(int(logits[0, -1].argmax()))
        times.append(time.perf_counter() - t0)
    return seq[len(context):], times


# ----------------------------------------------------------------------------------------
# budgets


@dataclass(frozen=True)
class Budget:
    epochs: int
    #: data / window / batch overrides shared by every run of the experiment
    overrides: tuple[str, ...]
    #: (d_model, num_layers, num_heads) of the scaling-law GPTs
    sizes: tuple[tuple[int, int, int], ...] = ()
    max_len: int = 128
    #: gpt-vs-lstm: the LSTM (embed, hidden) and the GPT (d_model, layers, heads)
    lstm: tuple[int, int] = (64, 256)
    gpt: tuple[int, int, int] = (96, 3, 4)
    gen_length: int = GEN_LENGTH
    #: mlm-vs-ar: texts scored, their longest length, and the shared dataset files
    texts: int = 200
    text_chars: int = 120
    topics: tuple[str, ...] = ()


#: scaling law, full: six GPTs, N from ~3e3 to ~8e5 (2.4 decades), 2 epochs of all the
#: English fortunes each (~4 M characters): about half an hour on 2 cores
SCALING_FULL = Budget(epochs=2, overrides=(), sizes=(
    (16, 1, 2), (32, 1, 2), (48, 2, 2), (64, 2, 4), (96, 3, 4), (128, 4, 4)))
SCALING_QUICK = Budget(epochs=1, max_len=32, overrides=(
    "method.dataset={files: [fortunes]}", "method.bptt=32", "data.batch_size=16", "method.eval_streams=8",
    "train.threads=1"),
    sizes=((8, 1, 2), (16, 1, 2), (24, 1, 2), (32, 2, 2), (48, 2, 4)))
#: GPT vs LSTM, full: the recipes' 3 epochs; the LSTM of the recipe (embed 64, hidden 256)
#: and a GPT of nearly its size (d_model 96, 3 blocks)
VERSUS_FULL = Budget(epochs=3, overrides=())
VERSUS_QUICK = Budget(epochs=1, max_len=64, lstm=(16, 32), gpt=(24, 1, 2), gen_length=96, overrides=(
    "method.dataset={files: [fortunes]}", "method.bptt=32", "data.batch_size=16", "method.eval_streams=8",
    "train.threads=1"))
#: MLM vs AR, full: the twelve topic files, d_model 128, 2 blocks each, 6 epochs
MLM_FULL = Budget(epochs=6, overrides=(), gpt=(128, 2, 4), texts=200, topics=(
    "computers", "drugs", "education", "food", "law", "literature",
    "men-women", "politics", "science", "songs-poems", "sports", "startrek"))
MLM_QUICK = Budget(epochs=1, max_len=64, gpt=(32, 1, 2), texts=16, text_chars=40,
                   topics=("fortunes", "riddles"), overrides=("train.threads=1",))


def _gpt_overrides(d: int, layers: int, heads: int, max_len: int) -> list[str]:
    return [f"model.d_model={d}", f"model.num_layers={layers}", f"model.num_heads={heads}",
            f"model.max_len={max_len}"]


def _load(run_dir: Path) -> Any:
    from ..train.loop import load_run

    method, _ = load_run(run_dir, device="cpu")
    return method


def _total(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------
# scaling-law


def _plot_scaling(df: pd.DataFrame, fit: PowerLawFit, ex_fit: PowerLawFit, path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    n = df["N"].to_numpy(float)
    grid = np.geomspace(n.min() / 1.5, n.max() * 1.5, 50)
    a1.loglog(n, df["test_loss"], "o", color="tab:blue", label="GPT, fortune-chars (test)")
    for _, r in df.iterrows():
        a1.annotate(f"{int(r['d_model'])}/{int(r['layers'])}", (r["N"], r["test_loss"]), textcoords="offset points",
                    xytext=(4, 4), fontsize=8)
    a1.loglog(grid, fit.predict(grid), "-", color="tab:blue", alpha=0.7,
              label=f"fit α_N = {fit.alpha:.3f} ± {fit.alpha_se:.3f}")
    a1.set_xlabel("non-embedding parameters N")
    a1.set_ylabel("test loss (nats / char)")
    a1.set_title("eq. 7.16 on our GPTs (same data, same tokens)")
    a1.grid(alpha=0.3, which="both")
    a1.legend(fontsize=8)
    g2 = np.geomspace(1e6, EXTRAPOLATE_N, 50)
    a2.loglog(EXERCISE_N, EXERCISE_L, "s", color="tab:orange", label="exercise 11.7")
    a2.loglog(g2, ex_fit.predict(g2), "--", color="tab:orange",
              label=f"fit α_N = {ex_fit.alpha:.4f} ± {ex_fit.alpha_se:.4f}")
    a2.loglog([EXTRAPOLATE_N], [ex_fit.predict(EXTRAPOLATE_N)], "*", color="tab:red", ms=12,
              label=f"extrapolated L(1e11) = {float(ex_fit.predict(EXTRAPOLATE_N)):.3f}")
    a2.set_xlabel("N")
    a2.set_ylabel("test loss")
    a2.set_title("exercise 11.7: fit and extrapolation")
    a2.grid(alpha=0.3, which="both")
    a2.legend(fontsize=8)
    return save_figure(fig, path)


@EXPERIMENTS.register("scaling-law", help="GPTs of 5-6 sizes on the same characters: test loss vs N, power-law "
                      "fit of eq. 7.16 and exercise 11.7 (course §7.10)")
def scaling_law(out: Path, quick: bool) -> ExperimentResult:
    b = SCALING_QUICK if quick else SCALING_FULL
    rows = []
    for d, layers, heads in b.sizes:
        res, wall = run_training(out, f"gpt-{d}x{layers}", [
            *b.overrides, f"train.epochs={b.epochs}", *_gpt_overrides(d, layers, heads, b.max_len)],
            recipe="fortune-char-gpt")
        s, final = res.summary, res.summary["final"]
        model = _load(res.run_dir).nets["model"]
        rows.append({
            "d_model": d, "layers": layers, "heads": heads,
            "N": model.num_parameters(non_embedding=True), "params": _total(model),
            "tokens": int(s["characters"]["train"]) * int(s["epochs_completed"]),
            "test_loss": round(finite(final.get("test_loss")), 4),
            "test_bpc": round(finite(final.get("test_bpc")), 4),
            "train_s": round(float(s["train_time_s"]), 1), "run_s": round(wall, 1),
        })
    df = pd.DataFrame(rows)
    fit = fit_power_law(df["N"], df["test_loss"])
    df["fit_loss"] = np.round(fit.predict(df["N"].to_numpy(float)), 4)
    df["log_residual"] = np.round(fit.residuals, 4)
    ok, why = judge_power_law(fit)
    ex = fit_power_law(EXERCISE_N, EXERCISE_L)
    ex_ok, ex_why = judge_power_law(ex)
    l11 = float(ex.predict(EXTRAPOLATE_N))
    # the extrapolation's uncertainty from the slope's standard error alone (intercept held)
    x11 = math.log(EXTRAPOLATE_N) - float(np.mean(np.log(EXERCISE_N)))
    l11_band = (l11 * math.exp(-2 * ex.alpha_se * x11), l11 * math.exp(2 * ex.alpha_se * x11))
    loc = local_alphas(df["N"], df["test_loss"])
    ex_loc = local_alphas(EXERCISE_N, EXERCISE_L)
    decades = math.log10(df["N"].max() / df["N"].min())
    same_tokens = df["tokens"].nunique() == 1
    z = (fit.alpha - COURSE_ALPHA) / fit.alpha_se if fit.alpha_se > 0 else math.nan
    figures = [_plot_scaling(df, fit, ex, out / "scaling_law.png")]
    notes = "\n".join([
        f"{len(df)} GPTs (recipe `fortune-char-gpt`, only width/depth changed), N spanning {decades:.2f} decades, "
        f"each trained on {int(df['tokens'].iloc[0])} tokens ({b.epochs} epoch(s)"
        + (", quick: the `fortunes` file only" if quick else ", all English fortunes") + ")"
        + ("" if same_tokens else " — WARNING: token counts differ between runs") + ".",
        f"Fit of eq. 7.16 on our points: α_N = {fit.alpha:.4f} ± {fit.alpha_se:.4f} (1 SE), "
        f"N_c = {fit.n_c:.3g}, R² = {fit.r2:.4f}; local slopes between consecutive sizes "
        f"{', '.join(f'{a:.3f}' for a in loc)}.",
        f"Does a power law describe our points? **{verdict(ok)}**: {why}.",
        f"Our α_N vs the course's {COURSE_ALPHA}: {z:+.1f} standard errors apart. This α_N belongs to this "
        "budget (fixed data and tokens, small models, characters not BPE tokens, no early stopping per size, "
        "not the compute-optimal regime where each N gets its own best data/compute); with a fixed budget the "
        "larger models are the least trained, which would flatten the curve at large N: here the local slope "
        + ("falls" if loc[-1] < loc[0] else "does not fall") + f" from the smallest pair to the largest "
        f"({loc[0]:.3f} → {loc[-1]:.3f}). Kaplan's 0.076 is for BPE-token models trained near convergence on "
        "~2e10 tokens, N from ~1e3 to ~1e9.",
        f"Exercise 11.7 (N = 1e6..1e9, L = 3.2, 2.8, 2.5, 2.3): α_N = {ex.alpha:.4f} ± {ex.alpha_se:.4f}, "
        f"N_c = {ex.n_c:.3g}, R² = {ex.r2:.4f}; local slopes {', '.join(f'{a:.4f}' for a in ex_loc)}; "
        f"power law: **{verdict(ex_ok)}** ({ex_why}).",
        f"Extrapolated L(1e11) = {l11:.3f} (slope ± 2 SE alone: {l11_band[0]:.3f} to {l11_band[1]:.3f}). "
        "Worth little: 4 points, 2 residual degrees of freedom (1 for the curvature test), two decades of "
        "extrapolation past the data, and the local slopes "
        + ("fall with N (the points bend towards an irreducible loss, L = E + (N_c/N)^α, which a pure power "
           "law cannot represent and which would put L(1e11) higher)" if ex_loc[-1] < ex_loc[0] else "do not fall")
        + "; the law also assumes the data and compute grow with N.",
    ])
    extra = {"alpha_N": round(fit.alpha, 5), "alpha_N_se": round(fit.alpha_se, 5), "N_c": fit.n_c,
             "r2": round(fit.r2, 5), "decades": round(decades, 3), "same_tokens": bool(same_tokens),
             "power_law": verdict(ok), "exercise_alpha_N": round(ex.alpha, 6),
             "exercise_alpha_N_se": round(ex.alpha_se, 6), "exercise_N_c": ex.n_c,
             "exercise_L_1e11": round(l11, 4), "exercise_power_law": verdict(ex_ok), "course_alpha_N": COURSE_ALPHA}
    return ExperimentResult(table=df, figures=figures, notes=notes, extra=extra)


# ----------------------------------------------------------------------------------------
# gpt-vs-lstm


def _plot_versus(df: pd.DataFrame, curves: dict[str, list[float]], path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, ts in curves.items():
        a1.plot(range(1, len(ts) + 1), np.cumsum(ts) * 1000, label=label)
    a1.set_xlabel("tokens generated")
    a1.set_ylabel("cumulative wall time (ms, 1 thread)")
    a1.set_title("greedy generation, batch 1")
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    x = np.arange(len(df))
    a2.bar(x, df["test_bpc"], color=["tab:blue", "tab:green"][: len(df)])
    a2.set_xticks(x, [f"{m}\n{p} params" for m, p in zip(df["model"], df["params"], strict=True)], fontsize=8)
    a2.set_ylabel("test bits per character")
    a2.set_title("fortune-chars, equal parameter budget")
    a2.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


@EXPERIMENTS.register("gpt-vs-lstm", help="GPT vs LSTM char LMs at equal size: bits/char, train time, "
                      "generation ms/token with and without KV cache (exercise 6.4)")
def gpt_vs_lstm(out: Path, quick: bool) -> ExperimentResult:
    b = VERSUS_QUICK if quick else VERSUS_FULL
    e, h = b.lstm
    d, layers, heads = b.gpt
    runs = {
        "LSTM": run_training(out, "lstm", [*b.overrides, f"train.epochs={b.epochs}", f"model.embed_dim={e}",
                                           f"model.hidden_size={h}", "model.num_layers=1"],
                             recipe="fortune-char-lstm"),
        "GPT": run_training(out, "gpt", [*b.overrides, f"train.epochs={b.epochs}",
                                         *_gpt_overrides(d, layers, heads, b.max_len)], recipe="fortune-char-gpt"),
    }
    rows, curves = [], {}
    for name, (res, wall) in runs.items():
        method = _load(res.run_dir)
        model = method.nets["model"]
        context = method.tokenizer.encode("\n%\n" + PROMPT)
        with num_threads(1):
            method.generate(PROMPT, n=1, length=8, temperature=0)  # warm-up
            t0 = time.perf_counter()
            ref = method.generate(PROMPT, n=1, length=b.gen_length, temperature=0)[0]
            gen_s = time.perf_counter() - t0
            toks, times = timed_greedy(model, context, b.gen_length, cache=True)
            curves[f"{name}" + (" (KV cache)" if name == "GPT" else "")] = times
            row = {"model": name, "params": _total(model),
                   "test_bpc": round(finite(res.summary["final"].get("test_bpc")), 4),
                   "train_s": round(float(res.summary["train_time_s"]), 1), "run_s": round(wall, 1),
                   "gen_ms_per_token": round(1000 * gen_s / b.gen_length, 3),
                   "gen_ms_per_token_cached_loop": round(1000 * sum(times) / b.gen_length, 3),
                   "gen_ms_per_token_no_cache": math.nan, "same_text_as_generate": False,
                   "no_cache_agrees_in_context": math.nan}
            row["same_text_as_generate"] = PROMPT + method.tokenizer.decode(toks) == ref
            if name == "GPT":
                toks_nc, times_nc = timed_greedy(model, context, b.gen_length, cache=False)
                curves["GPT (no cache)"] = times_nc
                row["gen_ms_per_token_no_cache"] = round(1000 * sum(times_nc) / b.gen_length, 3)
                fit_in = max(model.max_len - len(context), 0)
                row["no_cache_agrees_in_context"] = toks[:fit_in] == toks_nc[:fit_in]
                row["N_non_embedding"] = model.num_parameters(non_embedding=True)
            rows.append(row)
    df = pd.DataFrame(rows)
    by = df.set_index("model")
    ratio = float(by.loc["GPT", "params"] / by.loc["LSTM", "params"])
    speedup = float(by.loc["GPT", "gen_ms_per_token_no_cache"] / by.loc["GPT", "gen_ms_per_token_cached_loop"])
    better = "GPT" if by.loc["GPT", "test_bpc"] < by.loc["LSTM", "test_bpc"] else "LSTM"
    figures = [_plot_versus(df, curves, out / "gpt_vs_lstm.png")]
    gpt_ctx = b.max_len
    notes = "\n".join([
        f"Same data and epochs ({b.epochs}) for both"
        + (" (quick: the `fortunes` file only, tiny models)" if quick else "")
        + f"; parameters GPT/LSTM = {ratio:.3f}. Lower test bits/char: **{better}** "
        f"(the GPT sees at most {gpt_ctx} characters, on average half a window at evaluation; "
        "the LSTM carries its state through the stream).",
        f"Generation, greedy, {b.gen_length} new characters, batch 1, one thread: KV cache vs no cache "
        f"{speedup:.2f}x faster per token. Without the cache each step re-reads up to {gpt_ctx} tokens "
        "(attention O(t²) over the window, every projection again); with it, one token's projections and "
        "an O(t) attention row; the LSTM does one recurrent step, O(1) in t. When the cache is full the GPT "
        f"re-reads its last {gpt_ctx // 2} tokens (sliding context), visible as steps in the curve.",
        "Training is the other way round: the GPT processes a whole window in parallel (one matrix "
        "product per layer for all positions), the LSTM must step through time sequentially.",
        "Checks: `same_text_as_generate` — the timed cached loop gives the text of "
        "`method.generate(temperature=0)`; `no_cache_agrees_in_context` — with and without the cache the "
        "GPT picks the same tokens while the context fits.",
    ])
    extra = {"param_ratio_gpt_lstm": round(ratio, 4), "kv_cache_speedup": round(speedup, 3),
             "lower_bpc": better, "gen_length": b.gen_length}
    return ExperimentResult(table=df, figures=figures, notes=notes, extra=extra)


# ----------------------------------------------------------------------------------------
# mlm-vs-ar


def _eval_texts(bert_method: Any, gpt_method: Any, count: int, max_chars: int) -> list[str]:
    """Test fortunes of at most ``max_chars`` characters, in neither model's training text,
    whose characters both vocabularies hold."""
    gtrain, gtest = gpt_method.corpus.train, gpt_method.corpus.test
    gvocab, bvocab = gpt_method.tokenizer.stoi, bert_method.tokenizer.stoi
    out = []
    for t in bert_method.data.texts("test"):
        if (0 < len(t) <= max_chars and t not in gtrain and t in gtest
                and all(c in gvocab and c in bvocab for c in t)):
            out.append(t)
        if len(out) == count:
            break
    return out


@EXPERIMENTS.register("mlm-vs-ar", help="GPT exact log-likelihood vs BERT pseudo-log-likelihood on the same texts; "
                      "PLL is not normalised (exercise 7.5)")
def mlm_vs_ar(out: Path, quick: bool) -> ExperimentResult:
    b = MLM_QUICK if quick else MLM_FULL
    d, layers, heads = b.gpt
    topics = "[" + ", ".join(b.topics) + "]"
    gpt_res, gpt_wall = run_training(out, "gpt", [
        *b.overrides, f"train.epochs={b.epochs}", f"method.dataset={{files: {topics}}}",
        f"method.bptt={b.max_len}", *_gpt_overrides(d, layers, heads, b.max_len),
        *(("data.batch_size=16", "method.eval_streams=8") if quick else ())], recipe="fortune-char-gpt")
    bert_res, bert_wall = run_training(out, "bert", [
        *b.overrides, f"train.epochs={b.epochs}", f"method.dataset={{topics: {topics}}}",
        "method.tokenizer=char", f"method.max_len={b.max_len}", *_gpt_overrides(d, layers, heads, b.max_len),
        *(("data.batch_size=16",) if quick else ())], recipe="fortune-topics-bert")
    gm, bm = _load(gpt_res.run_dir), _load(bert_res.run_dir)
    gpt, bert = gm.nets["model"].eval(), bm.nets["model"].eval()
    texts = _eval_texts(bm, gm, b.texts, min(b.text_chars, b.max_len - 4))
    if not texts:
        raise ConfigError("no test text fits both models; raise the budget's text_chars.")
    prefix = gm.tokenizer.encode("\n%\n")
    ar = pll = 0.0
    chars = 0
    t0 = time.perf_counter()
    for t in texts:
        ar += sequence_log_likelihood(gpt, prefix, gm.tokenizer.encode(t))
    ar_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for t in texts:
        pll += pseudo_log_likelihood(bert, [bm.tokenizer.bos_id, *bm.tokenizer.encode(t)], bm.mask_id)
        chars += len(t)
    pll_s = time.perf_counter() - t0
    enum = [enumerate_normalisation(3, 3, seed=s) for s in range(ENUM_SEEDS)]
    joint_sum = joint_pll_sum(random_joint(3, 3, seed=0))
    rows = [
        {"model": "GPT", "objective": "autoregressive (7.14)", "score": "log p(x), chain rule",
         "params": _total(gpt), "texts": len(texts), "characters": chars,
         "bits_per_char": round(-ar / chars / LN2, 4), "score_s": round(ar_s, 2),
         "train_s": round(float(gpt_res.summary["train_time_s"]), 1),
         "sum_exp_score_3x3": round(float(np.mean([r["sum_exp_log_p_gpt"] for r in enum])), 6)},
        {"model": "BERT", "objective": "masked LM (7.13)", "score": "PLL(x), one mask per position",
         "params": _total(bert), "texts": len(texts), "characters": chars,
         "bits_per_char": round(-pll / chars / LN2, 4), "score_s": round(pll_s, 2),
         "train_s": round(float(bert_res.summary["train_time_s"]), 1),
         "sum_exp_score_3x3": round(float(np.mean([r["sum_exp_pll_bert"] for r in enum])), 6)},
    ]
    df = pd.DataFrame(rows)
    gpt_one = all(abs(r["sum_exp_log_p_gpt"] - 1) < 1e-9 for r in enum)
    bert_not_one = all(abs(r["sum_exp_pll_bert"] - 1) > NOT_ONE for r in enum)
    gpt_bpc, bert_bpc = float(df.loc[0, "bits_per_char"]), float(df.loc[1, "bits_per_char"])
    enum_txt = "; ".join(f"seed {r['seed']}: GPT {r['sum_exp_log_p_gpt']:.12f}, BERT {r['sum_exp_pll_bert']:.6f}"
                         for r in enum)
    notes = "\n".join([
        f"{len(texts)} test fortunes of at most {min(b.text_chars, b.max_len - 4)} characters ({chars} characters), "
        f"in neither training set; GPT and BERT both d_model {d}, {layers} block(s), {heads} heads, characters, "
        f"{b.epochs} epoch(s) on the fortunes of {', '.join(b.topics)} (the GPT reads the whole stream in "
        f"windows of {b.max_len}, the BERT each fortune cut to {b.max_len} tokens, 15 % of them predicted). "
        "Fine-tuning accuracy (exercise 7.5.3) is not measured (budget).",
        f"GPT: {gpt_bpc:.4f} bits/char = −log₂ p(x) / n exactly (chain rule, after the fortune separator). "
        f"BERT: {bert_bpc:.4f} bits/char of −PLL(x) / (n ln 2), "
        + ("lower" if bert_bpc < gpt_bpc else "higher") + " than the GPT's. The two numbers are not "
        "comparable: the PLL scores each character knowing both sides (a well-trained MLM's PLL is "
        "usually far below the AR loss for that reason), and it is not a log-probability.",
        "Why PLL ≠ log p(x): the chain rule log p(x) = Σ_t log p(x_t | x_<t) is an identity for any joint "
        "distribution, so minimising (7.14) is maximising log p(x), and its exp sums to 1 over all sequences "
        "of a length. The MLM objective (7.13) trains conditionals p(x_i | x_\\M); PLL = Σ_i log p(x_i | x_−i) "
        "multiplies full conditionals, which is not a factorisation of any joint: even with the exact "
        "conditionals of p, for p(aa) = p(bb) = 1/2 every conditional is 1, so exp PLL = 1 for both "
        "sequences and the 'distribution' sums to 2. A BERT's conditionals need not even be those of one "
        "joint. Nor does BERT give p(x_t | x_<t): there is nothing to sample left to right (exercise 7.5.1).",
        f"Exact enumeration, all 27 sequences of length 3 over 3 tokens, random untrained float64 models "
        f"(matrices ~ N(0, 1), 1 block, d_model 8): Σ exp log p(x) = 1 for the GPT **{verdict(gpt_one)}**, "
        f"|Σ exp PLL(x) − 1| > {NOT_ONE:g} for the BERT **{verdict(bert_not_one)}** ({enum_txt}). A random "
        "BERT whose predictions hardly depend on the context is close to a product distribution, whose "
        "PLL does sum to 1, hence sums near 1 for some seeds. With the exact conditionals of a correlated "
        f"joint (p(x) ∝ exp(2 z_x), z ~ N(0, 1), same 27 sequences) Σ Π_i p(x_i | x_−i) = {joint_sum:.4f}.",
    ])
    extra = {"enumeration": enum, "gpt_sums_to_one": verdict(gpt_one), "pll_not_normalised": verdict(bert_not_one),
             "exact_conditionals_pll_sum": round(joint_sum, 6),
             "gpt_bits_per_char": float(df.loc[0, "bits_per_char"]),
             "bert_pll_bits_per_char": float(df.loc[1, "bits_per_char"]),
             "train_wall_s": {"gpt": round(gpt_wall, 1), "bert": round(bert_wall, 1)}}
    figures = [_plot_mlm(df, enum, joint_sum, out / "mlm_vs_ar.png")]
    return ExperimentResult(table=df, figures=figures, notes=notes, extra=extra)


def _plot_mlm(df: pd.DataFrame, enum: list[dict[str, float]], joint_sum: float, path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.bar(df["model"], df["bits_per_char"], color=["tab:blue", "tab:purple"])
    for i, s in enumerate(df["score"]):
        a1.annotate(s, (i, df["bits_per_char"].iloc[i]), ha="center", va="bottom", fontsize=8)
    a1.set_ylabel("bits per character (same test texts)")
    a1.set_title("same test texts: −log p(x) vs −PLL(x)", fontsize=10)
    a1.grid(axis="y", alpha=0.3)
    x = np.arange(len(enum))
    a2.bar(x - 0.2, [r["sum_exp_log_p_gpt"] for r in enum], 0.4, label="GPT: Σ exp log p(x)")
    a2.bar(x + 0.2, [r["sum_exp_pll_bert"] for r in enum], 0.4, label="BERT: Σ exp PLL(x)")
    a2.axhline(1.0, color="gray", ls="--", lw=1)
    a2.bar([len(enum)], [joint_sum], 0.4, color="tab:red", label="exact conditionals of a joint: Σ exp PLL")
    a2.set_xticks([*x, len(enum)], [*(f"seed {r['seed']}" for r in enum), "correlated\njoint"])
    a2.set_title("Σ over all 27 sequences (length 3, 3 tokens)", fontsize=10)
    a2.legend(fontsize=8)
    return save_figure(fig, path)
