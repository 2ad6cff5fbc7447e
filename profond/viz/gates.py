"""Heatmaps of recurrent gates over a sequence (course exercise 5.4.2)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .curves import save_figure

#: what each traced gate is, with its equation in chapter 5
GATE_TITLES = {
    "f": "forget gate f_t (5.9)", "i": "input gate i_t (5.10)", "o": "output gate o_t (5.13)",
    "r": "reset gate r_t (5.16)", "z": "update gate z_t (5.17)",
}


def draw_gates(gates: dict[str, np.ndarray], tokens: Sequence[str], path: str | Path, title: str = "",
               units: int | None = None) -> Path:
    """One heatmap per gate (rows: hidden units, columns: the tokens read), values in [0, 1].

    ``gates``: name -> ``(T, d_h)`` array (from :func:`profond.models.rnn.trace_gates`);
    ``units`` keeps the first ``units`` hidden units (all by default). Token labels are
    written under the last panel when there are at most 120 of them.
    """
    import matplotlib.pyplot as plt  # curves (imported above) selected the Agg backend

    names = [g for g in gates if g in GATE_TITLES]
    steps = len(tokens)
    width = min(max(6.0, 0.16 * steps + 2.0), 30.0)
    fig, axes = plt.subplots(len(names), 1, figsize=(width, 2.4 * len(names) + 0.8), sharex=True, squeeze=False)
    for ax, g in zip(axes[:, 0], names, strict=True):
        m = np.asarray(gates[g])[:, :units].T
        im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_ylabel("unit")
        ax.set_title(f"{GATE_TITLES[g]}: mean {m.mean():.2f}", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.02)
    last = axes[-1, 0]
    if steps <= 120:
        last.set_xticks(range(steps), [("␣" if t == " " else "⏎" if t == "\n" else t) for t in tokens],
                        fontsize=7, rotation=0 if max((len(t) for t in tokens), default=1) <= 1 else 90)
    last.set_xlabel("tokens read (time →)")
    if title:  # wrapped to the figure's width (about 11 characters per inch at this size)
        fig.suptitle(textwrap.fill(title, int(width * 11)), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)
