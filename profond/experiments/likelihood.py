r"""Exact likelihoods side by side (issue 18): ``likelihood-benchmark`` and ``likelihood-ood``.

Both train through the one loop (methods ``flow``, ``autoregressive`` and ``vae``) and score
images in **bits per dimension** (:mod:`profond.metrics.likelihood`; uniform over 256 levels
is 8 bits/dim).

``likelihood-benchmark`` -- every likelihood family in one table: RealNVP and Glow (a bound:
uniform dequantization), the Gated PixelCNN (exact), and a VAE, whose IWAE bound becomes
bits/dim the same way as a flow's density: a Gaussian decoder (``method.likelihood=gaussian``,
learned σ) scores the dequantized images ``y = (k + u) / 256``, so
``bpd ≤ −IWAE_k(y) / (D ln 2) + 8``. (The course's Bernoulli VAE is left out of the table:
its binary cross-entropy of grey levels is not a normalised likelihood of 8-bit data, and
``nats / (D ln 2)`` of it would not compare.) Columns: test bits/dim, parameters, training
seconds and the seconds per sampled image (one inverse pass for a flow, ``D`` sequential
passes for the PixelCNN), and the published MNIST numbers beside the MNIST rows (RealNVP
1.06, Glow 1.05, a pixel Transformer 0.62: the table's anchors). Figures: test bits/dim per
model, and validation bits/dim against training time (the curves of the loop's metrics).

``likelihood-ood`` -- Nalisnick et al. (2019), "Do deep generative models know what they
don't know?": a flow and a PixelCNN trained on Fashion-MNIST give *higher* likelihood to
MNIST digits, which they never saw, than to Fashion-MNIST test images. Per model: the
histogram of bits/dim per dataset, and the ROC-AUC of three out-of-distribution scores
(higher = more likely out of distribution; 0.5 is chance, below 0.5 is worse than chance):

1. ``bpd``: the likelihood alone (Nalisnick's observation is an AUC below 0.5);
2. ``llr``: the likelihood ratio of Ren et al. (2019), ``bpd_θ(x) − bpd_θ0(x)``, against a
   *background model* ``θ0`` of the same architecture trained on the same images with each
   pixel replaced by a random level with probability ``method.mutation_rate`` (0.2 here);
3. ``complexity``: Serrà et al. (2020), ``bpd_θ(x) − L(x)``, with ``L(x)`` the PNG size of
   the image in bits per pixel (a generic compressor's likelihood, no training).

Datasets. The full mode trains on Fashion-MNIST and scores the MNIST test set when its files
are on this machine (``profond.data`` finds them or downloads them; offline, the MNIST rows are
skipped with a message); in either case it also scores a stand-in that needs no files, the
scikit-learn digits resized to 28x28 (each 8x8 digit bilinearly upsampled to 24x24 and padded
with 2 black pixels). The quick mode (CI) is the same experiment at 8x8: the models train on
``fashion-mnist-8x8`` (Fashion-MNIST pooled to 8x8, :mod:`profond.data.vision`) and the OOD
set is the 8x8 digits themselves.

Budgets. ``--quick``: 8x8 images, small nets (a few thousand to tens of thousands of
parameters), a few epochs on one thread: well under a minute per experiment; the numbers show
the pipeline and the direction of the effects, not converged models. The full modes train
the recipes ``fmnist-realnvp``, ``fmnist-glow``, ``fmnist-pixelcnn`` and ``fmnist-vae`` (not run
in CI; times are the recipes' own estimates on 2 CPU cores): ``likelihood-benchmark`` about
6 h per dataset, ``likelihood-ood`` (two models and their two background models) about 7 h.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..metrics.likelihood import DEQUANT_BITS, dequantize, nats_to_bpd  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, optional_dataset, run_training, verdict  # noqa: E402

#: published MNIST test bits/dim (RealNVP and Glow papers; the pixel Transformer: Parmar et al.)
MNIST_ANCHORS = {"realnvp": 1.06, "glow": 1.05, "gated-pixelcnn": 0.62}
ANCHOR_NOTE = "MNIST anchors: RealNVP 1.06, Glow 1.05 (papers), pixel Transformer 0.62 (beside the PixelCNN)"
#: the background models' mutation rate (Ren et al. 2019 use 0.1-0.3)
MUTATION_RATE = 0.2


@dataclass(frozen=True)
class Model:
    """One trained family: its label, the runs' overrides (quick) or recipe (full)."""

    label: str
    family: str
    quick: tuple[str, ...]
    recipe: str
    full: tuple[str, ...] = ()


_FLOW_Q = ("method.name=flow", "model.steps=2", "model.hidden=32", "model.blocks=1", "method.grid_n=0",
           "data.batch_size=64", "optim.lr=0.002", "train.epochs=8")
MODELS_ = (
    Model("realnvp", "flow", ("model.name=realnvp", *_FLOW_Q, "model.steps=1"), "fmnist-realnvp", ("method.grid_n=0",)),
    Model("glow", "flow", ("model.name=glow", *_FLOW_Q), "fmnist-glow", ("method.grid_n=0",)),
    Model("gated-pixelcnn", "autoregressive",
          ("model.name=gated-pixelcnn", "model.width=16", "model.layers=4", "model.out_hidden=32",
           "method.name=autoregressive", "method.grid_n=0", "data.batch_size=64", "optim.lr=0.003",
           "train.epochs=5"), "fmnist-pixelcnn", ("method.grid_n=0",)),
    Model("vae-gaussian", "vae",
          ("model.name=vae", "model.hidden=[128]", "model.latent_dim=8", "method.name=vae",
           "method.likelihood=gaussian", "data.batch_size=64", "optim.lr=0.003", "train.epochs=20"),
          "fmnist-vae", ("method.likelihood=gaussian",)),
)
#: IWAE samples of the VAE's bound (quick, full)
IWAE_K = (50, 100)


def _train(out: Path, name: str, m: Model, dataset: str, quick: bool, extra: tuple[str, ...] = ()):
    """Train model ``m`` on ``dataset`` through the one loop; returns (method, run result, wall s)."""
    from ..train import load_run

    if quick:
        res, wall = run_training(out, name, [*m.quick, f"data.name={dataset}", "data.val_size=200",
                                             "train.threads=1", *extra])
    else:
        res, wall = run_training(out, name, [*m.full, f"data.name={dataset}", *extra], recipe=m.recipe)
    method, _ = load_run(res.run_dir, device="cpu")
    return method, res, wall


def image_bpd(method: Any, family: str, x: torch.Tensor, quick: bool) -> torch.Tensor:
    """Bits/dim ``(N,)`` of uint8 images ``x``: the method's own score (flow, PixelCNN), or for the
    VAE ``−IWAE_k(y) / (D ln 2) + 8`` on dequantized ``y`` (seeded)."""
    xf = x.float() / 255.0
    if family != "vae":
        return method.image_bpd(xf, seed=0)
    y = dequantize(xf, generator=torch.Generator().manual_seed(0))
    nats = -method.iwae(y, k=IWAE_K[0] if quick else IWAE_K[1], seed=0).double()
    return nats_to_bpd(nats, x[0].numel()) + DEQUANT_BITS


def seconds_per_sample(method: Any, n: int) -> float:
    t0 = time.perf_counter()
    method.sample(n, seed=0)
    return (time.perf_counter() - t0) / n


def _curve(res: Any) -> tuple[list[float], list[float]]:
    """(training seconds, validation loss) per epoch from the run's history."""
    rows = [r for r in res.history if r.get("val_loss") is not None]
    return [float(r["time"]) for r in rows], [float(r["val_loss"]) for r in rows]


def _mnist() -> tuple[Any, str | None]:
    """MNIST when its files load (found or downloaded), else ``None`` and the message saying why."""
    return optional_dataset("mnist")


def _datasets(quick: bool) -> tuple[list[str], list[str]]:
    """The datasets to train on, and the messages for the ones skipped."""
    if quick:
        return ["digits"], []
    mnist, why = _mnist()
    return (["fashion-mnist", "mnist"], []) if mnist is not None else (["fashion-mnist"], [why])


@EXPERIMENTS.register("likelihood-benchmark", help="bits/dim of RealNVP, Glow, Gated PixelCNN and a VAE's IWAE "
                                                   "bound in one table, sampling time per image (issue 18; full: "
                                                   "~6 h per dataset)")
def likelihood_benchmark(out: Path, quick: bool) -> ExperimentResult:
    from ..data.vision import load_dataset

    names, skipped = _datasets(quick)
    rows, curves = [], {}
    with num_threads(1 if quick else 2):
        for ds in names:
            data = load_dataset(ds, progress=False)
            test_x = data.test_x
            for m in MODELS_:
                method, res, wall = _train(out, f"{m.label}-{ds}", m, ds, quick)
                bpd = image_bpd(method, m.family, test_x, quick)
                sps = seconds_per_sample(method, 8 if quick else 16)
                if m.family != "vae":
                    curves[(ds, m.label)] = _curve(res)
                rows.append({
                    "dataset": ds, "model": m.label,
                    "bound": {"flow": "dequantized bound", "autoregressive": "exact",
                              "vae": f"IWAE-{IWAE_K[0] if quick else IWAE_K[1]} bound (dequantized)"}[m.family],
                    "test_bpd": float(bpd.mean()), "test_images": len(test_x),
                    "parameters": sum(p.numel() for p in method.nets["model"].parameters()),
                    "epochs": int(res.summary["epochs_completed"]),
                    "train_s": round(float(res.summary["train_time_s"]), 2),
                    "sample_s_per_image": sps,
                    "passes_per_sample": math.prod(data.shape) if m.family == "autoregressive" else 1,
                    "mnist_anchor": MNIST_ANCHORS.get(m.label, math.nan) if ds == "mnist" else math.nan,
                })
    table = pd.DataFrame(rows)
    figures = [_bpd_bars(out / "likelihood_bpd.png", table, quick), _bpd_curves(out / "likelihood_curves.png", curves)]
    claims = {}
    for ds in names:
        t = table[table.dataset == ds].set_index("model")
        claims[f"{ds}: pixelcnn_lowest_bpd"] = verdict(bool(t.test_bpd.idxmin() == "gated-pixelcnn"))
        flows = t[t.bound == "dequantized bound"]
        claims[f"{ds}: flow_samples_faster_than_pixelcnn"] = verdict(
            bool((flows.sample_s_per_image < t.loc["gated-pixelcnn", "sample_s_per_image"]).all()))
        claims[f"{ds}: exact_families_beat_vae_bound"] = verdict(
            bool((t.drop("vae-gaussian").test_bpd < t.loc["vae-gaussian", "test_bpd"]).all()))
    notes = " ".join([
        *(f"{k}: {v}." for k, v in claims.items()),
        "Every bits/dim is an upper bound on the discrete NLL except the PixelCNN's, which is exact;",
        "uniform over 256 levels is 8.", ANCHOR_NOTE + ".", *skipped,
    ])
    if quick:
        notes += (" Quick mode: 8x8 digits (only 17 grey levels occur, so bits/dim are far below 28x28 "
                  "numbers), small nets, a few epochs: the numbers show the pipeline, not the families' rank.")
    return ExperimentResult(table=table, figures=figures, notes=notes, extra={"claims": claims, "skipped": skipped})


def _bpd_bars(path: Path, table: pd.DataFrame, quick: bool) -> Path:
    sets = list(dict.fromkeys(table.dataset))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], sets, strict=True):
        t = table[table.dataset == ds]
        bars = ax.bar(t.model, t.test_bpd, color=["tab:blue", "tab:cyan", "tab:red", "tab:gray"][:len(t)])
        ax.bar_label(bars, fmt="%.2f", fontsize=9)
        if ds == "mnist":
            for i, a in enumerate(t.mnist_anchor):
                if np.isfinite(a):
                    ax.hlines(a, i - 0.4, i + 0.4, colors="k", linestyles="--")
        ax.set_ylabel("test bits/dim (lower is better)")
        ax.set_title(ds + (" (quick)" if quick else ""), fontsize=10)
        ax.tick_params(axis="x", rotation=15)
    fig.suptitle("Likelihood of the test set per family (dashed: published MNIST numbers)")
    return save_figure(fig, path)


def _bpd_curves(path: Path, curves: dict[tuple[str, str], tuple[list[float], list[float]]]) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for (ds, label), (t, v) in curves.items():
        ax.plot(t, v, marker="o", label=f"{label} ({ds})")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("validation bits/dim")
    ax.set_title("Bits/dim against training time")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# -- likelihood-ood -----------------------------------------------------------------------------------------
def png_bits_per_dim(x: torch.Tensor) -> np.ndarray:
    """``L(x)``: the size of each uint8 image ``(N, 1, H, W)`` as a PNG (compression level 9), in bits
    per pixel: the complexity estimate of Serrà et al. (2020)."""
    from PIL import Image

    out = np.empty(len(x))
    for i, img in enumerate(x[:, 0].numpy()):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, format="PNG", optimize=True, compress_level=9)
        out[i] = 8 * buf.tell() / img.size
    return out


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """ROC-AUC of a score meant to be higher out of distribution: the probability that an OOD image
    scores above an in-distribution one (ties count one half)."""
    from sklearn.metrics import roc_auc_score

    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    return float(roc_auc_score(labels, np.r_[in_scores, out_scores]))


def digits_28() -> torch.Tensor:
    """The 1797 scikit-learn digits as uint8 ``(N, 1, 28, 28)``: bilinear 8 -> 24, black border of 2."""
    from ..data.vision import load_dataset

    d = load_dataset("digits", progress=False)
    x = torch.cat([d.train_x, d.test_x]).float()
    up = torch.nn.functional.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
    return torch.nn.functional.pad(up, (2, 2, 2, 2)).round().clamp(0, 255).to(torch.uint8)


def _ood_sets(quick: bool) -> tuple[str, torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """Training set name, in-distribution test images, OOD sets by name, skip messages."""
    from ..data.vision import load_dataset

    if quick:
        d = load_dataset("digits", progress=False)
        test = load_dataset("fashion-mnist-8x8", progress=False).test_x[:1000]
        return "fashion-mnist-8x8", test, {"digits": torch.cat([d.train_x, d.test_x])}, []
    sets, skipped = {}, []
    mnist, why = _mnist()
    if mnist is not None:
        sets["mnist"] = mnist.test_x
    else:
        skipped.append(f"{why}; the digits-28 stand-in is scored instead")
    sets["digits-28 (stand-in)"] = digits_28()
    return "fashion-mnist", load_dataset("fashion-mnist", progress=False).test_x, sets, skipped


@EXPERIMENTS.register("likelihood-ood", help="Nalisnick et al.: a flow and a PixelCNN trained on Fashion-MNIST "
                                             "prefer digits; likelihood-ratio and complexity corrections, ROC-AUC "
                                             "(issue 18; full: ~7 h)")
def likelihood_ood(out: Path, quick: bool) -> ExperimentResult:
    train_set, test_in, ood, skipped = _ood_sets(quick)
    # the quick mode trains on 1,500 of the 8x8 images for 3 epochs; the full mode on all, the recipes' epochs
    sub = ("data.subset=1500", "train.epochs=3") if quick else ()
    models = [m for m in MODELS_ if m.label in ("realnvp", "gated-pixelcnn")]
    comp_in = png_bits_per_dim(test_in)
    comp_ood = {k: png_bits_per_dim(v) for k, v in ood.items()}
    rows, scores = [], {}
    with num_threads(1 if quick else 2):
        for m in models:
            fg, _, _ = _train(out, f"{m.label}", m, train_set, quick, sub)
            bg, _, _ = _train(out, f"{m.label}-background", m, train_set, quick,
                              (*sub, f"method.mutation_rate={MUTATION_RATE}"))
            b_in = image_bpd(fg, m.family, test_in, quick).numpy()
            llr_in = b_in - image_bpd(bg, m.family, test_in, quick).numpy()
            scores[(m.label, train_set + " (test)")] = (b_in, llr_in)
            for name, x in ood.items():
                b_out = image_bpd(fg, m.family, x, quick).numpy()
                llr_out = b_out - image_bpd(bg, m.family, x, quick).numpy()
                scores[(m.label, name)] = (b_out, llr_out)
                rows.append({
                    "model": m.label, "ood_set": name, "bpd_in": float(b_in.mean()), "bpd_ood": float(b_out.mean()),
                    "ood_more_likely": bool(b_out.mean() < b_in.mean()),
                    "auroc_bpd": auroc(b_in, b_out), "auroc_llr": auroc(llr_in, llr_out),
                    "auroc_complexity": auroc(b_in - comp_in, b_out - comp_ood[name]),
                    "n_in": len(b_in), "n_ood": len(b_out),
                })
    table = pd.DataFrame(rows)
    figures = [_ood_figure(out / "likelihood_ood.png", scores, train_set)]
    claims = {
        "ood_gets_higher_likelihood": verdict(bool(table.ood_more_likely.all())),
        "likelihood_fails_as_ood_score (auroc < 0.5)": verdict(bool((table.auroc_bpd < 0.5).all())),
        "likelihood_ratio_repairs_it (auroc > 0.9)": verdict(bool((table.auroc_llr > 0.9).all())),
        "complexity_correction_repairs_it (auroc > 0.9)": verdict(bool((table.auroc_complexity > 0.9).all())),
    }
    notes = " ".join([
        f"Trained on {train_set}; OOD sets: {', '.join(ood)}. Scores are higher out of distribution: "
        "bpd (the likelihood), llr = bpd − bpd of a background model trained with "
        f"mutation rate {MUTATION_RATE} (Ren et al. 2019), complexity = bpd − PNG bits/pixel (Serrà et al. 2020).",
        *(f"{k}: {v}." for k, v in claims.items()), *skipped,
    ])
    if quick:
        notes += (" Quick mode: 8x8 Fashion-MNIST (1,500 training images, 3 epochs) against the 8x8 digits, small nets. "
                  "At 8x8 the digits fill their frame with bright strokes while the pooled clothes keep a dark "
                  "border, so the quick mode does not put Nalisnick et al.'s claim to its own test (MNIST's digits "
                  "are thin strokes on a black 28x28 field); the full mode does.")
    return ExperimentResult(table=table, figures=figures, notes=notes, extra={"claims": claims, "skipped": skipped})


def _ood_figure(path: Path, scores: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], train_set: str) -> Path:
    models = list(dict.fromkeys(k[0] for k in scores))
    fig, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for r, m in enumerate(models):
        for c, (what, idx) in enumerate((("bits/dim (the likelihood)", 0), ("llr: bpd − background bpd", 1))):
            ax = axes[r, c]
            for (mm, name), vals in scores.items():
                if mm == m:
                    ax.hist(vals[idx], bins=40, alpha=0.5, density=True, label=name)
            ax.set_title(f"{m}: {what}", fontsize=10)
            ax.set_xlabel("higher: judged more out of distribution")
            ax.legend(fontsize=8)
    fig.suptitle(f"Trained on {train_set}: likelihood of in- and out-of-distribution images")
    fig.tight_layout()
    return save_figure(fig, path)
