"""Optimizers and learning-rate schedules on a Fashion-MNIST MLP (course chapter 2).

Two experiments, both trained through the one loop (:func:`profond.train.train`):

``optimizers`` -- course §2.8 (optimizer ablation) and exercise 2.4: SGD, SGD+momentum
(0.9), Adam and AdamW (weight decay 0.01, as in §2.8) on the MLP (784, 512, 256, 10), each
with a learning-rate grid search over {1e-4, 1e-3, 1e-2, 1e-1}, 10 epochs on the whole
training set. Table: optimizer, lr, final train loss, validation and test accuracy, time.
Figure: the loss curves of each optimizer at its best lr (by validation accuracy) and a
heatmap of the validation accuracy over (optimizer x lr).

``schedules`` -- course §2.5: constant, step (§2.5.1, eta_0 gamma^floor(t/T)), cosine
(§2.5.2), linear warm-up + cosine (§2.5.3) and one-cycle (the ``OneCycleLR`` of the §2.5
code listing) with the same optimizer (AdamW, lr 1e-3, weight decay 0.01: the optimizer of
the §2.5 listing). Table: final accuracy per schedule. Figure: the LR curve of each
schedule (computed by :func:`profond.train.schedules.lr_curve`, i.e. by the real
scheduler) and the accuracy bars.

``--quick`` (CI-sized, seconds on 2 cores): a 2,000-image subset, 500 validation images,
an MLP (784, 64, 10), 2 epochs, and for ``optimizers`` the reduced grid {1e-3, 1e-2, 1e-1}.
The test set is evaluated at the end of every run by :func:`~profond.train.train` anyway
(it is cheap for the small MLP), so the table reports both validation and test accuracy.
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

from ..config import SchedConfig, resolve  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, run_row, run_training  # noqa: E402

#: exercise 2.4's learning-rate grid, and the reduced one of ``--quick``
LR_GRID = [1e-4, 1e-3, 1e-2, 1e-1]
LR_GRID_QUICK = [1e-3, 1e-2, 1e-1]

#: the four optimizers of §2.8: label -> config overrides (AdamW's decay is the course's 0.01)
OPTIMIZERS: dict[str, list[str]] = {
    "SGD": ["optim.name=sgd", "optim.momentum=0.0"],
    "SGD+Momentum": ["optim.name=sgd", "optim.momentum=0.9"],
    "Adam": ["optim.name=adam"],
    "AdamW": ["optim.name=adamw", "optim.weight_decay=0.01"],
}

SCHEDULE_NAMES = ["constant", "step", "cosine", "warmup-cosine", "onecycle"]
#: the optimizer shared by every schedule (the one of the §2.5 listing)
SCHEDULE_OPTIM = ["optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.01"]


def _budget(quick: bool) -> dict[str, Any]:
    """Data / model / length of a run: the course's settings, or the CI-sized ones."""
    if quick:
        return {"epochs": 2, "widths": [64],
                "data": ["data.subset=2000", "data.val_size=500"]}
    return {"epochs": 10, "widths": [512, 256], "data": []}  # exercise 2.4's MLP, full set


def _run(out: Path, name: str, quick: bool, overrides: list[str]) -> tuple[Any, float]:
    """One training run through the loop; returns (RunResult, wall seconds)."""
    b = _budget(quick)
    widths = ",".join(str(w) for w in b["widths"])
    return run_training(out, name, [f"model.widths=[{widths}]", f"train.epochs={b['epochs']}",
                                    *b["data"], *overrides])


# --------------------------------------------------------------------------- optimizers
@EXPERIMENTS.register("optimizers", help="SGD / SGD+momentum / Adam / AdamW x lr grid (course §2.8, exercise 2.4)")
def optimizers(out: Path, quick: bool) -> ExperimentResult:
    grid = LR_GRID_QUICK if quick else LR_GRID
    rows, histories = [], {}
    for opt_name, opt_overrides in OPTIMIZERS.items():
        for lr in grid:
            run_name = f"{opt_name.lower().replace('+', '-')}-lr{lr:g}"
            res, wall = _run(out, run_name, quick, [*opt_overrides, f"optim.lr={lr}"])
            histories[(opt_name, lr)] = res.history
            rows.append({
                "optimizer": opt_name, "lr": lr,
                **run_row(res, wall),
            })
    table = pd.DataFrame(rows)

    # best lr per optimizer, by validation accuracy (NaN = diverged, never best)
    best = {}
    for opt_name, group in table.groupby("optimizer", sort=False):
        g = group.dropna(subset=["val_accuracy"])
        best[opt_name] = float(g.loc[g["val_accuracy"].idxmax(), "lr"]) if len(g) else float(group["lr"].iloc[0])

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, (opt_name, lr) in enumerate(best.items()):
        hist = histories[(opt_name, lr)]
        ep = [r["epoch"] for r in hist]
        color = f"C{i}"
        axes[0].plot(ep, [r.get("train_loss", math.nan) for r in hist], "-o", color=color,
                     label=f"{opt_name} (lr {lr:g})")
        axes[0].plot(ep, [r.get("val_loss", math.nan) for r in hist], "--", color=color)
        axes[1].plot(ep, [r.get("val_accuracy", math.nan) for r in hist], "-o", color=color,
                     label=f"{opt_name} (lr {lr:g})")
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss at the best lr (solid: train, dashed: val)")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="validation accuracy at the best lr")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    heat = table.pivot(index="optimizer", columns="lr", values="val_accuracy").reindex(list(OPTIMIZERS))
    im = axes[2].imshow(heat.to_numpy(dtype=float), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    axes[2].set_xticks(range(len(heat.columns)), [f"{c:g}" for c in heat.columns])
    axes[2].set_yticks(range(len(heat.index)), list(heat.index))
    for (r, c), v in np.ndenumerate(heat.to_numpy(dtype=float)):
        axes[2].text(c, r, "diverged" if math.isnan(v) else f"{v:.3f}", ha="center", va="center",
                     color="white" if math.isnan(v) or v < 0.6 else "black", fontsize=8)
    axes[2].set(xlabel="learning rate", title="validation accuracy (optimizer x lr)")
    fig.colorbar(im, ax=axes[2])
    fig.suptitle("Fashion-MNIST MLP: optimizers (course §2.8, exercise 2.4)" + (" — quick" if quick else ""))
    fig_path = save_figure(fig, out / "optimizers.png")

    notes = "Best lr per optimizer (validation accuracy): " + ", ".join(f"{k} {v:g}" for k, v in best.items())
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"best_lr": best, "lr_grid": grid})


# --------------------------------------------------------------------------- schedules
def schedule_overrides(name: str, quick: bool) -> list[str]:
    """``sched.*`` settings of schedule ``name`` for the run length of ``quick``.

    The step decay divides the LR by 10 (gamma 0.1, as in §2.5.1) after 30 % of the epochs
    (the course's T = 30 of 100 epochs); the warm-up of §2.5.3 lasts 10 % of the run.
    """
    epochs = _budget(quick)["epochs"]
    ov = [f"sched.name={name}"]
    if name == "step":
        ov += [f"sched.step_epochs={max(1, round(0.3 * epochs))}", "sched.gamma=0.1"]
    if name == "warmup-cosine":
        ov += [f"sched.warmup_epochs={0.1 * epochs:g}" if not quick else "sched.warmup_epochs=0.5"]
    return ov


def schedule_curves(quick: bool, steps_per_epoch: int, base_lr: float = 1e-3) -> dict[str, list[float]]:
    """The per-step LR of every schedule, from the real scheduler (``lr_curve``)."""
    from ..train.schedules import lr_curve

    epochs = _budget(quick)["epochs"]
    curves = {}
    for name in SCHEDULE_NAMES:
        cfg = resolve(overrides=schedule_overrides(name, quick))
        sc: SchedConfig = cfg.sched
        curves[name] = lr_curve(sc, steps_per_epoch, epochs, base_lr)
    return curves


@EXPERIMENTS.register("schedules", help="constant / step / cosine / warmup-cosine / onecycle LR schedules (course §2.5)")
def schedules(out: Path, quick: bool) -> ExperimentResult:
    rows, steps_per_epoch = [], None
    epochs = _budget(quick)["epochs"]
    for name in SCHEDULE_NAMES:
        res, wall = _run(out, f"sched-{name}", quick, [*SCHEDULE_OPTIM, *schedule_overrides(name, quick)])
        steps_per_epoch = res.history[-1]["step"] // epochs
        rows.append({
            "schedule": name,
            **run_row(res, wall),
            "final_lr": res.history[-1]["lr"],
        })
    table = pd.DataFrame(rows)

    curves = schedule_curves(quick, steps_per_epoch)
    pd.DataFrame({"iteration": range(len(next(iter(curves.values())))), **curves}).to_csv(
        out / "lr_curves.csv", index=False)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, (name, curve) in enumerate(curves.items()):
        axes[0].plot(np.arange(len(curve)) / steps_per_epoch, curve, color=f"C{i}", label=name)
    axes[0].set(xlabel="epoch", ylabel="learning rate", title="LR per optimizer step (AdamW, lr 1e-3)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    x = np.arange(len(table))
    axes[1].bar(x, table["test_accuracy"], color=[f"C{i}" for i in x])
    for i, v in enumerate(table["test_accuracy"]):
        axes[1].text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    axes[1].set_xticks(x, table["schedule"], fontsize=8)
    lo = max(0.0, float(np.nanmin(table["test_accuracy"])) - 0.1)
    axes[1].set(ylim=(lo, 1.0), ylabel="test accuracy", title="final test accuracy")
    fig.suptitle("Fashion-MNIST MLP: learning-rate schedules (course §2.5)" + (" — quick" if quick else ""))
    fig_path = save_figure(fig, out / "schedules.png")

    return ExperimentResult(table=table, figures=[fig_path],
                            extra={"steps_per_epoch": steps_per_epoch, "epochs": epochs})
