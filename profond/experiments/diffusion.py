"""Diffusion models and flow matching (course chapter 10): four experiments of issue 17.

Every trained model goes through the one loop (:func:`profond.train.train`, method
``diffusion``, model ``diffusion-unet``); samples come from the method's samplers.

``diffusion-process`` -- exercise 10.4 and fig. 10.1 (course §10.1, eqs. 10.7, 10.17, 10.18),
no training: ᾱ_t and β_t against t for the linear (eq. 10.17), cosine (eq. 10.18) and
sigmoid schedules at T = 1000 and the linear one at T = 200; the forward process
``q(x_t | x_0)`` (eq. 10.8) applied to one test image at t = 0, 100, 250, 500, 750, 999
(one row per schedule, the same ε in every row); a table with, per schedule, the first t at
which SNR(t) = ᾱ_t / (1 − ᾱ_t) falls below 1, ᾱ_T and the mean β. The *reverse* trajectory
of a trained run is ``profond sample RUN --trajectory``.

``ddpm-vs-ddim`` -- exercise 10.6 (remark 10.7, eqs. 10.20, 10.21; flow matching §10.10): one
ε-prediction model, sampled for S ∈ {10, 20, 50, 100, T} steps with DDPM (ancestral, on the
respaced schedule for S < T), DDIM η = 0 and DDIM η = 1; one flow-matching model (same net,
same budget) integrated with Euler (NFE = S) and Heun (NFE = 2S − 1, S chosen so that NFE
matches). Columns: sampler, S, NFE, the Fréchet distance of the samples to the test set,
seconds per sample; a row "noise" scores uniform noise images for scale. Figures: distance
vs NFE (log x) and a DDIM η = 0 interpolation (slerp between two x_T: exercise 10.6.3).

``guidance-scale`` -- exercise 10.5 (def. 10.8, eq. 10.22): a class-conditional model
trained with 10 % null-class dropout, sampled (DDIM η = 0) with w ∈ {0, 1, 3, 7}: Fréchet
distance, class accuracy of the samples (a classifier's argmax against the requested label),
normalised entropy of the predicted-class histogram, mean pairwise distance within a class
(diversity), and a grid per w (one class per row).

``diffusion-ablation`` -- table 10.1 and remark 10.9 (§10.9): Base (T = 1000, linear),
Réduit (T = 200), Cosinus, Petit réseau, Grand réseau (cosine, as in the course's table) and
DDIM S = 50 on the cosine model, the measured distance beside the course's FID (MNIST,
Inception features: only the ranking compares, Spearman ρ), and the two claims of remark 10.9.

Metrics. The full modes use the FID on the shipped Fashion-MNIST feature net
(:mod:`profond.metrics.generative`; its own scale, not an Inception FID) and its class
probabilities. The quick modes train on scikit-learn's 8x8 digits, where that net does not
apply: the distance there is ``fd_pca16``, the Fréchet distance between Gaussians fitted to
the 16 leading PCA components of the pixels (PCA fitted on the training digits), and the
classifier is a logistic regression on the 64 pixels of the training digits. Column names
say which one a table holds.

Budgets. ``--quick`` (CI): digits, a U-Net of base 16 (mults [1, 2], one residual block, no
attention, 4 GroupNorm groups), T = 100, a few epochs, one thread, 100-200 samples: each
experiment takes well under a minute; the numbers show the pipeline, not the course's
values. The full modes (not run in CI; the times are estimates for 2 idle CPU cores, from
the measured cost of a training step and of a forward pass of the base-32 U-Net):

* ``diffusion-process``: seconds.
* ``ddpm-vs-ddim``: recipe ``fmnist-ddpm`` for 2 epochs, the same net with
  ``process=flow`` for 2 epochs, 500 samples per sampler setting vs 10,000 test images, the
  flow samplers up to NFE 100: about 5 h.
* ``guidance-scale``: recipe ``fmnist-ddpm-cfg`` (cosine, T = 1000) for 2 epochs, DDIM 50,
  1,000 samples per w (100 per class): about 1.5 h.
* ``diffusion-ablation``: five trainings of 2 epochs (base 32 / 16 / 64; the "Petit" row is
  base 16, the "Grand" row base 64 instead of the course's 256: CPU budget), 500 samples per
  row, DDPM with all T steps except the DDIM row: about 9 h.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, run_training, verdict  # noqa: E402
from .generative import _fid_reference, _load  # noqa: E402


def _progress(name: str, msg: str) -> None:
    print(f"{name}: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# budgets and training


@dataclass(frozen=True)
class Budget:
    """What one mode trains and samples (every run of the mode alike)."""

    quick: bool
    timesteps: int       # T of the base model
    epochs: int
    base: int            # U-Net base width of the base model
    n_samples: int       # samples per scored setting
    steps: tuple[int, ...]  # S of ddpm-vs-ddim (T is added)
    flow_max_nfe: int    # flow samplers up to this NFE
    guide_steps: int     # DDIM steps of guidance-scale
    per_class: int       # guidance-scale samples per class
    threads: int


QUICK = Budget(quick=True, timesteps=100, epochs=4, base=16, n_samples=80, steps=(10, 20, 50),
               flow_max_nfe=50, guide_steps=20, per_class=20, threads=1)
#: the ablation trains five models: one epoch less each in quick mode
QUICK_ABLATION = replace(QUICK, epochs=3)
FULL = Budget(quick=False, timesteps=1000, epochs=2, base=32, n_samples=500, steps=(10, 20, 50, 100),
              flow_max_nfe=100, guide_steps=50, per_class=100, threads=2)

#: the tiny digits U-Net of the quick modes (tests/test_diffusion_method.py, without attention)
QUICK_UNET = ["model.name=diffusion-unet", "model.mults=[1,2]", "model.num_res_blocks=1", "model.attn_levels=[]",
              "model.dropout=0", "model.groups=4", "method.name=diffusion", "method.grid_n=0",
              "method.bpd_images=0", "data.name=digits", "data.val_size=200", "data.batch_size=64",
              "optim.name=adam", "optim.lr=0.002", "train.ema_decay=0.9"]


def train_model(out: Path, name: str, b: Budget, *, recipe: str = "fmnist-ddpm", base: int | None = None,
                timesteps: int | None = None, extra: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]]:
    """Train one denoiser of budget ``b``; returns the loaded method (EMA weights) and its run facts."""
    base = b.base if base is None else base
    T = b.timesteps if timesteps is None else timesteps
    common = [f"model.base={base}", f"method.timesteps={T}", f"train.epochs={b.epochs}",
              f"train.threads={b.threads}", *extra]
    if b.quick:
        res, wall = run_training(out, name, [*QUICK_UNET, *common])
    else:
        res, wall = run_training(out, name, ["method.bpd_images=0", "method.grid_n=16", *common], recipe=recipe)
    method = _load(res.run_dir)
    facts = {"run": name, "params": int(res.summary["parameters"]["model"]["total"]),
             "train_s": float(res.summary["train_time_s"]), "wall_s": wall,
             "val_loss": float(res.summary["final"].get("val_loss") or math.nan)}
    return method, facts


# ----------------------------------------------------------------------------------------
# metrics: fmnist features (full) or PCA of the digits pixels (quick)


class Scorer:
    """Fréchet distance of samples to the test images and a classifier of their class."""

    def __init__(self, quick: bool, n_real: int = 10000):
        from ..data.vision import load_dataset

        self.quick = quick
        if quick:
            from sklearn.decomposition import PCA
            from sklearn.linear_model import LogisticRegression

            d = load_dataset("digits", progress=False)
            xtr = d.train_x.flatten(1).double().numpy() / 255.0
            self.pca = PCA(16, random_state=0).fit(xtr)
            self.clf = LogisticRegression(max_iter=3000).fit(xtr, d.train_y.numpy())
            self.real = d.test_x.float() / 255.0
            self.real_y = d.test_y
            self.column = "fd_pca16"
            self.what = ("fd_pca16: Fréchet distance on the 16 leading PCA components of the digits pixels "
                         f"(PCA fitted on the training digits), vs the {len(self.real)} test digits; classifier: "
                         "logistic regression on the 64 pixels of the training digits")
        else:
            from ..data.vision import load_dataset as _ld

            self.net, self.real, _ = _fid_reference(n_real)
            self.real_y = _ld("fashion-mnist", progress=False).test_y[:n_real]
            self.column = "fid"
            self.what = (f"fid: FID on the shipped Fashion-MNIST feature net vs the first {len(self.real)} test "
                         "images (its own scale, not an Inception FID); classifier: that net's class head")
        self.f_real, self.p_real = self.features(self.real)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(N, D)`` and class probabilities ``(N, K)`` of images ``x`` on [0, 1]."""
        if self.quick:
            flat = x.flatten(1).double().numpy()
            return torch.from_numpy(self.pca.transform(flat)), torch.from_numpy(self.clf.predict_proba(flat))
        from ..metrics.generative import extract

        return extract(self.net, x)

    def distance(self, x: torch.Tensor) -> float:
        from ..metrics.generative import fid

        return fid(self.f_real, self.features(x)[0])


def noise_images(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Uniform noise images of the shape of ``like`` (the "worst sampler" reference row)."""
    return torch.rand(like.shape, generator=torch.Generator().manual_seed(seed))


def timed_sample(method: Any, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    t0 = time.perf_counter()
    x = method.sample(n, seed=seed, labels=labels)
    return x, (time.perf_counter() - t0) / n


# ----------------------------------------------------------------------------------------
# diffusion-process (exercise 10.4, fig. 10.1)

PROCESS_SCHEDULES = [("linear", 1000), ("cosine", 1000), ("sigmoid", 1000), ("linear", 200)]
STRIP_T = [0, 100, 250, 500, 750, 999]


def schedule_stats(name: str, T: int) -> dict[str, Any]:
    """The table row of one schedule: first course t = i + 1 with SNR < 1, ᾱ_T, mean β."""
    from ..methods.noise import NoiseSchedule

    s = NoiseSchedule(name, T)
    snr = s.alphas_cumprod / (1 - s.alphas_cumprod)
    below = torch.nonzero(snr < 1).flatten()
    t_cross = int(below[0]) + 1 if len(below) else -1
    return {"schedule": name, "T": T, "t_snr_below_1": t_cross, "t_snr_below_1_over_T": t_cross / T,
            "abar_T": float(s.alphas_cumprod[-1]), "abar_mid": float(s.alphas_cumprod[T // 2 - 1]),
            "mean_beta": float(s.betas.mean()), "max_beta": float(s.betas.max())}


@EXPERIMENTS.register("diffusion-process", help="noise schedules ᾱ_t / β_t (linear, cosine, sigmoid), the "
                      "forward process on an image, SNR crossing (course §10.1-10.3, ex. 10.4); seconds")
def diffusion_process(out: Path, quick: bool) -> ExperimentResult:
    from ..data.vision import load_dataset
    from ..methods.noise import NoiseSchedule
    from ..viz.images import save_traversal

    table = pd.DataFrame([schedule_stats(n, T) for n, T in PROCESS_SCHEDULES])
    figures = [_fig_schedules(out / "schedules.png")]
    data = load_dataset("digits" if quick else "fashion-mnist", progress=False)
    x0 = data.test_x[:1].float() / 255.0 * 2 - 1               # (1, C, H, W) on [-1, 1]
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows, labels = [], []
    for name, T in PROCESS_SCHEDULES[:3]:
        s = NoiseSchedule(name, T)
        row = [x0[0].double()]
        for t in STRIP_T[1:]:
            row.append(s.q_sample(x0.double(), torch.tensor([t]), eps)[0])  # (10.8), index t = course t + 1
        rows.append(torch.stack(row))
        labels.append(f"{name} T={T}")
    strip = ((torch.stack(rows).float().clamp(-1, 1) + 1) / 2)   # (3, 6, C, H, W)
    figures.append(save_traversal(strip, out / "forward_process.png", row_labels=labels, values=STRIP_T,
                                  value_format="t={:.0f}", title=f"forward process q(x_t | x_0) on a "
                                  f"{data.name} test image (same ε per row; fig. 10.1)"))
    r = table.set_index(["schedule", "T"])
    small = all(r.loc[(n, 1000), "abar_T"] < 1e-3 for n in ("linear", "cosine", "sigmoid"))
    later = r.loc[("cosine", 1000), "t_snr_below_1"] > r.loc[("linear", 1000), "t_snr_below_1"]
    claims = {"abar_T_below_1e-3": verdict(bool(small)), "cosine_snr_crossing_later": verdict(bool(later))}
    notes = (f"ᾱ_T < 10⁻³ for the three T = 1000 schedules (x_T is nearly pure noise, def. 10.1): "
             f"{claims['abar_T_below_1e-3']} (linear {r.loc[('linear', 1000), 'abar_T']:.2e}, cosine "
             f"{r.loc[('cosine', 1000), 'abar_T']:.2e}, sigmoid {r.loc[('sigmoid', 1000), 'abar_T']:.2e}). "
             f"The cosine schedule (eq. 10.18) destroys the signal more slowly than the linear one (eq. 10.17): "
             f"SNR falls below 1 at t = {r.loc[('cosine', 1000), 't_snr_below_1']} vs "
             f"{r.loc[('linear', 1000), 't_snr_below_1']}: {claims['cosine_snr_crossing_later']}. The linear "
             "schedule at T = 200 has its β scaled by 1000/T so that ᾱ_T stays near 0. The reverse trajectory "
             "of a trained model: `profond sample RUN --trajectory`.")
    return ExperimentResult(table=table, figures=figures, notes=notes, extra={"claims": claims})


def _fig_schedules(path: Path) -> Path:
    from ..methods.noise import NoiseSchedule

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for name, T in PROCESS_SCHEDULES:
        s = NoiseSchedule(name, T)
        t = np.arange(1, T + 1) / T
        style = "--" if T != 1000 else "-"
        axes[0].plot(t, s.alphas_cumprod.numpy(), style, label=f"{name}, T={T}")
        axes[1].plot(t, s.betas.numpy(), style, label=f"{name}, T={T}")
    axes[0].set(xlabel="t / T", ylabel="ᾱ_t", title="ᾱ_t = ∏ (1 − β_s)  (eq. 10.7)")
    axes[1].set(xlabel="t / T", ylabel="β_t", yscale="log", title="β_t (eqs. 10.17, 10.18)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Noise schedules (exercise 10.4)")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# ddpm-vs-ddim (exercise 10.6)


def heun_steps(nfe: int) -> int:
    """Heun steps whose NFE 2S − 1 is the largest not above ``nfe``."""
    return max(1, (nfe + 1) // 2)


@EXPERIMENTS.register("ddpm-vs-ddim", help="DDPM vs DDIM (η = 0, 1) vs flow matching (Euler, Heun) at S steps: "
                      "distance, NFE, time, interpolation (course ex. 10.6; full ~5 h on 2 CPU cores)")
def ddpm_vs_ddim(out: Path, quick: bool) -> ExperimentResult:
    from ..methods.capabilities import LatentRequest, SamplerRequest

    b = QUICK if quick else FULL
    name = "ddpm-vs-ddim"
    with num_threads(b.threads):
        scorer = Scorer(quick, n_real=10000)
        _progress(name, "training the ddpm model ...")
        ddpm, f_ddpm = train_model(out, "ddpm", b)
        _progress(name, "training the flow-matching model ...")
        flow, f_flow = train_model(out, "flow", b, extra=("method.process=flow",))
        T = b.timesteps
        rows = []
        steps = sorted({*b.steps, T})
        for sampler, eta in (("ddpm", None), ("ddim", 0.0), ("ddim", 1.0)):
            for S in steps:
                s = ddpm.use_sampler(SamplerRequest(sampler=sampler, steps=S, eta=eta))
                x, sec = timed_sample(ddpm, b.n_samples)
                label = sampler if eta is None else f"ddim η={eta:g}"
                rows.append({"model": "ddpm (ε)", "sampler": label, "S": S, "NFE": s["nfe_per_image"],
                             scorer.column: scorer.distance(x), "s_per_sample": sec})
                _progress(name, f"{label} S={S}: {rows[-1][scorer.column]:.4g}")
        for sampler in ("euler", "heun"):
            for nfe in [n for n in steps if n <= b.flow_max_nfe]:
                S = nfe if sampler == "euler" else heun_steps(nfe)
                s = flow.use_sampler(SamplerRequest(sampler=sampler, steps=S))
                x, sec = timed_sample(flow, b.n_samples)
                rows.append({"model": "flow matching", "sampler": sampler, "S": S, "NFE": s["nfe_per_image"],
                             scorer.column: scorer.distance(x), "s_per_sample": sec})
        noise = noise_images(scorer.real[: b.n_samples])
        rows.append({"model": "-", "sampler": "noise", "S": 0, "NFE": 0, scorer.column: scorer.distance(noise),
                     "s_per_sample": 0.0})
        table = pd.DataFrame(rows)
        ddpm.use_sampler(SamplerRequest(sampler="ddim", steps=min(50, T), eta=0.0))
        interp = ddpm.latent_figures(LatentRequest(folder=out, run_name="ddpm", steps=8, pairs=4)).files
    figures = [_fig_nfe(table, scorer.column, out / "distance_vs_nfe.png", quick), *interp]
    col = scorer.column
    get = table.set_index(["sampler", "S"])[col]
    ddim50, ddpm_t = float(get[("ddim η=0", min(50, T))]), float(get[("ddpm", T)])
    claim = verdict(ddim50 <= 1.1 * ddpm_t)
    notes = (f"{scorer.what}; {b.n_samples} samples per row (seed 0). Models: {f_ddpm['params']:,} parameters, "
             f"T = {T}, {b.epochs} epoch(s) ({'digits, quick' if quick else 'Fashion-MNIST, recipe fmnist-ddpm'}); "
             "the flow model is the same net with method.process=flow. DDPM at S < T samples on the respaced "
             "schedule (remark 10.7); Heun's NFE is 2S − 1 (S chosen so that the NFE matches Euler's). "
             "DDIM η = 1 uses σ_t² = β̃_t between consecutive retained steps, i.e. the DDPM sampler: same seed, "
             "same samples. "
             f"Target of issue 17, DDIM-50 ≤ 1.1 × DDPM-{T}: {ddim50:.4g} vs {ddpm_t:.4g}: {claim}"
             + (" (quick: T = 100, so DDIM-50 is only 2x fewer calls)" if quick else "") + ". "
             "interpolation.png: DDIM η = 0 along the slerp between two x_T (exercise 10.6.3: the deterministic "
             "sampler maps nearby x_T to nearby images).")
    return ExperimentResult(table=table, figures=figures, notes=notes,
                            extra={"claims": {"ddim50_within_1.1x_ddpm_T": claim}, "metric": col,
                                   "samples": b.n_samples, "train": [f_ddpm, f_flow]})


def _fig_nfe(table: pd.DataFrame, col: str, path: Path, quick: bool) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for sampler, t in table[table["sampler"] != "noise"].groupby("sampler", sort=False):
        ax.plot(t["NFE"], t[col], "-o", label=sampler)
    noise = table.loc[table["sampler"] == "noise", col]
    if len(noise):
        ax.axhline(float(noise.iloc[0]), color="k", ls=":", label="uniform noise")
    ax.set(xscale="log", yscale="log", xlabel="network calls per sample (NFE)", ylabel=col,
           title="Sample quality vs NFE (exercise 10.6)" + (" — quick, digits" if quick else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# guidance-scale (exercise 10.5)

GUIDANCE = (0.0, 1.0, 3.0, 7.0)
GRID_COLS = 8


def within_class_distance(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise Euclidean pixel distance between samples of the same class (diversity)."""
    ds = []
    for k in labels.unique():
        xk = x[labels == k].flatten(1).double()
        if len(xk) > 1:
            d = torch.cdist(xk, xk)
            ds.append(float(d.sum() / (len(xk) * (len(xk) - 1))))
    return float(np.mean(ds))


@EXPERIMENTS.register("guidance-scale", help="classifier-free guidance w ∈ {0, 1, 3, 7}: distance, class accuracy, "
                      "diversity, grids (course def. 10.8, ex. 10.5; full ~1.5 h on 2 CPU cores)")
def guidance_scale(out: Path, quick: bool) -> ExperimentResult:
    from ..methods.capabilities import SamplerRequest
    from ..metrics.generative import class_histogram
    from ..viz.images import save_traversal

    b = QUICK if quick else FULL
    name = "guidance-scale"
    with num_threads(b.threads):
        scorer = Scorer(quick, n_real=10000)
        _progress(name, "training the conditional model ...")
        extra = ("model.conditional=true", "method.cond_drop=0.1") + (("method.schedule=cosine",) if quick else ())
        method, facts = train_model(out, "cond", b, recipe="fmnist-ddpm-cfg", extra=extra)
        K = method.num_classes
        labels = torch.arange(K).repeat_interleave(b.per_class)
        rows, figures = [], []
        for w in GUIDANCE:
            s = method.use_sampler(SamplerRequest(sampler="ddim", steps=b.guide_steps, eta=0.0, guidance=w))
            x, sec = timed_sample(method, len(labels), labels=labels)
            f, p = scorer.features(x)
            from ..metrics.generative import fid

            hist = class_histogram(p)
            rows.append({"w": w, "NFE": s["nfe_per_image"], scorer.column: fid(scorer.f_real, f),
                         "class_accuracy": float((p.argmax(1) == labels).double().mean()),
                         "class_entropy": hist["normalised_entropy"], "mean_confidence": hist["mean_confidence"],
                         "within_class_dist": within_class_distance(x, labels), "s_per_sample": sec})
            _progress(name, f"w={w:g}: accuracy {rows[-1]['class_accuracy']:.3f}")
            grid = torch.stack([x[labels == k][:GRID_COLS] for k in range(K)])  # (K, cols, C, H, W)
            figures.append(save_traversal(grid, out / f"guidance-w{w:g}.png", row_labels=list(method.classes),
                                          values=list(range(GRID_COLS)), value_format="{:.0f}",
                                          title=f"w = {w:g} (eq. 10.22), DDIM {b.guide_steps} steps, one class per row"))
    table = pd.DataFrame(rows)
    acc, div = table["class_accuracy"].to_numpy(), table["within_class_dist"].to_numpy()
    claims = {"accuracy_up_with_w": verdict(bool(acc[-1] > acc[0])),
              "accuracy_monotone": verdict(bool(np.all(np.diff(acc) >= 0))),
              "diversity_down_with_w": verdict(bool(div[-1] < div[0]))}
    notes = (f"{scorer.what}. {len(labels)} samples per w ({b.per_class} per class, seed 0), DDIM η = 0, "
             f"{b.guide_steps} steps; the conditional model trained with 10 % null-class dropout, "
             f"{b.epochs} epoch(s), T = {b.timesteps}. class_accuracy: the classifier's argmax equals the "
             "requested class; class_entropy: normalised entropy of the predicted-class histogram; "
             "within_class_dist: mean pairwise pixel distance between samples of one class (diversity). "
             f"Quality vs diversity (exercise 10.5.3): accuracy at w = 7 above w = 0 "
             f"({acc[-1]:.3f} vs {acc[0]:.3f}): {claims['accuracy_up_with_w']}; accuracy non-decreasing in w: "
             f"{claims['accuracy_monotone']}; diversity at w = 7 below w = 0 ({div[-1]:.3f} vs {div[0]:.3f}): "
             f"{claims['diversity_down_with_w']}.")
    return ExperimentResult(table=table, figures=figures, notes=notes,
                            extra={"claims": claims, "metric": scorer.column, "train": facts})


# ----------------------------------------------------------------------------------------
# diffusion-ablation (table 10.1, remark 10.9)


@dataclass(frozen=True)
class AblationRow:
    """One row of the course's table 10.1 (its FID: MNIST, Inception features)."""

    label: str
    T: int            # full-mode T
    schedule: str
    width: str        # small | base | large
    sampler: str      # ddpm (all T steps) | ddim (S = T/20, η = 0)
    course_fid: float

    def key(self, b: Budget) -> tuple:
        return (self.timesteps(b), self.schedule, self.base(b))

    def timesteps(self, b: Budget) -> int:
        return self.T * b.timesteps // 1000

    def base(self, b: Budget) -> int:
        return {"small": b.base // 2, "base": b.base, "large": b.base * 2 if not b.quick else b.base + 8}[self.width]

    def steps(self, b: Budget) -> int:
        return self.timesteps(b) if self.sampler == "ddpm" else max(1, 50 * self.timesteps(b) // 1000)


BASE, REDUIT, COSINUS, PETIT, GRAND, DDIM50 = ("Base", "Réduit", "Cosinus", "Petit réseau", "Grand réseau",
                                               "DDIM (S = 50)")
TABLE_10_1 = [
    AblationRow(BASE, 1000, "linear", "base", "ddpm", 12.4),
    AblationRow(REDUIT, 200, "linear", "base", "ddpm", 28.7),
    AblationRow(COSINUS, 1000, "cosine", "base", "ddpm", 10.1),
    AblationRow(PETIT, 1000, "linear", "small", "ddpm", 18.9),
    AblationRow(GRAND, 1000, "cosine", "large", "ddpm", 7.8),
    AblationRow(DDIM50, 1000, "cosine", "base", "ddim", 11.3),
]


def remark_10_9(table: pd.DataFrame, col: str) -> dict[str, Any]:
    """The two claims of remark 10.9 on ``table`` (rows ``config``, distances in ``col``, ``NFE``)."""
    v = table.set_index("config")
    cos, lin = float(v.loc[COSINUS, col]), float(v.loc[BASE, col])
    ddim, ref = float(v.loc[DDIM50, col]), float(v.loc[COSINUS, col])
    ratio = float(v.loc[COSINUS, "NFE"]) / float(v.loc[DDIM50, "NFE"])
    return {
        "cosine_better": {"verdict": verdict(cos < lin), "evidence": f"cosine {cos:.4g} vs linear {lin:.4g}"},
        "ddim50_compromise": {"verdict": verdict(ddim <= 1.1 * ref and ratio >= 10),
                              "evidence": f"DDIM {ddim:.4g} vs DDPM {ref:.4g} on the cosine model "
                                          f"(≤ 1.1x: {ddim <= 1.1 * ref}) at {ratio:.3g}x fewer network calls"},
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    return pd.Series(x).rank(method="min").to_numpy()


@EXPERIMENTS.register("diffusion-ablation", help="T / schedule / width / DDIM ablation of DDPM, course table 10.1, "
                      "remark 10.9 (full: 5 runs, ~9 h on 2 CPU cores)")
def diffusion_ablation(out: Path, quick: bool) -> ExperimentResult:
    from ..methods.capabilities import SamplerRequest

    b = QUICK_ABLATION if quick else FULL
    name = "diffusion-ablation"
    done: dict[tuple, tuple[Any, dict[str, Any]]] = {}
    rows = []
    with num_threads(b.threads):
        scorer = Scorer(quick, n_real=10000)
        for r in TABLE_10_1:
            T, base = r.timesteps(b), r.base(b)
            if r.key(b) not in done:
                run = f"ddpm-T{T}-{r.schedule}-b{base}"
                _progress(name, f"training {run} ...")
                done[r.key(b)] = train_model(out, run, b, base=base, timesteps=T,
                                             extra=(f"method.schedule={r.schedule}",))
            method, facts = done[r.key(b)]
            s = method.use_sampler(SamplerRequest(sampler=r.sampler, steps=r.steps(b),
                                                  eta=0.0 if r.sampler == "ddim" else None))
            x, sec = timed_sample(method, b.n_samples)
            rows.append({"config": r.label, "T": T, "schedule": r.schedule, "base": base, "sampler": r.sampler,
                         "S": r.steps(b), "NFE": s["nfe_per_image"], scorer.column: scorer.distance(x),
                         "course_fid": r.course_fid, "params": facts["params"], "train_s": facts["train_s"],
                         "s_per_sample": sec, "run": facts["run"]})
            _progress(name, f"{r.label}: {rows[-1][scorer.column]:.4g}")
    table = pd.DataFrame(rows)
    col = scorer.column
    table["rank"] = _ranks(table[col].to_numpy()).astype(int)
    table["course_rank"] = _ranks(table["course_fid"].to_numpy()).astype(int)
    rho = float(np.corrcoef(table["rank"], table["course_rank"])[0, 1])  # Spearman ρ = Pearson on the ranks
    claims = remark_10_9(table, col)
    course = remark_10_9(pd.DataFrame({"config": [r.label for r in TABLE_10_1],
                                       "course_fid": [r.course_fid for r in TABLE_10_1],
                                       "NFE": [r.steps(FULL) for r in TABLE_10_1]}), "course_fid")
    figures = [_fig_ablation(table, col, out / "ablation.png", quick)]
    sizes = ", ".join(f"{lab} base {r.base(b)}" for lab, r in ((x.label, x) for x in TABLE_10_1[3:5]))
    notes = (f"{scorer.what}; {b.n_samples} samples per row (seed 0), DDPM with all T steps except the DDIM row "
             f"(η = 0, S = T/20 = {TABLE_10_1[5].steps(b)}). {b.epochs} epoch(s) per run; T "
             f"{'scaled by 1/10 (quick: 100 and 20 for Réduit)' if quick else 'as in the course'}; widths: base "
             f"{b.base}, {sizes} (course: 32 and 256 dim). course_fid: table 10.1 (MNIST, Inception features): "
             f"only the ranking compares; Spearman ρ of the ranks: {rho:.3f}. Remark 10.9: (1) the cosine schedule "
             f"improves the FID over the linear one: {claims['cosine_better']['verdict']} "
             f"({claims['cosine_better']['evidence']}); (2) DDIM S = 50 is a good speed/quality compromise "
             f"(within 1.1x at ≥ 10x fewer network calls): {claims['ddim50_compromise']['verdict']} "
             f"({claims['ddim50_compromise']['evidence']}). On the course's own numbers: (1) "
             f"{course['cosine_better']['verdict']}, (2) {course['ddim50_compromise']['verdict']} "
             f"({course['ddim50_compromise']['evidence']}).")
    return ExperimentResult(table=table, figures=figures, notes=notes,
                            extra={"remark_10_9": claims, "remark_10_9_course": course, "spearman": rho, "metric": col, "runs": len(done)})


def _fig_ablation(table: pd.DataFrame, col: str, path: Path, quick: bool) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4), layout="constrained")
    x = np.arange(len(table))
    ax.bar(x - 0.2, table[col], 0.4, label=f"profond ({col})", color="C0")
    ax.set_ylabel(col)
    ax2 = ax.twinx()
    ax2.bar(x + 0.2, table["course_fid"], 0.4, label="course table 10.1 (MNIST, Inception)", color="C1")
    ax2.set_ylabel("FID, course")
    ax.set_xticks(x, table["config"], rotation=20, fontsize=8)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper left")
    ax.set_title("DDPM ablation (table 10.1)" + (" — quick, digits" if quick else ""))
    return save_figure(fig, path)
