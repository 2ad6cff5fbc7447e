"""Capacity and regularisation ablations on a Fashion-MNIST MLP (course §1.7, §3.11).

Two experiments, both trained through the one loop (:func:`profond.train.train`):

``width-depth`` -- course §1.7 (width / depth ablation) and exercise 1.4: MLPs with 1 to 6
hidden layers, all of the same width in {32, 64, 128, 256, 512}, Adam (lr 1e-3), 5 epochs on
the whole training set (the full grid is a long, hours-scale CPU run). The parameter count
of each net is the real one of the built model (``sum(p.numel())``, as the §1.7 listing does).
Table: depth, width, params, validation and test accuracy, time. Figure: the heatmap of exercise
1.4 (test accuracy over depth x width), each cell annotated with its parameter count.

``dropout-wd`` -- the §3.11 ablation table: dropout {0, 0.1, 0.3, 0.5, 0.7} x weight decay
{0, 1e-5, 1e-4, 1e-3, 1e-2} with AdamW (lr 1e-3, decoupled weight decay, as the §3.11
listing) on the MLP (784, 256, 128, 10) with dropout after each hidden activation (§3.4).
The course trains 20 epochs per cell; the full mode here trains 5 (a quarter of the cost,
no ``--set`` needed). Table: the course's layout (rows dropout, columns weight decay, cells test accuracy) is
written to ``pivot.csv`` / ``pivot.md`` and appended to ``table.md``; ``table.csv`` is the
long table (one row per grid point). Figure: the heatmap of test accuracy over (dropout x weight decay).

``--quick`` (CI-sized, seconds on 2 cores): a 2,000-image subset, 500 validation images,
1 epoch, and the reduced grids depth {1, 3} x width {32, 128} and dropout {0, 0.5} x weight
decay {0, 1e-2}. The test set (10,000 images) is evaluated at the end of every run by
:func:`~profond.train.train`.
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

from ..base.io import atomic_write_text  # noqa: E402
from ..registry import EXPERIMENTS, MODELS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, run_row, run_training, to_markdown  # noqa: E402

#: exercise 1.4's grid (1 to 6 layers, width 32 to 512), and the reduced one of ``--quick``
DEPTHS = [1, 2, 3, 4, 5, 6]
WIDTHS = [32, 64, 128, 256, 512]
DEPTHS_QUICK = [1, 3]
WIDTHS_QUICK = [32, 128]

#: the §3.11 grid, and the reduced one of ``--quick``
DROPOUTS = [0.0, 0.1, 0.3, 0.5, 0.7]
WEIGHT_DECAYS = [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
DROPOUTS_QUICK = [0.0, 0.5]
WEIGHT_DECAYS_QUICK = [0.0, 1e-2]
#: the MLP of the dropout x weight-decay ablation (the course's 784-256-128-10 net)
REG_WIDTHS = [256, 128]


def _budget(quick: bool) -> dict[str, Any]:
    """Data / length of a run: the full-mode settings, or the CI-sized ones."""
    if quick:
        return {"epochs": 1, "data": ["data.subset=2000", "data.val_size=500"]}
    return {"epochs": 5, "data": []}


def _run(out: Path, name: str, quick: bool, overrides: list[str]) -> tuple[Any, float]:
    """One training run through the loop; returns (RunResult, wall seconds)."""
    b = _budget(quick)
    return run_training(out, name, ["optim.lr=0.001", f"train.epochs={b['epochs']}", *b["data"], *overrides])


def _widths_arg(widths: list[int]) -> str:
    return "[" + ",".join(str(w) for w in widths) + "]"


def param_count(depth: int, width: int) -> int:
    """Parameters of ``MODELS.build("mlp")`` with ``depth`` hidden layers of ``width`` units."""
    model = MODELS.build("mlp", widths=[width] * depth)
    return sum(p.numel() for p in model.parameters())


def _heatmap(ax: Any, values: np.ndarray, labels: np.ndarray | None, xticks: list[str],
             yticks: list[str]) -> Any:
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if hi - lo < 1e-3:
        lo, hi = lo - 0.01, hi + 0.01
    im = ax.imshow(values, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
    ax.set_xticks(range(len(xticks)), xticks)
    ax.set_yticks(range(len(yticks)), yticks)
    mid = (lo + hi) / 2
    for (r, c), v in np.ndenumerate(values):
        text = "n/a" if math.isnan(v) else f"{v:.3f}"
        if labels is not None:
            text += f"\n{labels[r, c]}"
        ax.text(c, r, text, ha="center", va="center", fontsize=7,
                color="white" if math.isnan(v) or v < mid else "black")
    return im


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1e3:.0f}k"


# --------------------------------------------------------------------------- width-depth
@EXPERIMENTS.register("width-depth", help="MLP accuracy over depth 1..6 x width 32..512 (course §1.7, exercise 1.4)")
def width_depth(out: Path, quick: bool) -> ExperimentResult:
    depths = DEPTHS_QUICK if quick else DEPTHS
    widths = WIDTHS_QUICK if quick else WIDTHS
    rows = []
    for depth in depths:
        for width in widths:
            res, wall = _run(out, f"d{depth}-w{width}", quick,
                             [f"model.widths={_widths_arg([width] * depth)}"])
            rows.append({
                "depth": depth, "width": width, "params": param_count(depth, width),
                **run_row(res, wall),
            })
    table = pd.DataFrame(rows)

    acc = table.pivot(index="depth", columns="width", values="test_accuracy").reindex(
        index=depths, columns=widths)
    params = table.pivot(index="depth", columns="width", values="params").reindex(
        index=depths, columns=widths)
    labels = np.vectorize(_fmt_params)(params.to_numpy(dtype=np.int64))
    fig, ax = plt.subplots(figsize=(1.6 * len(widths) + 2.5, 0.8 * len(depths) + 2))
    im = _heatmap(ax, acc.to_numpy(dtype=float), labels, [str(w) for w in widths],
                  [str(d) for d in depths])
    ax.set(xlabel="width (units per hidden layer)", ylabel="depth (hidden layers)",
           title="test accuracy (and parameter count)")
    fig.colorbar(im, ax=ax)
    fig.suptitle("Fashion-MNIST MLP: width x depth (course §1.7, exercise 1.4)" + (" — quick" if quick else ""))
    fig_path = save_figure(fig, out / "width_depth.png")

    best = table.loc[table["val_accuracy"].idxmax()]
    notes = (f"Best by validation accuracy: depth {int(best.depth)}, width {int(best.width)} "
             f"({int(best.params):,} params, test accuracy {best.test_accuracy:.4f}).")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"depths": depths, "widths": widths,
                                   "epochs": _budget(quick)["epochs"]})


# --------------------------------------------------------------------------- dropout-wd
@EXPERIMENTS.register("dropout-wd", help="dropout x AdamW weight decay ablation table (course §3.11)")
def dropout_wd(out: Path, quick: bool) -> ExperimentResult:
    dropouts = DROPOUTS_QUICK if quick else DROPOUTS
    wds = WEIGHT_DECAYS_QUICK if quick else WEIGHT_DECAYS
    rows = []
    for dr in dropouts:
        for wd in wds:
            res, wall = _run(out, f"dr{dr:g}-wd{wd:g}", quick, [
                f"model.widths={_widths_arg(REG_WIDTHS)}", f"model.dropout={dr}",
                "optim.name=adamw", f"optim.weight_decay={wd}",
            ])
            rows.append({
                "dropout": dr, "weight_decay": wd,
                **run_row(res, wall),
            })
    table = pd.DataFrame(rows)

    # the course's layout: rows dropout, columns weight decay, cells accuracy
    pivot = table.pivot(index="dropout", columns="weight_decay", values="test_accuracy").reindex(
        index=dropouts, columns=wds)
    pivot.to_csv(out / "pivot.csv")
    pivot_md = pivot.copy()
    pivot_md.columns = [f"wd={c:g}" for c in pivot_md.columns]
    pivot_md = pivot_md.reset_index()
    pivot_md["dropout"] = [f"{d:g}" for d in pivot_md["dropout"]]
    pivot_text = to_markdown(pivot_md)
    atomic_write_text(out / "pivot.md", pivot_text)

    fig, ax = plt.subplots(figsize=(1.5 * len(wds) + 2.5, 0.8 * len(dropouts) + 2))
    im = _heatmap(ax, pivot.to_numpy(dtype=float), None, [f"{w:g}" for w in wds],
                  [f"{d:g}" for d in dropouts])
    ax.set(xlabel="weight decay (AdamW, decoupled)", ylabel="dropout rate", title="test accuracy")
    fig.colorbar(im, ax=ax)
    fig.suptitle("Fashion-MNIST MLP 256-128: dropout x weight decay (course §3.11)"
                 + (" — quick" if quick else ""))
    fig_path = save_figure(fig, out / "dropout_wd.png")

    best = table.loc[table["val_accuracy"].idxmax()]
    notes = ("Test accuracy, course layout (rows dropout, columns weight decay):\n\n" + pivot_text
             + f"\nBest by validation accuracy: dropout {best.dropout:g}, weight decay "
             f"{best.weight_decay:g} (test accuracy {best.test_accuracy:.4f}).")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"dropouts": dropouts, "weight_decays": wds,
                                   "epochs": _budget(quick)["epochs"], "widths": REG_WIDTHS})
