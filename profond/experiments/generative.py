"""Autoencoders and VAEs on Fashion-MNIST (course chapter 9).

Two experiments, every run trained through the one loop (:func:`profond.train.train`):

``vae-ablation`` -- the axes of the course's table 9.1 (§9.9, MNIST, 30 epochs): latent
dimension d ∈ {2, 5, 10, 20, 50, 100}, β ∈ {0.5, 1, 2, 4, 10} (β-VAE, eq. 9.23) and the
architecture MLP [512] / MLP [256, 256] / conv (exercise 9.3), around the base VAE of §9.8
(784-512-20, β = 1, Bernoulli likelihood = the course's summed BCE). Each row reports, on the
test set and per image in nats: the reconstruction term, the KL, the ELBO, the active units
(Burda et al. 2016: Cov_x E[z_j|x] > 0.01), the FID of N samples against the test images on
the shipped Fashion-MNIST feature net (:mod:`profond.metrics.generative`; not comparable with
an Inception FID), the parameter count and training seconds, next to the course's printed
numbers (``course_recon`` / ``course_kl``: *MNIST*, 30 epochs, so only the trends compare).
Figures: reconstruction vs KL over β (exercise 9.4.3), recon / KL / active units against the
latent dimension (Remarque 9.10: d = 2 is too small, large d leaves units inactive), and a
sample grid per architecture. Full mode: 12 distinct runs of 10 epochs each (the "MLP (512)"
row is the base run), FID on 5,000 samples.

``anomaly`` -- one-class anomaly detection with an autoencoder: for each Fashion-MNIST class
c, train an AE on the images of class c only (``method.normal_class``), score every test
image by its reconstruction error and report the ROC-AUC of "not class c" (per class and the
mean), with the ROC curves of all classes on one figure. Two thresholds: the one-class one
of :mod:`profond.methods.autoencoder` (the 95 % quantile of the *normal* validation scores:
no anomaly needed) and the one maximising the macro F1 (mean of the anomaly and normal F1) on
the whole validation split (all classes, anomalies labelled); each is applied to the test set
(test F1). Full mode: conv AE (latent 32), 10 classes x 10 epochs on ~5,500 images each.

``--quick``: 1,000 training images (anomaly: 1,000 of the normal class), 1 epoch; a reduced
grid (latent {2, 20}, β {1, 4}, MLP [512] vs a narrow conv [16, 32, 32]; anomaly: 3 classes,
MLP AE) and FID on 500 samples against 1,000 test images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
from . import ExperimentResult, finite, run_training  # noqa: E402


@dataclass(frozen=True)
class VAEConfig:
    """One row of the course's table 9.1 (its numbers are MNIST after 30 epochs)."""

    label: str
    axis: str  # base | latent | beta | arch
    latent_dim: int
    beta: float
    arch: str  # mlp | conv
    hidden: tuple[int, ...]
    course_recon: float
    course_kl: float

    @property
    def key(self) -> tuple:
        """Rows with the same key share one training run (the base appears as "MLP (512)" too)."""
        return (self.latent_dim, self.beta, self.arch, self.hidden)

    @property
    def run_name(self) -> str:
        arch = self.arch if self.arch == "conv" else "mlp" + "-".join(str(h) for h in self.hidden)
        return f"vae-d{self.latent_dim}-b{self.beta:g}-{arch}"

    @property
    def arch_label(self) -> str:
        return "conv" if self.arch == "conv" else "MLP [" + ", ".join(str(h) for h in self.hidden) + "]"


#: table 9.1 of the course, in its order
TABLE_9_1 = [
    VAEConfig("base", "base", 20, 1.0, "mlp", (512,), 82.3, 24.3),
    VAEConfig("d=2", "latent", 2, 1.0, "mlp", (512,), 112.5, 8.7),
    VAEConfig("d=5", "latent", 5, 1.0, "mlp", (512,), 96.1, 14.2),
    VAEConfig("d=10", "latent", 10, 1.0, "mlp", (512,), 87.4, 19.8),
    VAEConfig("d=50", "latent", 50, 1.0, "mlp", (512,), 80.1, 25.8),
    VAEConfig("d=100", "latent", 100, 1.0, "mlp", (512,), 79.5, 21.3),
    VAEConfig("β=0.5", "beta", 20, 0.5, "mlp", (512,), 78.9, 31.2),
    VAEConfig("β=2", "beta", 20, 2.0, "mlp", (512,), 89.4, 16.1),
    VAEConfig("β=4", "beta", 20, 4.0, "mlp", (512,), 97.8, 9.3),
    VAEConfig("β=10", "beta", 20, 10.0, "mlp", (512,), 115.2, 3.8),
    VAEConfig("MLP (512)", "arch", 20, 1.0, "mlp", (512,), 82.3, 24.3),
    VAEConfig("MLP (256-256)", "arch", 20, 1.0, "mlp", (256, 256), 84.1, 23.9),
    VAEConfig("Conv (CNN)", "arch", 20, 1.0, "conv", (), 73.5, 26.7),
]
QUICK_ROWS = ["base", "d=2", "β=4", "Conv (CNN)"]

FULL_EPOCHS = 10
QUICK_DATA = ["data.subset=1000", "data.val_size=500", "train.epochs=1"]
#: conv widths of the quick conv VAE (the full run uses the model's [32, 64, 128])
QUICK_CONV = "model.channels=[16,32,32]"


# ----------------------------------------------------------------------------------------
# shared helpers


def _load(run_dir: Path) -> Any:
    """The trained method of a finished run, on the CPU."""
    from ..train.loop import load_run

    method, _ = load_run(run_dir, checkpoint="last", device="cpu")
    return method


def _hidden_arg(hidden: tuple[int, ...]) -> str:
    return "model.hidden=[" + ",".join(str(h) for h in hidden) + "]"


def _fid_reference(n_real: int) -> tuple[Any, Any, Any]:
    """The Fashion-MNIST feature net, the first ``n_real`` test images and their features."""
    from ..data.vision import load_dataset
    from ..metrics.generative import extract, load_feature_net

    data = load_dataset("fashion-mnist", progress=False)
    real = data.test_x[:n_real].float() / 255.0
    net = load_feature_net("fmnist", device="cpu")
    f_real, _ = extract(net, real)
    return net, real, f_real


# ----------------------------------------------------------------------------------------
# vae-ablation


def _vae_overrides(c: VAEConfig, quick: bool) -> list[str]:
    model = ["model.name=vae", f"model.arch={c.arch}", f"model.latent_dim={c.latent_dim}", _hidden_arg(c.hidden)]
    budget = QUICK_DATA + ([QUICK_CONV] if c.arch == "conv" else []) if quick else [f"train.epochs={FULL_EPOCHS}"]
    return [*model, f"method.beta={c.beta}", "method.likelihood=bernoulli", *budget]


@EXPERIMENTS.register("vae-ablation", help="VAE latent dim / β / architecture ablation, course table 9.1 "
                      "(full: 12 runs x 10 epochs, ~1 h on 2 CPU cores)")
def vae_ablation(out: Path, quick: bool) -> ExperimentResult:
    from ..metrics.generative import extract, fid
    from ..viz.images import save_grid

    configs = [c for c in TABLE_9_1 if c.label in QUICK_ROWS] if quick else TABLE_9_1
    n_fid, n_real = (500, 1000) if quick else (5000, 10000)
    net, _, f_real = _fid_reference(n_real)
    done: dict[tuple, dict[str, Any]] = {}
    samples: dict[str, torch.Tensor] = {}
    rows = []
    for c in configs:
        if c.key not in done:
            res, wall = run_training(out, c.run_name, _vae_overrides(c, quick))
            method = _load(res.run_dir)
            x = method.sample(n_fid, seed=0)
            f_fake, _ = extract(net, x)
            final = res.summary["final"]
            done[c.key] = {
                "recon": finite(final.get("test_recon")), "kl": finite(final.get("test_kl")),
                "elbo": finite(final.get("test_elbo")), "active_units": final.get("test_active_units"),
                "fid": fid(f_real, f_fake), "params": res.summary["parameters"]["model"]["total"],
                "train_s": res.summary["train_time_s"], "wall_s": wall, "run": c.run_name,
            }
            if c.beta == 1.0 and c.latent_dim == 20:  # the architecture axis: one sample grid each
                samples.setdefault(c.arch_label, x[:64])
        r = done[c.key]
        rows.append({
            "config": c.label, "axis": c.axis, "latent_dim": c.latent_dim, "beta": c.beta, "arch": c.arch_label,
            "recon": round(r["recon"], 2), "kl": round(r["kl"], 2), "elbo": round(r["elbo"], 2),
            "active_units": int(r["active_units"]) if r["active_units"] is not None else -1,
            "fid": round(r["fid"], 3), "params": int(r["params"]), "train_s": round(r["train_s"], 1),
            "course_recon": c.course_recon, "course_kl": c.course_kl, "run": r["run"],
        })
    table = pd.DataFrame(rows)
    figures = [_fig_beta(table, out / "recon_vs_kl_beta.png", quick),
               _fig_latent(table, out / "latent_dim.png", quick)]
    for label, x in samples.items():
        slug = label.lower().replace("[", "").replace("]", "").replace(", ", "-").replace(" ", "")
        figures.append(save_grid(x, out / f"samples-{slug}.png", nrow=8,
                                 title=f"VAE {label}, d=20, β=1: samples (seed 0)"))
    epochs = 1 if quick else FULL_EPOCHS
    notes = (f"Fashion-MNIST, {'1,000 training images, conv widths [16, 32, 32], ' if quick else ''}"
             f"{epochs} epoch(s) per run, Adam 1e-3, "
             "batch 128, Bernoulli likelihood (summed BCE, the course's loss; on grey levels it is a training "
             "loss, not a log-likelihood bound). recon, kl and elbo: test set, nats per image (β = 1 in the "
             "reported ELBO whatever the training β). active_units: Cov_x E[z_j|x] > 0.01. "
             f"fid: {n_fid} samples vs {n_real} test images on the shipped Fashion-MNIST feature net "
             "(its own scale, not an Inception FID). course_recon / course_kl: table 9.1 of the course, "
             "MNIST after 30 epochs (another dataset and budget: compare trends, not values). "
             "The 'MLP (512)' row is the base run.")
    return ExperimentResult(table=table, figures=figures, notes=notes,
                            extra={"epochs": epochs, "fid_samples": n_fid, "fid_real": n_real,
                                   "runs": len(done)})


def _fig_beta(table: pd.DataFrame, path: Path, quick: bool) -> Path:
    """Exercise 9.4.3: the reconstruction-KL trade-off as β varies (latent 20, MLP [512])."""
    t = table[table["axis"].isin(["base", "beta"])].drop_duplicates("beta").sort_values("beta")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for ax, (xcol, ycol, who) in zip(axes, (("kl", "recon", "profond, Fashion-MNIST"),
                                            ("course_kl", "course_recon", "course table 9.1, MNIST 30 ep.")),
                                     strict=True):
        ax.plot(t[xcol], t[ycol], "-o", color="C0" if xcol == "kl" else "C1")
        for _, r in t.iterrows():
            ax.annotate(f"β={r['beta']:g}", (r[xcol], r[ycol]), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        ax.set(xlabel="KL(q(z|x) ‖ p(z))  [nats / image]", ylabel="reconstruction (BCE) [nats / image]",
               title=who)
        ax.grid(alpha=0.3)
    fig.suptitle("β-VAE: reconstruction vs KL over β (exercise 9.4.3)" + (" — quick" if quick else ""))
    return save_figure(fig, path)


def _fig_latent(table: pd.DataFrame, path: Path, quick: bool) -> Path:
    """Recon, KL and active units against the latent dimension (β = 1, MLP [512])."""
    t = table[table["axis"].isin(["base", "latent"])].drop_duplicates("latent_dim").sort_values("latent_dim")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.0), layout="constrained")
    d = t["latent_dim"]
    for ax, col, name in ((axes[0], "recon", "reconstruction"), (axes[1], "kl", "KL")):
        ax.plot(d, t[col], "-o", label="profond (Fashion-MNIST)")
        ax.plot(d, t[f"course_{col}"], "--s", label="course (MNIST, 30 ep.)")
        ax.set(xscale="log", xlabel="latent dimension d", ylabel="nats / image", title=name)
        ax.legend(fontsize=8)
    axes[2].plot(d, t["active_units"], "-o", label="active units")
    axes[2].plot(d, d, "k:", label="all units")
    axes[2].set(xscale="log", xlabel="latent dimension d", title="active units (Cov > 0.01)")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.minorticks_off()
        ax.set_xticks(list(d), [str(v) for v in d])
    fig.suptitle("VAE: latent dimension (β = 1, MLP [512]); large d leaves units inactive (§9.9.1)"
                 + (" — quick" if quick else ""))
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# anomaly


def macro_f1(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float) -> float:
    """Mean of the F1 of both classes (anomaly and normal) when ``score > threshold`` flags an anomaly.

    With 90 % anomalies in the test set, the anomaly-class F1 alone is 0.95 for "everything is an
    anomaly"; the macro average gives that trivial rule 0.47."""
    from sklearn.metrics import f1_score

    return float(f1_score(is_anomaly, scores > threshold, average="macro", zero_division=0))


def best_macro_f1_threshold(scores: np.ndarray, is_anomaly: np.ndarray) -> tuple[float, float]:
    """The threshold (``score > t`` is an anomaly) with the best macro F1 on ``scores``, and that F1.

    Every split of the sorted scores is tried at once: predicting "anomaly" for the ``n − i``
    highest scores gives the counts of both classes from cumulative sums."""
    order = np.argsort(scores, kind="stable")
    s, a = scores[order], is_anomaly[order].astype(np.int64)
    n = len(s)
    below_a = np.concatenate([[0], np.cumsum(a)])          # anomalies among the i lowest scores
    below_n = np.arange(n + 1) - below_a                     # normals among them
    tot_a, tot_n = below_a[-1], below_n[-1]
    tp_a, fp_a, fn_a = tot_a - below_a, tot_n - below_n, below_a
    tp_n, fp_n, fn_n = below_n, below_a, tot_n - below_n
    f1_a = 2 * tp_a / np.maximum(2 * tp_a + fp_a + fn_a, 1)
    f1_n = 2 * tp_n / np.maximum(2 * tp_n + fp_n + fn_n, 1)
    macro = (f1_a + f1_n) / 2
    valid = np.ones(n + 1, bool)  # a split must fall between two different scores
    valid[1:n] = s[1:] > s[:-1]
    i = int(np.argmax(np.where(valid, macro, -1.0)))
    if i == 0:
        t = float(s[0]) - 1.0
    elif i == n:
        t = float(s[-1]) + 1.0
    else:
        t = float((s[i - 1] + s[i]) / 2)
    return t, float(macro[i])


@EXPERIMENTS.register("anomaly", help="one-class anomaly detection with an autoencoder per Fashion-MNIST class: "
                      "ROC-AUC, thresholds, test F1 (full: conv AE, 10 classes x 10 epochs, ~25 min)")
def anomaly(out: Path, quick: bool) -> ExperimentResult:
    from sklearn.metrics import precision_score, recall_score, roc_auc_score, roc_curve

    from ..data import train_val_split
    from ..viz.images import save_roc

    if quick:
        classes, val_size = [0, 1, 7], 2000
        budget = ["train.epochs=1", "data.subset=1000", "model.arch=mlp", "model.hidden=[128]",
                  "model.latent_dim=16"]
    else:
        classes, val_size = list(range(10)), 5000
        budget = [f"train.epochs={FULL_EPOCHS}", "model.arch=conv", "model.latent_dim=32"]
    rows, curves = [], {}
    vx = vy = tx = ty = None
    for c in classes:
        res, wall = run_training(out, f"ae-class{c}", [
            "model.name=ae", "method.loss=mse", f"method.normal_class={c}", f"data.val_size={val_size}", *budget])
        method = _load(res.run_dir)
        if vx is None:  # the run's seeded validation split, all classes, and the test set
            d = method.data
            _, _, vx, vy = train_val_split(d.train_x, d.train_y, val_size, seed=method.cfg.train.seed)
            vx = vx.float() / 255.0
            tx, ty = method.test_images()
        s_val = method.anomaly_scores(vx).double().numpy()
        s_test = method.anomaly_scores(tx).double().numpy()
        a_val, a_test = (vy != c).numpy(), (ty != c).numpy()
        fpr, tpr, _ = roc_curve(a_test, s_test)
        auc = float(roc_auc_score(a_test, s_test))
        thr, val_f1 = best_macro_f1_threshold(s_val, a_val)
        pred = s_test > thr
        thr_q95 = finite(res.summary["final"].get("test_threshold"))
        name = method.classes[c]
        curves[f"{c} {name}"] = (fpr, tpr, auc)
        rows.append({
            "class": str(c), "name": name, "roc_auc": round(auc, 4),
            "threshold": round(thr, 3), "val_f1": round(val_f1, 4),
            "test_f1": round(macro_f1(s_test, a_test, thr), 4),
            "test_precision": round(float(precision_score(a_test, pred, zero_division=0)), 4),
            "test_recall": round(float(recall_score(a_test, pred, zero_division=0)), 4),
            "threshold_q95": round(thr_q95, 3),
            "test_f1_q95": round(macro_f1(s_test, a_test, thr_q95), 4) if math.isfinite(thr_q95) else math.nan,
            "train_images": int(res.summary.get("train_examples") or 0),
            "train_s": round(res.summary["train_time_s"], 1),
        })
    table = pd.DataFrame(rows)
    mean = {k: round(float(table[k].mean()), 4) for k in table.columns
            if k not in ("class", "name", "threshold", "threshold_q95", "train_images")}
    table = pd.concat([table, pd.DataFrame([{"class": "mean", "name": "", **mean}])], ignore_index=True)
    arch = "MLP AE [128], latent 16" if quick else "conv AE, latent 32"
    fig = save_roc(curves, out / "roc.png",
                   title=f"one-class AE ({arch}): ROC of 'not class c' by reconstruction error, "
                         f"mean AUC {mean['roc_auc']:.3f}" + (" — quick" if quick else ""))
    notes = (f"Fashion-MNIST, {arch}, MSE loss, {'1 epoch on 1,000 normal images' if quick else f'{FULL_EPOCHS} epochs'}"
             " per class. Score = per-image reconstruction error (sum of squared pixel errors); anomaly = any "
             "other class (90% of the test set, so F1 is the macro average over anomaly and normal: the "
             "anomaly-class F1 alone rewards flagging everything). threshold / val_f1: the macro-F1-best "
             f"threshold on the seeded validation split ({val_size} images, all classes); test_f1 (macro), "
             "test_precision / test_recall (anomaly = positive) at that threshold. threshold_q95 / "
             "test_f1_q95: the one-class threshold of the autoencoder method (95% quantile of the normal "
             "validation scores, no anomaly seen).")
    return ExperimentResult(table=table, figures=[fig], notes=notes,
                            extra={"classes": classes, "arch": arch, "val_size": val_size})
