"""Memory of recurrent networks: gradient flow through time and the copy task (chapter 5).

Two experiments, on the course's layers of :mod:`profond.nn.rnn`:

``gradient-flow`` (exercise 5.2, bound eq. 5.7)
    For a vanilla RNN (tanh, eq. 5.1), an LSTM (5.9–5.14) and a GRU (5.16–5.19) with
    ``d_h = 64`` (quick: 32), ``W_h`` initialised orthogonal (gain 1) or random normal
    ``N(0, g²/d_h)`` (gains 1 and 0.5), fed with i.i.d. ``N(0, 1)`` inputs (``d_x = 16``), we
    measure the **spectral norm of the full Jacobian** ``‖∂h_T/∂h_k‖_2`` (eq. 5.6) for every
    lag ``T − k`` with ``T = 100`` (quick: 60), averaged over a few sequences. For the LSTM
    the Jacobian is taken with respect to the whole state ``s_k = (h_k, c_k)`` (a
    ``d_h × 2 d_h`` matrix): the cell path is the LSTM's gradient highway and a Jacobian in
    ``h_k`` alone, ``c_k`` held fixed, would miss it. Everything runs in float64 so that
    norms of 1e-40 do not underflow.

    The bound of Theorem 5.4, eq. (5.7): ``‖∂h_t/∂h_k‖ ≤ (σ_max γ)^{t−k}`` with
    ``σ_max = ‖W_hh‖_2`` and ``γ = max |tanh'| ≤ 1``, is overlaid for the RNN with
    ``γ = 1`` (``bound``), and also with the tighter, data-dependent
    ``∏_j σ_max · max_i tanh'(z_{j,i})`` of the same proof (``tanh'(z_j) = 1 − h_j²``);
    both are checked per sequence and per lag (``max_ratio_to_bound`` ≤ 1).

    The networks are at initialisation (exercise 5.2.1 asks for a trained RNN; the bound
    holds for any weights, and the init comparison of 5.2.4 is made at init).

``memory-length`` (exercise 5.4, the copy task)
    A sequence of ``k = 8`` symbols drawn from 8 categories, then ``T − 1`` blanks and a
    delimiter, then ``k`` blanks during which the network must output the ``k`` symbols
    (:func:`copy_task_batch`). RNN, LSTM and GRU (``nn.RNN/LSTM/GRU`` for speed — the same
    functions as ours, see :func:`profond.nn.rnn.copy_from_torch`; ``d_h = 64``, the RNN
    with an orthogonal ``W_hh``, the LSTM with a forget bias of 1) are trained with Adam
    (lr 1e-2, batch 64) and gradient clipping (eq. 5.8), at most 3000 steps, for the delays
    ``T ∈ {10, 50, 100}`` (quick: ``k = 3``, ``T ∈ {4, 8}``, ``d_h = 32``, 400 steps, plus a fixed-delay RNN at ``T = 4``). The
    loss covers the ``k`` recall steps (the blank targets elsewhere are trivial).

    **Training procedure: a curriculum on mixed delays** (:func:`train_copy`, after Zaremba &
    Sutskever, "Learning to Execute", 2014). Trained at a fixed ``T = 100`` from the start,
    the LSTM never leaves the ``ln 8`` plateau within the budget (the ``fixed`` row): as
    long as nothing is kept for 100 steps the read-out can only guess, and the gradient
    that would teach the storage must cross 100+ steps of an untrained recurrence. So each training batch draws its
    delays uniformly in ``[1, D]`` (one length per batch: leading blanks,
    :func:`copy_task_batch` with ``min_delay``), ``D`` starting at 1 and multiplied by 1.5
    each time a training batch is copied at 90 % per symbol (checked every 10 steps), until
    ``D = T``; it then stays at ``[1, T]``. At ``D = 1`` the task is "store 8 symbols" with
    short gradient paths — the slow part; once the storage is learnt, longer delays only
    ask the forget gate to stay near 1 for longer, and ``D`` climbs quickly. The procedure
    is legitimate: the models are scored on ``n_test = 500`` fresh sequences at exactly delay ``T`` (their own random generator),
    the early stop (99 %, every 25 steps) looks at
    a fresh batch at exactly ``T`` too, and every model — RNN included — gets the same
    procedure and budget. ``curriculum=False`` keeps the plain fixed-delay training; the
    full mode also runs it (``training = fixed``) for the RNN at ``T = 10`` and 50 (its
    best chance: mixing delays is harder for it; at ``T = 100`` it fails too and is left
    out for time) and for the LSTM at ``T = 100``.

    Reported: exact-copy success rate (all ``k`` symbols right), per-symbol accuracy
    against the chance level ``1/n_symbols`` (:func:`chance_level`), the step at which the
    training delay reached ``T``, training steps and seconds; and the first ``T`` at which
    the vanilla RNN's best accuracy over both procedures falls below 0.5
    (:func:`rnn_failure`, exercise 5.4.4). The trained LSTM that copies best (ties: the
    longest delay) is copied into our :class:`~profond.nn.rnn.Recurrent` and run with
    ``return_trace=True``; its forget, input and output gates (eqs. 5.9, 5.10, 5.13) over
    one sequence are drawn as heatmaps with the phases marked (exercise 5.4.2), and their
    means per phase — symbols shown / waiting / delimiter / recall — over 32 fresh
    sequences (:func:`gate_phase_means`, ``gate_phases.csv``) are turned into sentences in
    the notes (:func:`interpret_gates`, exercise 5.4.3).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from ..nn.rnn import Recurrent, copy_from_torch  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, to_markdown  # noqa: E402

KINDS = ("rnn", "lstm", "gru")
#: (scheme, gain) of W_hh compared in gradient-flow (exercise 5.2.4)
GF_INITS: tuple[tuple[str, float], ...] = (("orthogonal", 1.0), ("normal", 1.0), ("normal", 0.5))
#: lags at which the table reports ||dh_T/dh_k||
GF_LAGS = (1, 10, 50)




# ----------------------------------------------------------------------------------------
# 1. gradient-flow (exercise 5.2, eq. 5.7)


def jacobian_norms(layer: Recurrent, x: Tensor) -> tuple[np.ndarray, Tensor]:
    """Spectral norms ``‖∂h_T/∂s_k‖_2`` for every ``k`` and every sequence of ``x``.

    ``x`` is ``(T, n, d_x)`` (one column per sequence); ``s_k = h_k`` (RNN, GRU) or
    ``(h_k, c_k)`` (LSTM). One backward pass gives every full Jacobian: each sequence is
    repeated ``d_h`` times in the batch, copy ``j`` back-propagates the basis vector
    ``e_j`` from ``h_T``, so its gradient in ``s_k`` is row ``j`` of ``∂h_T/∂s_k`` (the
    copies do not interact). For the LSTM, ``h_k`` and ``c_k`` are independent variables
    of the map ``s_k ↦ h_T``. Returns ``norms`` of shape ``(n, T)`` with
    ``norms[:, lag]`` for ``lag = T − k = 0 … T − 1`` (lag 0 is the identity, norm 1) and
    the hidden states ``h`` ``(T, n, d_h)`` of the run (for the tight bound).
    """
    steps, n, _ = x.shape
    d = layer.hidden_size
    xb = x.repeat_interleave(d, dim=1)                                   # (T, n d, d_x)
    _, _, traces = layer(xb, return_trace=True)
    states = traces[0].states                                            # states[t] = s_{t+1}
    h_last = states[-1][0]
    eye = torch.eye(d, dtype=x.dtype).repeat(n, 1)                       # (n d, d)
    inputs = [s for st in states for s in st]
    grads = torch.autograd.grad(h_last, inputs, grad_outputs=eye, allow_unused=True)
    per = len(states[0])
    norms = np.empty((n, steps))
    for t in range(steps):
        parts = [g if g is not None else torch.zeros(n * d, d, dtype=x.dtype)
                 for g in grads[t * per:(t + 1) * per]]
        if per == 2:
            # autograd's gradient at c_k also flows through h_k = o_k ⊙ tanh(c_k) (5.14);
            # remove that path to get the partial derivative with h_k held fixed
            o, c = traces[0].values["o"][t].detach(), states[t][1].detach()
            parts[1] = parts[1] - parts[0] * (o * (1.0 - torch.tanh(c) ** 2))
        jac = torch.cat(parts, dim=1).reshape(n, d, per * d)             # (n, d_h, |s|)
        norms[:, steps - 1 - t] = torch.linalg.matrix_norm(jac, ord=2).detach().numpy()
    h = traces[0].values["h"].detach()[:, ::d]                           # (T, n, d_h)
    return norms, h


def rnn_bounds(w_hh: Tensor, h: Tensor) -> tuple[float, np.ndarray, np.ndarray]:
    """Eq. (5.7) for a tanh RNN: ``σ_max``, ``(σ_max γ)^lag`` with γ = 1, and the tight bound.

    The tight, per-sequence bound keeps the same proof (``‖∏ W^T D_j‖ ≤ ∏ ‖W‖ ‖D_j‖``) with
    the measured ``‖D_j‖ = max_i tanh'(z_{j,i}) = max_i (1 − h_{j,i}²)`` instead of 1:
    ``tight[:, lag] = ∏_{j = T−lag+1}^{T} σ_max · max_i (1 − h_{j,i}²)``. Shapes: ``h``
    ``(T, n, d_h)``; both bounds ``(n, T)`` indexed by lag (lag 0 → 1).
    """
    sigma = float(torch.linalg.matrix_norm(w_hh.detach(), ord=2))
    steps, n, _ = h.shape
    lags = np.arange(steps)
    bound = np.tile(sigma ** lags.astype(float), (n, 1))
    gamma = (1.0 - h.double() ** 2).amax(dim=-1).numpy()                 # (T, n): step j = t+1
    factors = (sigma * gamma[::-1]).T                                    # (n, T): lag order
    tight = np.concatenate([np.ones((n, 1)), np.cumprod(factors, axis=1)[:, :-1]], axis=1)
    return sigma, bound, tight


def decay_rate(mean_norms: np.ndarray, max_lag: int) -> float:
    """Per-step factor ``ρ`` of a fit ``‖∂h_T/∂h_{T−l}‖ ≈ C ρ^l`` over lags 1 … max_lag.

    Least squares on ``log norm`` (lags whose norm underflowed to 0 are dropped).
    """
    lags = np.arange(1, min(max_lag, len(mean_norms) - 1) + 1)
    y = mean_norms[lags]
    ok = y > 0
    if ok.sum() < 2:
        return math.nan
    slope = np.polyfit(lags[ok], np.log(y[ok]), 1)[0]
    return float(np.exp(slope))


def gradient_flow_table(hidden: int, steps: int, n_seq: int, d_x: int = 16, seed: int = 0
                        ) -> tuple[pd.DataFrame, dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Rows per (model, init) and the curves used by the figure (see the module docstring)."""
    rows, curves = [], {}
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(steps, n_seq, d_x, generator=gen, dtype=torch.float64)
    for kind in KINDS:
        for scheme, gain in GF_INITS:
            torch.manual_seed(seed)
            layer = Recurrent(kind, d_x, hidden, hh_init=scheme, hh_gain=gain).double()
            norms, h = jacobian_norms(layer, x)
            mean = norms.mean(axis=0)
            label = f"{scheme} g={gain:g}"
            row: dict[str, object] = {"model": kind, "init": label}
            w_h = layer.cell(0).stacked_weights()[2]
            d = hidden
            sig_gates = [float(torch.linalg.matrix_norm(w_h[i * d:(i + 1) * d].detach(), ord=2))
                         for i in range(w_h.shape[0] // d)]
            row["sigma_max_W_h"] = max(sig_gates)
            for lag in GF_LAGS:
                row[f"norm_lag{lag}"] = float(mean[lag]) if lag < steps else math.nan
            row["rate_per_step"] = decay_rate(mean, steps - 1)
            curve = {"mean": mean}
            if kind == "rnn":
                sigma, bound, tight = rnn_bounds(layer.cell(0).W_hh, h)
                for lag in GF_LAGS:
                    row[f"bound_lag{lag}"] = float(sigma**lag) if lag < steps else math.nan
                row["bound_rate"] = sigma
                row["max_ratio_to_bound"] = float((norms[:, 1:] / bound[:, 1:]).max())
                row["max_ratio_to_tight_bound"] = float((norms[:, 1:] / tight[:, 1:]).max())
                curve.update(bound=bound[0], tight=tight.mean(axis=0))
            else:
                for lag in GF_LAGS:
                    row[f"bound_lag{lag}"] = math.nan
                row.update(bound_rate=math.nan, max_ratio_to_bound=math.nan,
                           max_ratio_to_tight_bound=math.nan)
            rows.append(row)
            curves[(kind, label)] = curve
    return pd.DataFrame(rows), curves


@EXPERIMENTS.register("gradient-flow",
                      help="||dh_T/dh_k|| vs T-k for RNN/LSTM/GRU, orthogonal vs normal W_hh, "
                           "with the bound eq. 5.7 (course ex. 5.2)")
def gradient_flow(out: Path, quick: bool) -> ExperimentResult:
    hidden, steps, n_seq = (32, 60, 3) if quick else (64, 100, 8)
    t0 = time.perf_counter()
    with num_threads(1):
        table, curves = gradient_flow_table(hidden, steps, n_seq)
    seconds = time.perf_counter() - t0

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    colors = dict(zip([f"{s} g={g:g}" for s, g in GF_INITS], ["tab:blue", "tab:red", "tab:green"],
                      strict=True))
    lags = np.arange(steps)
    for ax, kind in zip(axes, KINDS, strict=True):
        for label, color in colors.items():
            c = curves[(kind, label)]
            ax.plot(lags[1:], c["mean"][1:], color=color, lw=2, label=f"{label} (measured)")
            if "bound" in c:
                ax.plot(lags[1:], c["bound"][1:], color=color, ls="--", lw=1,
                        label=f"{label}: (σ_max·1)^(T−k), eq. 5.7")
                ax.plot(lags[1:], c["tight"][1:], color=color, ls=":", lw=1,
                        label=f"{label}: ∏ σ_max·max tanh' (tight)")
        ax.set_yscale("log")
        ax.set_ylim(1e-30, 1e8)
        ax.set_xlabel("lag T − k")
        state = "(h_k, c_k)" if kind == "lstm" else "h_k"
        ax.set_title(f"{kind.upper()}: ‖∂h_T/∂{state}‖₂, T={steps}, d_h={hidden}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, loc="lower left")
    axes[0].set_ylabel("spectral norm (mean over sequences)")
    fig_path = save_figure(fig, out / "gradient_flow.png")

    rnn = table[table["model"] == "rnn"]
    worst = float(rnn["max_ratio_to_bound"].max())
    notes = (f"Spectral norm of the full Jacobian, mean over {n_seq} sequences of N(0,1) inputs "
             f"(d_x=16, float64); LSTM: Jacobian w.r.t. (h_k, c_k). `rate_per_step` = exp(slope) "
             f"of a least-squares fit of log-norm on lags 1..{steps - 1}. RNN bound eq. 5.7 with "
             f"γ=1: `bound_lag*` = σ_max^lag; measured/bound ≤ {worst:.3g} over every sequence "
             f"and lag (must be ≤ 1). {seconds:.1f} s.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"max_ratio_to_bound": worst,
                                   "max_ratio_to_tight_bound":
                                       float(rnn["max_ratio_to_tight_bound"].max()),
                                   "T": steps, "hidden": hidden, "n_seq": n_seq,
                                   "compute_s": round(seconds, 2)})


# ----------------------------------------------------------------------------------------
# 2. memory-length: the copy task (exercise 5.4)

#: phases of one copy-task sequence, for the gate averages (exercise 5.4.3)
PHASES = ("symbols", "waiting", "delimiter", "recall")
#: LSTM gates traced in the heatmap: forget (5.9), input (5.10), output (5.13)
GATES = ("f", "i", "o")
#: full mode also trains these (model, delay) with the plain fixed-delay procedure
FIXED_BASELINE: tuple[tuple[str, int], ...] = (("rnn", 10), ("rnn", 50), ("lstm", 100))
#: per-symbol accuracy below which a model is said to fail the copy task
FAIL_BELOW = 0.5


def copy_task_batch(batch: int, n_symbols: int, k: int, delay: int,
                    generator: torch.Generator | None = None, *, min_delay: int | None = None,
                    return_delays: bool = False) -> tuple[Tensor, ...]:
    """One batch of the copy task (exercise 5.4): ``(inputs, targets)``, both ``(L, B)`` ints.

    ``L = k + delay + k``. Tokens: symbols ``0 … n_symbols − 1``, blank ``n_symbols``,
    delimiter ``n_symbols + 1``. Inputs: the ``k`` symbols, ``delay − 1`` blanks, the
    delimiter (step ``k + delay − 1``: "now copy"), then ``k`` blanks. Targets: blank
    everywhere except the last ``k`` steps, which hold the ``k`` symbols in order — the
    network must keep them for ``delay`` steps after the last one was shown.

    Mixed delays (``min_delay < delay``, used for training only): sequence ``b`` draws its
    own delay ``d_b`` uniformly in ``[min_delay, delay]`` and starts with ``delay − d_b``
    leading blanks, so that the whole batch keeps the length ``L`` and the delimiter at step
    ``k + delay − 1``; its symbols sit at steps ``delay − d_b … delay − d_b + k − 1``. With
    ``min_delay = delay`` (the default) this is the fixed layout above, ``d_b = delay``.
    ``return_delays=True`` appends the ``(B,)`` tensor of the ``d_b``.
    """
    min_delay = delay if min_delay is None else min_delay
    if not 1 <= min_delay <= delay or k < 1 or n_symbols < 2:
        raise ValueError("need 1 <= min_delay <= delay, k >= 1, n_symbols >= 2")
    blank, delim = n_symbols, n_symbols + 1
    length = 2 * k + delay
    if min_delay < delay:
        delays = torch.randint(min_delay, delay + 1, (batch,), generator=generator)
    else:
        delays = torch.full((batch,), delay, dtype=torch.long)
    seq = torch.randint(0, n_symbols, (k, batch), generator=generator)
    inputs = torch.full((length, batch), blank, dtype=torch.long)
    targets = torch.full((length, batch), blank, dtype=torch.long)
    rows = (delay - delays)[None, :] + torch.arange(k)[:, None]          # (k, B) symbol steps
    inputs.scatter_(0, rows, seq)
    inputs[k + delay - 1] = delim
    targets[k + delay:] = seq
    return (inputs, targets, delays) if return_delays else (inputs, targets)


def chance_level(n_symbols: int, k: int) -> tuple[float, float]:
    """Scores of a network that guesses: per-symbol accuracy ``1/n_symbols``, exact copy
    ``(1/n_symbols)^k`` (symbols are uniform and independent, so nothing beats guessing
    without memory)."""
    p = 1.0 / n_symbols
    return p, p**k


class CopyModel(nn.Module):
    """One-hot tokens → ``nn.RNN``/``nn.LSTM``/``nn.GRU`` → linear read-out (eq. 5.2).

    The RNN gets an orthogonal ``W_hh`` (its best chance, exercise 5.2.4), the LSTM a forget
    bias of 1; everything else is PyTorch's default init.
    """

    def __init__(self, kind: str, n_symbols: int, hidden: int) -> None:
        super().__init__()
        self.n_tokens = n_symbols + 2
        cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = cls(self.n_tokens, hidden)
        if kind == "rnn":  # orthogonal W_hh: the RNN's best chance (exercise 5.2.4)
            nn.init.orthogonal_(self.rnn.weight_hh_l0)
        if kind == "lstm":  # forget-gate bias 1 (Jozefowicz et al. 2015): f_t ≈ 0.73 at start
            with torch.no_grad():
                self.rnn.bias_ih_l0[hidden:2 * hidden].fill_(1.0)
                self.rnn.bias_hh_l0[hidden:2 * hidden].zero_()
        self.head = nn.Linear(hidden, n_symbols + 1)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.rnn(F.one_hot(tokens, self.n_tokens).float())
        return self.head(out)


def copy_scores(model: CopyModel, inputs: Tensor, targets: Tensor, k: int) -> tuple[float, float]:
    """(per-symbol accuracy, exact-copy rate) on the ``k`` recall steps."""
    with torch.no_grad():
        pred = model(inputs)[-k:].argmax(-1)
    ok = pred == targets[-k:]
    return float(ok.float().mean()), float(ok.all(dim=0).float().mean())


def next_curriculum_delay(current: int, delay: int) -> int:
    """The curriculum's next training delay: ×1.5 (at least +1), capped at ``delay``
    (1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 72, 100 for ``delay = 100``)."""
    return min(delay, max(current + 1, round(current * 1.5)))


def train_copy(kind: str, delay: int, *, n_symbols: int = 8, k: int = 8, hidden: int = 64,
               steps: int = 3000, batch: int = 64, lr: float = 1e-2, seed: int = 0,
               n_test: int = 500, target_acc: float = 0.99, curriculum: bool = True,
               raise_at: float = 0.9) -> tuple[CopyModel, dict[str, Any]]:
    """Train one model on the copy task at delay ``delay``; test it at exactly that delay.

    Adam (``lr``), gradient clipping at norm 1 (eq. 5.8), fresh batches every step, the
    loss on the ``k`` recall steps. ``curriculum=True`` (the default, see the module
    docstring): the training batches mix the delays uniformly in ``[1, D]``
    (:func:`copy_task_batch` with ``min_delay=1``), ``D`` starting at 1 and raised by
    :func:`next_curriculum_delay` whenever the training batch is copied at ``raise_at`` per
    symbol (checked every 10 steps), up to ``delay``; then it stays at ``[1, delay]``.
    ``curriculum=False``: every batch at exactly ``delay`` (the plain procedure).
    Early stop, checked every 25 steps once ``D = delay``: a fresh batch at exactly
    ``delay`` is copied at ``target_acc`` per symbol. The test uses ``n_test`` other fresh
    sequences at exactly ``delay`` (their own generator). Returns the model and its row.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = CopyModel(kind, n_symbols, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    train_delay = 1 if curriculum else delay
    reached = 0 if train_delay == delay else None     # step at which training reached delay
    done = steps
    loss = torch.tensor(math.nan)
    for step in range(1, steps + 1):
        x, y = copy_task_batch(batch, n_symbols, k, train_delay, gen,
                               min_delay=1 if curriculum else None)
        logits = model(x)[-k:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[-k:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if train_delay < delay:
            if step % 10 == 0 and (logits.argmax(-1) == y[-k:]).float().mean() >= raise_at:
                train_delay = next_curriculum_delay(train_delay, delay)
                reached = step if train_delay == delay else None
        elif step % 25 == 0:
            if curriculum:  # the mixed batch is not the task: check a fresh one at delay T
                acc, _ = copy_scores(model, *copy_task_batch(batch, n_symbols, k, delay, gen), k)
            else:
                acc = float((logits.argmax(-1) == y[-k:]).float().mean())
            if acc >= target_acc:
                done = step
                break
    train_s = time.perf_counter() - t0
    test_gen = torch.Generator().manual_seed(10_000 + seed)
    acc, exact = copy_scores(model, *copy_task_batch(n_test, n_symbols, k, delay, test_gen), k)
    return model, {"model": kind, "delay_T": delay,
                   "training": "curriculum" if curriculum else "fixed",
                   "symbol_accuracy": acc, "exact_copy_rate": exact,
                   "final_loss": float(loss.detach()), "max_train_delay": train_delay,
                   "step_reached_T": reached,
                   "steps": done, "train_s": round(train_s, 2)}


def copy_benchmark(delay: int = 100, kinds: tuple[str, ...] = ("rnn", "lstm"), *, seed: int = 0,
                   threads: int = 1, **kwargs: Any) -> list[dict[str, Any]]:
    """Rows of :func:`train_copy` (the experiment's full-mode defaults: k = 8 symbols of 8,
    d_h = 64, batch 64, Adam 1e-2, curriculum, ≤ 3000 steps) for each of ``kinds`` at
    ``delay``, on ``threads`` torch threads; ``kwargs`` go to :func:`train_copy`. Each row
    also carries the chance levels."""
    rows = []
    with num_threads(threads):
        for kind in kinds:
            _, row = train_copy(kind, delay, seed=seed, **kwargs)
            sym, exact = chance_level(int(kwargs.get("n_symbols", 8)), int(kwargs.get("k", 8)))
            row.update(chance_symbol=sym, chance_exact=exact)
            rows.append(row)
    return rows


def lstm_gate_trace(model: CopyModel, inputs: Tensor, seq: int | None = 0
                    ) -> tuple[dict[str, np.ndarray], float]:
    """Copy the trained ``nn.LSTM`` into our :class:`Recurrent` and trace its gates.

    Returns ``{gate: (L, d_h)}`` for ``i``, ``f``, ``o`` of sequence ``seq`` of ``inputs``
    (``seq=None``: every sequence, ``(L, B, d_h)``), and the largest gap between our
    outputs and ``nn.LSTM``'s (a check).
    """
    ours = Recurrent("lstm", model.n_tokens, model.rnn.hidden_size)
    copy_from_torch(ours, model.rnn)
    x = F.one_hot(inputs, model.n_tokens).float()
    with torch.no_grad():
        out, _, traces = ours(x, return_trace=True)
        ref, _ = model.rnn(x)
    gap = float((out - ref).abs().max())
    pick = (lambda v: v) if seq is None else (lambda v: v[:, seq])
    return {g: pick(traces[0].values[g]).numpy() for g in GATES}, gap


def phase_slices(k: int, delay: int) -> dict[str, slice]:
    """Time steps of each phase of a fixed-delay sequence (:func:`copy_task_batch`)."""
    return {"symbols": slice(0, k), "waiting": slice(k, k + delay - 1),
            "delimiter": slice(k + delay - 1, k + delay), "recall": slice(k + delay, 2 * k + delay)}


def gate_phase_means(gates: dict[str, np.ndarray], k: int, delay: int) -> pd.DataFrame:
    """Mean of each gate over the steps (and units, and sequences) of each phase.

    ``gates[g]`` is ``(L, …)`` with time first. Returns a frame indexed by gate with one
    column per phase of :data:`PHASES` (NaN for an empty phase: ``waiting`` when
    ``delay = 1``), plus ``waiting_min``, the smallest per-step mean during the waiting.
    """
    rows = {}
    for g, v in gates.items():
        v = np.asarray(v, dtype=float)
        per_step = v.reshape(v.shape[0], -1).mean(axis=1)
        row = {p: float(per_step[s].mean()) if s.stop > s.start else math.nan
               for p, s in phase_slices(k, delay).items()}
        wait = per_step[phase_slices(k, delay)["waiting"]]
        row["waiting_min"] = float(wait.min()) if wait.size else math.nan
        rows[g] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def rnn_failure(table: pd.DataFrame) -> str:
    """Exercise 5.4.4 read off the table: the vanilla RNN's best per-symbol accuracy over
    the training procedures at each delay, and the first delay where it is below
    :data:`FAIL_BELOW`."""
    rnn = table[table["model"] == "rnn"].groupby("delay_T")["symbol_accuracy"].max().sort_index()
    if rnn.empty:
        return ""
    best = ", ".join(f"T={d}: {a:.2f}" for d, a in rnn.items())
    failed = [d for d, a in rnn.items() if a < FAIL_BELOW]
    verdict = (f"it fails (< {FAIL_BELOW} per symbol) from T = {failed[0]} on"
               if failed else f"it does not fail (≥ {FAIL_BELOW}) at any delay tried")
    return f"Vanilla RNN, best per-symbol accuracy over the procedures tried: {best} — {verdict}."


def interpret_gates(ph: pd.DataFrame) -> str:
    """One or two sentences read off the measured phase means (exercise 5.4.3)."""
    f, i, o = ph.loc["f"], ph.loc["i"], ph.loc["o"]
    writes = ("the LSTM writes when the symbols arrive and keeps its input gate lower during the "
              "delay" if i["symbols"] > i["waiting"] + 0.05 else
              "no clear write window shows in the input gate's mean")
    keeps = ("the forget gate stays near 1 through the delay (the cell is kept: c_t ≈ c_{t−1})"
             if f["waiting_min"] >= 0.8 else
             "the forget gate is not uniformly near 1 during the delay (part of the cell is "
             "rewritten: the memory sits in the units whose f stays high)")
    if f["symbols"] < f["waiting"] - 0.05:
        keeps += f"; it is lower, {f['symbols']:.2f}, while the symbols are written"
    change = f["recall"] - f["waiting"]
    reads = ("it drops at recall (the cell is erased while the symbols are read out)"
             if change < -0.05 else "it does not drop at recall")
    out = ("the output gate opens more at recall than while waiting"
           if o["recall"] > o["waiting"] + 0.05 else
           "the output gate is not markedly higher at recall")
    return (f"Gates (means over units, 32 fresh sequences): input gate {i['symbols']:.2f} while "
            f"the symbols are shown vs {i['waiting']:.2f} while waiting — {writes}; forget gate "
            f"{f['waiting']:.2f} on average during the delay (lowest step {f['waiting_min']:.2f}), "
            f"{f['recall']:.2f} during recall — {keeps}, and {reads}; output gate "
            f"{o['waiting']:.2f} waiting vs {o['recall']:.2f} at recall — {out}.")


@EXPERIMENTS.register("memory-length",
                      help="copy task: RNN vs LSTM vs GRU for delays T, LSTM gate heatmaps "
                           "(course ex. 5.4)")
def memory_length(out: Path, quick: bool) -> ExperimentResult:
    n_symbols = 8
    if quick:
        k, delays, hidden, steps, batch, lr = 3, (4, 8), 32, 400, 32, 1e-2
        baseline: tuple[tuple[str, int], ...] = (("rnn", 4),)
    else:
        k, delays, hidden, steps, batch, lr = 8, (10, 50, 100), 64, 3000, 64, 1e-2
        baseline = FIXED_BASELINE
    chance_sym, chance_exact = chance_level(n_symbols, k)
    rows, lstm_by_delay = [], {}
    runs = [(kind, delay, True) for delay in delays for kind in KINDS]
    runs += [(kind, delay, False) for kind, delay in baseline]
    t0 = time.perf_counter()
    with num_threads(1):
        for kind, delay, curriculum in runs:
            model, row = train_copy(kind, delay, n_symbols=n_symbols, k=k, hidden=hidden,
                                    steps=steps, batch=batch, lr=lr, curriculum=curriculum)
            row.update(chance_symbol=chance_sym, chance_exact=chance_exact)
            rows.append(row)
            if kind == "lstm" and curriculum:
                lstm_by_delay[delay] = model
        # heatmap of the LSTM that copies best (ties: the longest delay)
        lstm_acc = {r["delay_T"]: r["symbol_accuracy"] for r in rows
                    if r["model"] == "lstm" and r["training"] == "curriculum"}
        delay = max(delays, key=lambda d: (round(lstm_acc[d], 2), d))
        x, _ = copy_task_batch(32, n_symbols, k, delay, torch.Generator().manual_seed(7))
        gates_all, gap = lstm_gate_trace(lstm_by_delay[delay], x, seq=None)
    seconds = time.perf_counter() - t0
    table = pd.DataFrame(rows)
    gates = {g: v[:, 0] for g, v in gates_all.items()}
    phases = gate_phase_means(gates_all, k, delay)
    phases.to_csv(out / "gate_phases.csv", index_label="gate")

    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    names = {"f": "forget gate f_t (5.9)", "i": "input gate i_t (5.10)", "o": "output gate o_t (5.13)"}
    for ax, g in zip(axes, GATES, strict=True):
        im = ax.imshow(gates[g].T, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       interpolation="nearest")
        for b in (k - 0.5, k + delay - 1.5, k + delay - 0.5):
            ax.axvline(b, color="white", lw=1, ls="--")
        means = ", ".join(f"{p} {phases.loc[g, p]:.2f}" for p in PHASES)
        ax.set_ylabel("unit")
        ax.set_title(f"{names[g]} — mean by phase: {means}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
    axes[-1].set_xlabel(f"time step: {k} symbols | {delay - 1} blanks (waiting) | delimiter | "
                        f"{k} recall steps")
    row = table[(table["model"] == "lstm") & (table["delay_T"] == delay)
                & (table["training"] == "curriculum")].iloc[0]
    fig.suptitle(f"trained LSTM on the copy task, T={delay}: exact-copy rate "
                 f"{row['exact_copy_rate']:.2f}, symbol accuracy {row['symbol_accuracy']:.2f}")
    heat = save_figure(fig, out / "lstm_gates.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    colors = dict(zip(KINDS, ("tab:blue", "tab:orange", "tab:green"), strict=True))
    for kind in KINDS:
        for training, style in (("curriculum", "o-"), ("fixed", "x--")):
            sub = table[(table["model"] == kind) & (table["training"] == training)]
            if len(sub):
                ax.plot(sub["delay_T"], sub["symbol_accuracy"], style, color=colors[kind],
                        ms=7 if training == "curriculum" else 10,
                        label=f"{kind.upper()} ({training})")
    ax.axhline(chance_sym, color="gray", ls=":", label=f"chance 1/{n_symbols}")
    ax.set_xlabel("test delay T")
    ax.set_ylabel("per-symbol accuracy (recall steps)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"copy task, k={k} symbols, ≤{steps} steps")
    ax.legend(fontsize=8)
    acc_fig = save_figure(fig, out / "copy_accuracy.png")

    phase_md = to_markdown(phases.reset_index(names="gate").round(3))
    notes = (f"Copy task (ex. 5.4): k={k} symbols of {n_symbols}, delay T, d_h={hidden}, Adam "
             f"lr={lr}, batch {batch}, clip 1.0, at most {steps} steps. Training "
             f"`curriculum`: batches mix delays uniformly in [1, D], D raised ×1.5 from 1 to T "
             f"whenever a batch is copied at 90% per symbol (every 10 steps); stop once a fresh "
             f"batch at delay T is copied at 99% (every 25 steps). `fixed`: every batch at "
             f"delay T. Scores on 500 fresh sequences at exactly delay T, recall steps only. "
             f"Chance: {chance_sym:.3f} per symbol, {chance_exact:.2g} exact. Our LSTM vs "
             f"nn.LSTM output gap {gap:.1e}. {seconds:.1f} s in all.\n\n"
             f"LSTM gate means by phase (T={delay}, gate_phases.csv):\n\n{phase_md}\n\n"
             f"{interpret_gates(phases)} {rnn_failure(table)}")
    return ExperimentResult(table=table, figures=[heat, acc_fig], notes=notes,
                            extra={"trace_gap": gap, "k": k, "n_symbols": n_symbols,
                                   "gate_delay_T": delay,
                                   "gate_phase_means": {g: {c: round(float(v), 4)
                                                            for c, v in r.items()}
                                                        for g, r in phases.iterrows()},
                                   "compute_s": round(seconds, 2)})
