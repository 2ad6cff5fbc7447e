"""Figures a person would rather look at than read: training curves and confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def save_figure(fig: Any, path: str | Path) -> Path:
    """Save atomically (temp file + rename) and close the figure."""
    from ..base.io import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120,
                                               bbox_inches="tight"))
    plt.close(fig)
    return path


def plot_curves(metrics_csv: str | Path, out: str | Path) -> Path | None:
    """Loss and every accuracy-like metric against epoch, train vs validation."""
    if not Path(metrics_csv).is_file():
        return None
    df = pd.read_csv(metrics_csv)
    if df.empty:
        return None
    metrics = sorted({c.split("_", 1)[1] for c in df.columns if c.startswith(("train_", "val_"))})
    metrics = [m for m in metrics if not m.startswith("grad_norm")]
    order = ["loss"] + [m for m in metrics if m != "loss"]
    order = [m for m in order if m in metrics][:4]
    fig, axes = plt.subplots(1, len(order), figsize=(4.5 * len(order), 3.5), squeeze=False)
    for ax, m in zip(axes[0], order, strict=False):
        for split, style in (("train", "-o"), ("val", "-s")):
            col = f"{split}_{m}"
            if col in df and df[col].notna().any():
                ax.plot(df["epoch"], df[col], style, ms=3, label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(m)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(Path(metrics_csv).parent.name, fontsize=9)
    return save_figure(fig, out)


def plot_confusion(matrix: list[list[int]], classes: list[str], out: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class in rows) with counts in the cells."""
    import numpy as np

    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.clip(cm.sum(1, keepdims=True), 1, None)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.55 * k))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, out)
