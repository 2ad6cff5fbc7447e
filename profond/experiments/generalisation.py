"""The generalisation puzzle (issue 19, course §11.1-11.3): ``random-labels``.

Course claim (§11.1-11.3, remark 11.3 and the "Attention" box after eq. 11.4): the classical
capacity measures (log |H| in eq. 11.2, the VC dimension of eq. 11.3, O(WL log W)) are vacuous
for neural networks; Zhang et al. (2017, "Understanding deep learning requires rethinking
generalization") showed why no measure of the *architecture* alone can explain generalisation:
the same network that generalises on true labels fits random labels and noise images perfectly.

An MLP (``mlp``) and a CNN (``fmnist-cnn``, no dropout) are trained through the one loop on the
training split corrupted by ``data.corrupt`` (:mod:`profond.data.corrupt`; validation and test
stay clean): true labels, random labels (all of them), shuffled pixels (one permutation for all
images), random pixels (a permutation per image) and Gaussian images. Each run stops at the end
of the first epoch whose training accuracy, measured in eval mode on the whole (corrupted)
training split, reaches ``FIT`` (99.9 %), or at the epoch cap.

Table, one row per (model, corruption): epochs and optimizer steps to fit (NaN: not fitted
within the cap), the final training accuracy (eval mode), the clean test accuracy, the
parameter count (identical within a model: it is the capacity measure that cannot separate the
rows) and the L2 norm of the final weights (a data-dependent measure; its spread is reported, not
assumed). For shuffled pixels the test accuracy is measured on clean test images (the brief keeps
the test data clean), so it is low for a reason other than memorisation; ``test_acc_permuted``
applies the same permutation to the test images (Zhang et al.'s setting, where a fixed
permutation leaves an MLP's task unchanged). Figure: training accuracy (the running mean of the
epoch's batches, ``train_accuracy`` of the run's history) against epoch per corruption, one panel
per model. Claims judged: both nets fit random labels (final train accuracy >= 0.99); random labels
take longer to fit than true labels (both nets); test accuracy on random labels is at chance
(within two binomial standard errors + 0.02 of 1/10).

Budgets: ``--quick`` (CI, 1 thread): 300 training images of sklearn digits (8x8; 359 test
images; no validation split), MLP [512], CNN width 8, Adam 3e-3, batch 50, at most 150 epochs;
full: a 5,000-image Fashion-MNIST subset,
MLP [512, 512], CNN width 16, Adam 1e-3, batch 128, at most 100 epochs (2 threads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..contract import Callback  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, finite, num_threads, run_training, two_se, verdict  # noqa: E402

#: training accuracy (eval mode, whole training split) at which a run counts as fitted and stops
FIT = 0.999
CORRUPTIONS = ("none", "random-labels", "shuffled-pixels", "random-pixels", "gaussian")
CHANCE = 0.1


@dataclass(frozen=True)
class Budget:
    dataset: str
    subset: int | None
    val_size: int
    mlp_widths: str
    cnn_width: int
    lr: float
    batch: int
    max_epochs: int
    threads: int


QUICK = Budget("digits", 300, 0, "[512]", 8, 3e-3, 50, 150, 1)
FULL = Budget("fashion-mnist", 5000, 1000, "[512,512]", 16, 1e-3, 128, 100, 2)


class FitMonitor(Callback):
    """Measures the training accuracy in eval mode on the whole (corrupted) training split at the
    end of each epoch, stops the run once it reaches ``fit``; at the end, the test accuracy on
    test images shuffled by the training split's fixed pixel permutation (``permute_seed``)."""

    def __init__(self, fit: float, permute_seed: int | None = None):
        self.fit, self.permute_seed = fit, permute_seed
        self.train_acc: list[float] = []
        self.fitted_epoch: int | None = None
        self.fitted_step: int | None = None
        self.test_acc_permuted = math.nan
        self.weight_norm = math.nan
        self.params = 0

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        acc = float(loop.evaluate(loop.method.train_data)["accuracy"])
        self.train_acc.append(acc)
        if acc >= self.fit and self.fitted_epoch is None:
            self.fitted_epoch, self.fitted_step = epoch + 1, int(metrics["step"])
            loop.should_stop = True

    def on_train_end(self, loop: Any) -> None:
        model = loop.method.raw_nets.get("model", loop.method.nets["model"])  # unwrapped (DDP, compile)
        self.params = sum(p.numel() for p in model.parameters())
        self.weight_norm = float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in model.parameters())))
        if self.permute_seed is None:
            return
        from ..data.corrupt import pixel_permutation
        from ..methods.imagedata import eval_loader

        d, m = loop.method.data, loop.method
        n, c, h, w = d.test_x.shape
        tx = d.test_x.reshape(n, c, h * w)[:, :, pixel_permutation(h * w, self.permute_seed)].reshape(n, c, h, w)
        batches = eval_loader(loop.cfg, loop.env, tx, d.test_y, norm=m._norm(), num_classes=len(m.classes))
        self.test_acc_permuted = float(loop.evaluate(batches)["accuracy"])


def model_overrides(model: str, b: Budget) -> list[str]:
    if model == "mlp":
        return ["model.name=mlp", f"model.widths={b.mlp_widths}"]
    return ["model.name=fmnist-cnn", f"model.width={b.cnn_width}", "model.dropout=0"]


def fit_run(out: Path, model: str, kind: str, b: Budget) -> tuple[dict[str, Any], list[float]]:
    """One training run of ``model`` on the ``kind``-corrupted training split: its table row and
    its per-epoch training accuracy (running mean over the epoch's batches)."""
    mon = FitMonitor(FIT, permute_seed=0 if kind == "shuffled-pixels" else None)
    res, wall = run_training(out, f"{model}-{kind}", [
        *model_overrides(model, b), f"data.name={b.dataset}", f"data.val_size={b.val_size}",
        *([f"data.subset={b.subset}"] if b.subset else []), f"data.batch_size={b.batch}",
        f"data.corrupt={kind}", "data.corrupt_fraction=1.0", f"optim.lr={b.lr}",
        f"train.epochs={b.max_epochs}", f"train.threads={b.threads}", "train.seed=0",
        "train.keep_last=1",
    ], callbacks=[mon])
    final = res.summary["final"]
    row = {
        "model": model, "corruption": kind,
        "fitted": mon.fitted_epoch is not None,
        "epochs_to_fit": mon.fitted_epoch if mon.fitted_epoch is not None else math.nan,
        "steps_to_fit": mon.fitted_step if mon.fitted_step is not None else math.nan,
        "epochs_run": len(res.history),
        "train_acc": round(mon.train_acc[-1], 4) if mon.train_acc else math.nan,
        "test_acc": round(finite(final.get("test_accuracy")), 4),
        "test_acc_permuted": round(mon.test_acc_permuted, 4),
        "params": mon.params,
        "n_test": int(res.summary.get("test_examples") or 0),
        "weight_norm": round(mon.weight_norm, 2),
        "train_s": round(res.summary["train_time_s"], 2), "wall_s": round(wall, 2),
    }
    curve = [finite(r.get("train_accuracy")) for r in res.history]
    return row, curve


@EXPERIMENTS.register("random-labels", help="nets fit random labels and noise images, capacity does not "
                      "separate them (Zhang et al. 2017; course §11.1-11.3)")
def random_labels(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    rows, curves = [], {}
    with num_threads(b.threads):
        for model in ("mlp", "cnn"):
            for kind in CORRUPTIONS:
                row, curve = fit_run(out, model, kind, b)
                rows.append(row)
                curves[(model, kind)] = curve
    table = pd.DataFrame(rows)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for ax, model in zip(axes, ("mlp", "cnn"), strict=True):
        for kind in CORRUPTIONS:
            c = curves[(model, kind)]
            ax.plot(range(1, len(c) + 1), c, label=kind)
        ax.axhline(CHANCE, color="gray", ls=":", lw=1)
        ax.set_xlabel("epoch")
        ax.set_title(f"{model}: training accuracy ({b.dataset})")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("train accuracy (epoch running mean)")
    fig_path = save_figure(fig, out / "random_labels_train_acc.png")

    def get(model: str, kind: str, col: str) -> Any:
        return table[(table["model"] == model) & (table["corruption"] == kind)][col].iloc[0]

    fit_rl = all(get(m, "random-labels", "train_acc") >= 0.99 for m in ("mlp", "cnn"))
    slower = all(get(m, "random-labels", "fitted") and get(m, "none", "fitted")
                 and get(m, "random-labels", "steps_to_fit") > get(m, "none", "steps_to_fit") for m in ("mlp", "cnn"))
    margin = two_se(CHANCE, int(table["n_test"].min())) + 0.02
    chance = all(abs(get(m, "random-labels", "test_acc") - CHANCE) <= margin for m in ("mlp", "cnn"))
    claims = {
        "both_nets_fit_random_labels": verdict(fit_rl),
        "random_labels_take_longer_to_fit": verdict(slower),
        "random_labels_test_acc_at_chance": verdict(chance),
    }
    spread = {m: round(float(table[table["model"] == m]["weight_norm"].max()
                             / table[table["model"] == m]["weight_norm"].min()), 3) for m in ("mlp", "cnn")}
    notes_lines = [
        f"Stop rule: training accuracy (eval mode, whole corrupted training split) >= {FIT}; cap {b.max_epochs} epochs.",
        f"- both nets fit random labels (train acc >= 0.99): **{claims['both_nets_fit_random_labels']}** "
        f"(mlp {get('mlp', 'random-labels', 'train_acc')}, cnn {get('cnn', 'random-labels', 'train_acc')})",
        f"- random labels take longer to fit than true labels: **{claims['random_labels_take_longer_to_fit']}** "
        f"(steps mlp {get('mlp', 'none', 'steps_to_fit')} -> {get('mlp', 'random-labels', 'steps_to_fit')}, "
        f"cnn {get('cnn', 'none', 'steps_to_fit')} -> {get('cnn', 'random-labels', 'steps_to_fit')})",
        f"- test accuracy on random labels is at chance (|acc - 0.1| <= {margin:.3f}): "
        f"**{claims['random_labels_test_acc_at_chance']}** (mlp {get('mlp', 'random-labels', 'test_acc')}, "
        f"cnn {get('cnn', 'random-labels', 'test_acc')})",
        f"- parameter count: the same for every row of a model; max/min weight norm across the rows: {spread} "
        f"(test accuracy: {table['test_acc'].min():.3f} to {table['test_acc'].max():.3f}).",
        "Shuffled pixels: test_acc on clean test images; test_acc_permuted with the same permutation.",
    ]
    return ExperimentResult(table=table, figures=[fig_path], notes="\n".join(notes_lines),
                            extra={"claims": claims, "weight_norm_ratio": spread, "fit_threshold": FIT})
