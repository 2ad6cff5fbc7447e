"""Attention maps: one heatmap per layer and head (course §6.5, weights of eq. 6.9).

Each cell ``(i, j)`` of a map is the weight ``α_ij = softmax_j(q_i·k_j / √d_k)`` that query
token ``i`` puts on key token ``j``; each row sums to 1. The grid has one row per layer and
one column per head, queries on the vertical axis and keys on the horizontal one.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .curves import save_figure

#: at most this many tick labels per axis; beyond, every k-th token is labelled
MAX_TICKS = 40


def _to_numpy(a: Any) -> np.ndarray:
    """A numpy ``float`` array from a numpy array or a torch tensor (detached, on the CPU)."""
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=float)


def _show(token: str) -> str:
    """A printable tick label for a token (space and newline made visible)."""
    t = str(token)
    return "␣" if t == " " else "⏎" if t == "\n" else t


def _ticks(ax: Any, tokens: Sequence[str], axis: str) -> None:
    """Token labels on one axis, thinned to at most :data:`MAX_TICKS` (every k-th token)."""
    n = len(tokens)
    step = max(1, -(-n // MAX_TICKS))  # ceil(n / MAX_TICKS)
    pos = list(range(0, n, step))
    labels = [_show(tokens[i]) for i in pos]
    size = 7 if n <= 20 else 5
    if axis == "x":
        long = max((len(s) for s in labels), default=1) > 1
        ax.set_xticks(pos, labels, fontsize=size, rotation=90 if long else 0)
    else:
        ax.set_yticks(pos, labels, fontsize=size)


def check_maps(maps: Mapping[str, Any], q_tokens: Sequence[str], k_tokens: Sequence[str]) -> dict[str, np.ndarray]:
    """The maps as ``(H, Nq, Nk)`` numpy arrays, checked against the tokens.

    A 2-D ``(Nq, Nk)`` map is read as one head. Raises :class:`~profond.errors.ConfigError`
    naming the layer and the expected shape when a map does not fit.
    """
    if not maps:
        raise ConfigError("draw_attention_maps: no maps given; pass {layer label: array (H, Nq, Nk)}")
    nq, nk = len(q_tokens), len(k_tokens)
    out: dict[str, np.ndarray] = {}
    for label, m in maps.items():
        a = _to_numpy(m)
        if a.ndim == 2:
            a = a[None]
        if a.ndim != 3:
            raise ConfigError(f"attention map {label!r} has shape {tuple(a.shape)}: expected (H, Nq, Nk) "
                              f"= (heads, {nq}, {nk}); pass one layer's weights without the batch axis")
        if a.shape[1:] != (nq, nk):
            raise ConfigError(f"attention map {label!r} has shape {tuple(a.shape)} but there are {nq} query "
                              f"tokens and {nk} key tokens: expected (H, {nq}, {nk}); pass the tokens the "
                              f"map was computed on")
        if a.shape[0] == 0:
            raise ConfigError(f"attention map {label!r} has no head (shape {tuple(a.shape)}): expected H >= 1")
        if not np.isfinite(a).all():
            raise ConfigError(f"attention map {label!r} contains NaN or Inf: check the model's weights")
        out[str(label)] = a
    return out


def draw_attention_maps(maps: Mapping[str, Any], q_tokens: Sequence[str], k_tokens: Sequence[str],
                        path: str | Path, *, title: str = "", max_heads: int | None = None) -> Path:
    """Write a PNG grid of attention heatmaps (rows: layers, columns: heads) and return its path.

    ``maps``: layer label -> weights ``(H, Nq, Nk)`` (numpy or torch; ``(Nq, Nk)`` = one head),
    e.g. the ``need_weights=True`` output of a multi-head attention without its batch axis.
    ``q_tokens`` / ``k_tokens`` label the rows / columns (thinned out when there are many);
    ``max_heads`` keeps the first heads of each layer. All panels share one colour scale
    starting at 0, with one colorbar. The file is written atomically.
    """
    import matplotlib.pyplot as plt  # curves (imported above) selected the Agg backend

    arrays = check_maps(maps, q_tokens, k_tokens)
    if max_heads is not None and max_heads < 1:
        raise ConfigError(f"max_heads={max_heads}: expected a positive number of heads (or None for all)")
    heads = max(a.shape[0] for a in arrays.values())
    if max_heads is not None:
        heads = min(heads, max_heads)
    rows = len(arrays)
    nq, nk = len(q_tokens), len(k_tokens)
    vmax = max(float(a[:heads].max()) for a in arrays.values()) or 1.0
    cell = min(max(2.2, 0.12 * max(nq, nk) + 1.0), 6.0)  # inches per panel
    fig, axes = plt.subplots(rows, heads, figsize=(cell * heads + 1.2, cell * rows + 0.8), squeeze=False,
                             layout="constrained")
    im = None
    for r, (label, a) in enumerate(arrays.items()):
        for h in range(heads):
            ax = axes[r, h]
            if h >= a.shape[0]:  # a layer with fewer heads than the widest one
                ax.axis("off")
                continue
            im = ax.imshow(a[h], aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{label} · head {h}", fontsize=8)
            _ticks(ax, k_tokens, "x")
            _ticks(ax, q_tokens, "y")
            if r == rows - 1:
                ax.set_xlabel("key", fontsize=8)
            if h == 0:
                ax.set_ylabel("query", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.03, label="attention weight α")
    if title:
        fig.suptitle(textwrap.fill(title, int((cell * heads + 1.2) * 11)), fontsize=9)
    path = Path(path)
    return save_figure(fig, path)
