"""Gradient flow, normalization and regularizers on a Fashion-MNIST MLP (course §2.6, chapter 3).

Three experiments, every run trained through the one loop (:func:`profond.train.train`):

``activations`` -- course §2.6 (vanishing gradients: "|σ'(z)| ≤ 1/4, the product decays
exponentially with L − ℓ"). A 20-layer MLP (19 hidden layers of width 64 in ``--quick``,
128 in full) for sigmoid, tanh, relu, leaky_relu and gelu, each with its recommended
initialisation (§1.5: Xavier for sigmoid / tanh, He for the ReLU family): the gradient norm
of each Linear weight on one batch at initialisation (one manual backward) and after training
(the run's weights reloaded with :func:`profond.models.transfer.load_weights`), plus the test
accuracy. Figure: log gradient norm vs layer index (init and trained).

``normalization`` -- course §3.5-3.6 and exercise 3.4 (3: convergence with and without
BatchNorm): no norm vs BatchNorm vs LayerNorm (validation accuracy per epoch), and BatchNorm
with batch size {4, 16, 64, 256} (Remarque 3.6: BatchNorm depends on the batch). The
batch-size sweep runs on a 10,000-image subset in full mode (batch 4 over 60k images is slow).

``regularizers`` -- course §3.2-3.8: none, L2 (weight decay, eq. 3.3: with SGD it *is* the L2
gradient), L1 (§3.3, ``method.l1``), dropout (§3.4), augmentation crop:2+flip (§3.7.1), mixup
α=0.2 (§3.7.2), cutmix α=1 (§3.7.3), label smoothing 0.1 and early stopping (§3.8, patience 2),
all with SGD momentum 0.9, lr 0.05. Table: test accuracy and the fraction of first-layer weights
with |w| < 1e-2; figure: accuracy bars and the first-layer weight histograms of none / L1 / L2
(Remarque 3.3: L1 gives sparse solutions, L2 only shrinks).

``--quick``: a 2,000-image subset, 500 validation images, 1-2 epochs, small widths.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..registry import EXPERIMENTS, MODELS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, finite, run_training  # noqa: E402

QUICK_DATA = ["data.subset=2000", "data.val_size=500"]

#: §2.6 activations, each with its recommended init (§1.5)
ACTIVATIONS: dict[str, str] = {
    "sigmoid": "xavier_normal", "tanh": "xavier_normal",
    "relu": "he", "leaky_relu": "he", "gelu": "he",
}
DEPTH = 20  # Linear layers: DEPTH - 1 hidden + the head

NORMS = ["none", "batchnorm", "layernorm"]
BATCH_SIZES = [4, 16, 64, 256]
BATCH_SIZES_QUICK = [16, 256]

#: shared optimizer of ``regularizers`` (the one where L1 visibly sparsifies)
REG_OPTIM = ["optim.name=sgd", "optim.momentum=0.9", "optim.lr=0.05"]
REGULARIZERS: dict[str, list[str]] = {
    "none": [],
    "L2": ["optim.weight_decay=0.0005"],
    "L1": ["method.l1=0.001"],
    "dropout": ["model.dropout=0.3"],
    "augment": ["data.augment=[crop:2,flip]"],
    "mixup": ["data.mixup_alpha=0.2"],
    "cutmix": ["data.cutmix_alpha=1.0"],
    "label_smoothing": ["method.label_smoothing=0.1"],
    "early_stop": ["train.early_stop.patience=2", "train.early_stop.monitor=val_loss"],
}
REGULARIZERS_QUICK = ["none", "L2", "L1", "dropout", "mixup", "label_smoothing"]
NEAR_ZERO = 1e-2


def _run(out: Path, name: str, overrides: list[str]) -> tuple[Any, float]:
    """One training run through the loop; returns (RunResult, wall seconds)."""
    return run_training(out, name, overrides)


def _widths_arg(widths: list[int]) -> str:
    return "model.widths=[" + ",".join(str(w) for w in widths) + "]"


def _load_trained(run_dir: Path, **model_args: Any) -> nn.Module:
    from ..models.transfer import load_weights

    model = MODELS.build("mlp", **model_args)
    load_weights(model, str(run_dir))
    return model


def _grad_batch(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised Fashion-MNIST training images and their labels."""
    from ..data.vision import load_dataset

    data = load_dataset("fashion-mnist", progress=False)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train_x), generator=g)[:n]
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    x = (data.train_x[idx].float() / 255.0 - mean) / std
    return x, data.train_y[idx]


def layer_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """‖∂L/∂W^(ℓ)‖ of every Linear weight (input to output) after one backward (§2.6)."""
    model.train()  # no norm / dropout here, but be explicit
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return [float(m.weight.grad.norm()) for m in model.modules() if isinstance(m, nn.Linear)]


def first_layer_weights(model: nn.Module) -> np.ndarray:
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    return first.weight.detach().flatten().numpy()


# --------------------------------------------------------------------------- activations
@EXPERIMENTS.register("activations", help="per-layer gradient norms of a 20-layer MLP per activation (course §2.6)")
def activations(out: Path, quick: bool) -> ExperimentResult:
    width = 64 if quick else 128
    widths = [width] * (DEPTH - 1)
    budget = ["train.epochs=1", *QUICK_DATA] if quick else ["train.epochs=5"]
    x, y = _grad_batch()
    rows, norms = [], {}
    for act, init in ACTIVATIONS.items():
        args = {"widths": widths, "activation": act, "init": init}
        torch.manual_seed(0)
        g_init = layer_grad_norms(MODELS.build("mlp", **args), x, y)
        res, wall = _run(out, f"act-{act}", [
            _widths_arg(widths), f"model.activation={act}", f"model.init={init}", *budget])
        g_trained = layer_grad_norms(_load_trained(res.run_dir, **args), x, y)
        norms[act] = (g_init, g_trained)
        final = res.summary["final"]
        rows.append({
            "activation": act, "init": init,
            "grad_first_init": g_init[0], "grad_last_init": g_init[-1],
            "ratio_first_last_init": g_init[0] / g_init[-1],
            "ratio_first_last_trained": g_trained[0] / g_trained[-1],
            "test_accuracy": round(finite(final.get("test_accuracy")), 4),
            "wall_s": round(wall, 2),
        })
    table = pd.DataFrame(rows)
    pd.DataFrame([{"activation": a, "stage": s, "layer": i + 1, "grad_norm": v}
                  for a, (gi, gt) in norms.items() for s, g in (("init", gi), ("trained", gt))
                  for i, v in enumerate(g)]).to_csv(out / "grad_norms.csv", index=False)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for i, (act, (gi, gt)) in enumerate(norms.items()):
        layers = np.arange(1, len(gi) + 1)
        axes[0].semilogy(layers, gi, "-o", ms=3, color=f"C{i}", label=act)
        axes[1].semilogy(layers, gt, "-o", ms=3, color=f"C{i}", label=act)
    for ax, title in zip(axes, ("at initialisation", "after training"), strict=True):
        ax.set(xlabel="layer index (1 = input side)", title=f"‖∂L/∂W‖ per layer, {title}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("gradient norm (log)")
    fig.suptitle(f"{DEPTH}-layer MLP (width {width}) on Fashion-MNIST: vanishing gradients "
                 "(course §2.6)" + (" — quick" if quick else ""))
    fig_path = save_figure(fig, out / "activations.png")
    notes = ("ratio = ‖∂L/∂W^(1)‖ / ‖∂L/∂W^(L)‖ on one batch of 256 images; sigmoid's "
             "|σ'| ≤ 1/4 makes it vanish exponentially with depth (§2.6.1).")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"depth": DEPTH, "width": width})


# --------------------------------------------------------------------------- normalization
@EXPERIMENTS.register("normalization", help="none / BatchNorm / LayerNorm and BatchNorm x batch size (course §3.5-3.6, ex. 3.4)")
def normalization(out: Path, quick: bool) -> ExperimentResult:
    if quick:
        widths, epochs, data = [64, 64], 2, QUICK_DATA
        bs_list, bs_epochs, bs_data = BATCH_SIZES_QUICK, 1, ["data.subset=1000", "data.val_size=500"]
    else:
        widths, epochs, data = [512, 256], 10, []
        bs_list, bs_epochs, bs_data = BATCH_SIZES, 5, ["data.subset=10000"]
    rows, curves = [], {}
    for norm in NORMS:
        res, wall = _run(out, f"norm-{norm}", [
            _widths_arg(widths), f"model.norm={norm}", f"train.epochs={epochs}", *data])
        final = res.summary["final"]
        curves[norm] = [(r["epoch"], r.get("val_accuracy", math.nan)) for r in res.history]
        rows.append({
            "sweep": "norm", "norm": norm, "batch_size": 128, "epochs": epochs,
            "val_acc_epoch1": round(finite(res.history[0].get("val_accuracy")), 4),
            "val_accuracy": round(finite(final.get("val_accuracy")), 4),
            "test_accuracy": round(finite(final.get("test_accuracy")), 4),
            "wall_s": round(wall, 2),
        })
    for bs in bs_list:
        res, wall = _run(out, f"bn-bs{bs}", [
            _widths_arg(widths), "model.norm=batchnorm", f"data.batch_size={bs}",
            f"train.epochs={bs_epochs}", *bs_data])
        final = res.summary["final"]
        rows.append({
            "sweep": "batch_size", "norm": "batchnorm", "batch_size": bs, "epochs": bs_epochs,
            "val_acc_epoch1": round(finite(res.history[0].get("val_accuracy")), 4),
            "val_accuracy": round(finite(final.get("val_accuracy")), 4),
            "test_accuracy": round(finite(final.get("test_accuracy")), 4),
            "wall_s": round(wall, 2),
        })
    table = pd.DataFrame(rows)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, (norm, c) in enumerate(curves.items()):
        axes[0].plot([e for e, _ in c], [a for _, a in c], "-o", color=f"C{i}", label=norm)
    axes[0].set(xlabel="epoch", ylabel="validation accuracy",
                title="convergence: none / BatchNorm / LayerNorm (ex. 3.4)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    bs_t = table[table.sweep == "batch_size"]
    xs = np.arange(len(bs_t))
    axes[1].bar(xs, bs_t["test_accuracy"], color=[f"C{i}" for i in xs])
    for i, v in enumerate(bs_t["test_accuracy"]):
        axes[1].text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    axes[1].set_xticks(xs, [str(b) for b in bs_t["batch_size"]])
    axes[1].set(xlabel="batch size", ylabel="test accuracy", ylim=(0, 1),
                title=f"BatchNorm vs batch size ({bs_epochs} epoch(s), subset)")
    fig.suptitle("Fashion-MNIST MLP: normalization (course §3.5-3.6)" + (" — quick" if quick else ""))
    fig_path = save_figure(fig, out / "normalization.png")
    notes = (f"Batch-size sweep on a {bs_data[0].split('=')[1]}-image subset, {bs_epochs} epoch(s) "
             "(batch 4 over 60k images is too slow); Adam lr 1e-3 for every run.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes)


# --------------------------------------------------------------------------- regularizers
@EXPERIMENTS.register("regularizers", help="L2 / L1 / dropout / augmentation / mixup / cutmix / label smoothing / early stopping (course §3.2-3.8)")
def regularizers(out: Path, quick: bool) -> ExperimentResult:
    if quick:
        widths, epochs, data, names = [64], 2, QUICK_DATA, REGULARIZERS_QUICK
    else:
        widths, epochs, data, names = [256, 128], 15, [], list(REGULARIZERS)
    rows, weights = [], {}
    for name in names:
        ov = REGULARIZERS[name]
        res, wall = _run(out, f"reg-{name}", [
            _widths_arg(widths), f"train.epochs={epochs}", *REG_OPTIM, *data, *ov])
        args: dict[str, Any] = {"widths": widths}
        if name == "dropout":
            args["dropout"] = 0.3
        w = first_layer_weights(_load_trained(res.run_dir, **args))
        if name in ("none", "L1", "L2"):
            weights[name] = w
        final = res.summary["final"]
        rows.append({
            "regularizer": name, "overrides": " ".join(ov) or "-",
            "epochs_run": len(res.history),
            "train_loss": round(finite(final.get("train_loss")), 4),
            "val_accuracy": round(finite(final.get("val_accuracy")), 4),
            "test_accuracy": round(finite(final.get("test_accuracy")), 4),
            "near_zero_frac": round(float(np.mean(np.abs(w) < NEAR_ZERO)), 4),
            "mean_abs_w": round(float(np.mean(np.abs(w))), 5),
            "wall_s": round(wall, 2),
        })
    table = pd.DataFrame(rows)

    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    xs = np.arange(len(table))
    axes[0].bar(xs, table["test_accuracy"], color=[f"C{i % 10}" for i in xs])
    for i, v in enumerate(table["test_accuracy"]):
        axes[0].text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=7)
    axes[0].set_xticks(xs, table["regularizer"], rotation=30, fontsize=8)
    lo = max(0.0, float(np.nanmin(table["test_accuracy"])) - 0.1)
    axes[0].set(ylim=(lo, 1.0), ylabel="test accuracy", title="test accuracy per regularizer")
    lim = max(float(np.abs(w).max()) for w in weights.values())
    bins = np.linspace(-lim, lim, 101)
    for i, (name, w) in enumerate(weights.items()):
        frac = np.mean(np.abs(w) < NEAR_ZERO)
        axes[1].hist(w, bins=bins, histtype="step", lw=1.5, color=f"C{i}",
                     label=f"{name} (|w|<{NEAR_ZERO:g}: {frac:.2f})")
    axes[1].set_yscale("log")
    axes[1].set(xlabel="first-layer weight", ylabel="count (log)",
                title="first-layer weights: L1 sparsifies, L2 shrinks (§3.3)")
    axes[1].legend(fontsize=8)
    fig.suptitle("Fashion-MNIST MLP: regularizers, SGD momentum 0.9 lr 0.05 (course ch. 3)"
                 + (" — quick" if quick else ""))
    fig_path = save_figure(fig, out / "regularizers.png")
    notes = (f"near_zero_frac: fraction of first-layer weights with |w| < {NEAR_ZERO:g}. "
             "L2 = optim.weight_decay with SGD, i.e. the gradient λθ of eq. 3.3.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"variants": names})
