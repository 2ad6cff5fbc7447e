"""Depthwise-separable convolutions (course §4.9, eq. 4.10).

Two parts:

1. *Counting*: for several (C_in, C_out, k), the weights of a real ``nn.Conv2d`` and of a
   real :class:`~profond.nn.layers.SeparableConv2d` are counted and their ratio compared
   with eq. 4.10, ``(C_in k² + C_in C_out) / (C_in C_out k²) = 1/C_out + 1/k²``
   (the course's example: C_out = 256, k = 3 gives a reduction of about 8-9×).
2. *Training*: the ``fmnist-cnn`` with standard vs separable convolutions trained with
   the same recipe on Fashion-MNIST: parameters, test accuracy and time.

``--quick`` trains a half-width network on 3,000 images for one epoch (seconds); the full
mode trains the default width on the whole training set for 5 epochs.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from torch import nn  # noqa: E402

from ..config import resolve  # noqa: E402
from ..nn.layers import SeparableConv2d, separable_ratio  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult  # noqa: E402

SHAPES = [(32, 64, 3), (64, 128, 3), (128, 256, 3), (256, 256, 3), (64, 128, 5), (128, 256, 7)]


def weight_count(module: nn.Module) -> int:
    """Convolution weights only (biases excluded, as in eq. 4.10)."""
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))


def counting_table() -> pd.DataFrame:
    rows = []
    for cin, cout, k in SHAPES:
        std = weight_count(nn.Conv2d(cin, cout, k))
        sep = weight_count(SeparableConv2d(cin, cout, k))
        rows.append({"C_in": cin, "C_out": cout, "k": k, "standard": std, "separable": sep,
                     "ratio_measured": sep / std, "ratio_eq_4_10": separable_ratio(cout, k),
                     "reduction_x": std / sep})
    return pd.DataFrame(rows)


@EXPERIMENTS.register("separable-conv", help="depthwise-separable vs standard convolutions (course §4.9, eq. 4.10)")
def separable_conv(out: Path, quick: bool) -> ExperimentResult:
    from ..train import train

    counts = counting_table()
    counts.to_csv(out / "counts.csv", index=False)

    rows = []
    for separable in (False, True):
        overrides = [
            "model.name=fmnist-cnn", f"model.separable={str(separable).lower()}",
            "train.channels_last=true", "optim.name=adamw", "optim.lr=0.003", "sched.name=onecycle",
            "data.batch_size=128", f"train.epochs={1 if quick else 5}", "train.quiet=true",
            f"out={out / 'runs'}", f"name={'separable' if separable else 'standard'}", "train.device=cpu",
        ]
        if quick:
            overrides += ["data.subset=3000", "data.val_size=500", "model.width=16"]
        t0 = time.perf_counter()
        res = train(resolve(overrides=overrides))
        s = res.summary
        rows.append({
            "model": "fmnist-cnn" + (" separable" if separable else ""),
            "params": s["parameters"]["model"]["total"],
            "test_accuracy": round(s["final"]["test_accuracy"], 4),
            "train_s": round(s["train_time_s"], 1),
            "wall_s": round(time.perf_counter() - t0, 1),
        })
    table = pd.DataFrame(rows)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    labels = [f"{r.C_in}→{r.C_out}\nk={r.k}" for r in counts.itertuples()]
    x = range(len(counts))
    axes[0].bar([i - 0.2 for i in x], counts["ratio_measured"], width=0.4, label="measured (weights)")
    axes[0].bar([i + 0.2 for i in x], counts["ratio_eq_4_10"], width=0.4, label="eq. 4.10: 1/C_out + 1/k²")
    axes[0].set_xticks(list(x), labels, fontsize=7)
    axes[0].set_ylabel("separable / standard")
    axes[0].set_title("parameter ratio")
    axes[0].legend(fontsize=7)
    axes[1].bar(table["model"], table["test_accuracy"], color=["tab:blue", "tab:orange"])
    for i, r in enumerate(table.itertuples()):
        axes[1].text(i, r.test_accuracy, f"{r.test_accuracy:.3f}\n{r.params:,} params", ha="center",
                     va="bottom", fontsize=8)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("Fashion-MNIST test accuracy" + (" (quick)" if quick else ""))
    fig_path = save_figure(fig, out / "separable.png")

    worst = (counts["ratio_measured"] - counts["ratio_eq_4_10"]).abs().max()
    notes = ("Parameter counts (weights only) vs eq. 4.10:\n\n"
             + counts.to_string(index=False, float_format=lambda v: f"{v:.5f}")
             + f"\n\nlargest |measured - eq. 4.10| = {worst:.2e}")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"max_abs_ratio_error": float(worst)})
