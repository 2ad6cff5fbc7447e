"""Figures of images: sample grids, interpolation strips, latent traversals, latent
scatters, ROC curves, image-to-image tables and GIF animations of grids (``profond sample`` /
``latent`` / ``eval``, the generative experiments, and the GAN training animation).

Images come as float tensors or arrays in **[0, 1]**, shape ``(N, C, H, W)`` with ``C`` 1
(grayscale) or 3 (RGB). Grids and strips are written pixel-exact with PIL (each image
upscaled by an integer factor, never resampled): a grid of ``rows x cols`` images of size
``H x W`` with padding ``pad`` and scale ``s`` is ``(cols * (W + pad) + pad) * s`` pixels
wide and ``(rows * (H + pad) + pad) * s`` high (plus a title band when a title is given),
see :func:`grid_size`. Every write is atomic (temporary file + rename).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..base.io import atomic_write  # noqa: E402
from .curves import save_figure  # noqa: E402

#: height in pixels of the title band drawn above a grid
TITLE_BAND = 16
#: grids upscale small images so that a tile is at least this many pixels (28 -> x2, 8 -> x7)
MIN_TILE = 56


def _to_numpy(images: Any) -> np.ndarray:
    """``(N, C, H, W)`` float array in [0, 1] from a tensor / array / list of images."""
    if isinstance(images, (list, tuple)):  # a list of (C, H, W) images or (N, C, H, W) batches
        parts = [_np(im) for im in images]
        images = np.concatenate([p[None] if p.ndim == 3 else p for p in parts])
    x = _np(images).astype(np.float32)
    if x.ndim == 2:  # one (H, W) image
        x = x[None, None]
    elif x.ndim == 3:  # (N, H, W) grayscale batch
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C 1 or 3, got shape {tuple(x.shape)}")
    return np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def default_scale(h: int, w: int) -> int:
    return max(1, MIN_TILE // max(h, w))


def grid_size(n: int, h: int, w: int, nrow: int | None = None, pad: int = 2, scale: int | None = None,
              title: bool = False) -> tuple[int, int]:
    """``(width, height)`` in pixels of the PNG :func:`save_grid` writes for ``n`` images."""
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    cols = min(cols, n) if n else 1
    rows = max(1, math.ceil(n / cols))
    s = scale or default_scale(h, w)
    return (cols * (w + pad) + pad) * s, (rows * (h + pad) + pad) * s + (TITLE_BAND if title else 0)


def make_grid(images: Any, nrow: int | None = None, pad: int = 2, scale: int | None = None,
              pad_value: float = 1.0) -> np.ndarray:
    """An ``(H', W', 3)`` uint8 RGB array: ``nrow`` images per row (default ≈ sqrt(N))."""
    x = _to_numpy(images)
    n, c, h, w = x.shape
    if c == 1:
        x = np.repeat(x, 3, axis=1)
    cols = min(nrow or max(1, math.ceil(math.sqrt(n))), max(n, 1))
    rows = max(1, math.ceil(n / cols))
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), pad_value, np.float32)
    for i in range(n):
        r, k = divmod(i, cols)
        y0, x0 = pad + r * (h + pad), pad + k * (w + pad)
        grid[y0: y0 + h, x0: x0 + w] = x[i].transpose(1, 2, 0)
    s = scale or default_scale(h, w)
    if s > 1:
        grid = grid.repeat(s, axis=0).repeat(s, axis=1)
    return (grid * 255.0 + 0.5).astype(np.uint8)


def _with_title(arr: np.ndarray, title: str | None):
    from PIL import Image, ImageDraw

    img = Image.fromarray(arr, mode="RGB")
    if not title:
        return img
    out = Image.new("RGB", (img.width, img.height + TITLE_BAND), (255, 255, 255))
    out.paste(img, (0, TITLE_BAND))
    draw = ImageDraw.Draw(out)
    draw.text((2, 1), title, fill=(0, 0, 0), font=_font())
    return out


def _font():
    """matplotlib's DejaVu Sans (Greek letters and all), else PIL's default font."""
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), 11)
    except OSError:
        return ImageFont.load_default()


def _save_pil(img: Any, path: str | Path, **kw: Any) -> Path:
    path = Path(path)
    fmt = (path.suffix.lstrip(".") or "png").upper()
    fmt = "JPEG" if fmt == "JPG" else fmt
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt, **kw))
    return path


def save_grid(images: Any, path: str | Path, nrow: int | None = None, title: str | None = None,
              pad: int = 2, scale: int | None = None) -> Path:
    """A PNG grid of ``images`` (``nrow`` per row, default ≈ sqrt(N)); pixel size :func:`grid_size`."""
    return _save_pil(_with_title(make_grid(images, nrow, pad, scale), title), path)


def save_strip(images: Any, path: str | Path, title: str | None = None, pad: int = 2,
               scale: int | None = None) -> Path:
    """One row of images (an interpolation strip), or several rows if ``images`` is a list of
    equally long rows."""
    if isinstance(images, (list, tuple)) and images and np.ndim(_np(images[0])) == 4:
        rows = [_to_numpy(r) for r in images]
        return save_grid(np.concatenate(rows), path, nrow=len(rows[0]), title=title, pad=pad, scale=scale)
    x = _to_numpy(images)
    return save_grid(x, path, nrow=len(x), title=title, pad=pad, scale=scale)


def save_traversal(images: Any, path: str | Path, row_labels: Sequence[str] | None = None,
                   values: Sequence[float] | None = None, title: str | None = None,
                   value_format: str = "{:+.1f}") -> Path:
    """A latent traversal: ``images`` ``(K, S, C, H, W)`` (or ``(K*S, C, H, W)`` with
    ``row_labels`` of length K): one row per latent dimension, one column per value
    (column ticks ``value_format.format(v)``; also used for GAN interpolations and class grids)."""
    x = _np(images)
    if x.ndim == 5:
        k, s = x.shape[:2]
        x = x.reshape(k * s, *x.shape[2:])
    else:
        k = len(row_labels) if row_labels else 1
        s = len(x) // k
    x = _to_numpy(x)
    h, w = x.shape[2:]
    pad = 2
    grid = make_grid(x, nrow=s, pad=pad, scale=1)
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * s + 1.2), max(1.5, 0.45 * k + 0.6)))
    ax.imshow(grid, interpolation="nearest")
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(k)],
                  list(row_labels) if row_labels else [""] * k, fontsize=7)
    if values is not None:
        ax.set_xticks([pad + j * (w + pad) + w / 2 for j in range(s)],
                      [value_format.format(v) for v in values], fontsize=6)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


def save_image_table(columns: Sequence[Any], path: str | Path, col_titles: Sequence[str],
                     row_labels: Sequence[str] | None = None, notes: Sequence[Sequence[str] | None] | None = None,
                     title: str | None = None, cell: float = 1.1) -> Path:
    """A table of images (``profond sample RUN --input`` on image-to-image runs): ``columns[j]``
    is a batch ``(N, C, H_j, W_j)`` in [0, 1], one image per row; column ``j`` is titled
    ``col_titles[j]``, row ``i`` labelled ``row_labels[i]``, and ``notes[j][i]`` (e.g. a PSNR)
    is written under cell ``(i, j)``. Columns may hold images of different sizes (a 14×14
    super-resolution input next to its 28×28 output): every cell is drawn at the same display
    size with nearest-neighbour pixels. The figure is about ``cell`` inches (at 120 dpi) per
    image in each direction, so its height grows linearly with the number of rows."""
    cols = [_to_numpy(c) for c in columns]
    if not cols or len(col_titles) != len(cols):
        raise ValueError(f"save_image_table needs one title per column, got {len(col_titles)} for {len(cols)}")
    n = len(cols[0])
    if n == 0 or any(len(c) != n for c in cols):
        raise ValueError(f"every column needs the same number (> 0) of images, got {[len(c) for c in cols]}")
    k = len(cols)
    note_h = 0.15 if notes is not None else 0.0
    fig, axes = plt.subplots(n, k, figsize=(cell * k + (0.9 if row_labels else 0.1),
                                            (cell + note_h) * n + 0.35 + (0.25 if title else 0.0)),
                             squeeze=False, layout="constrained")
    for i in range(n):
        for j in range(k):
            ax, img = axes[i][j], cols[j][i]
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.imshow(img.transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col_titles[j], fontsize=8)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=7, rotation=0, ha="right", va="center")
            if notes is not None and notes[j] is not None and notes[j][i]:
                ax.set_xlabel(notes[j][i], fontsize=7, labelpad=2)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of ``z`` and their explained variance ratios."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0)
    return pca.fit_transform(z), pca.explained_variance_ratio_


def save_latent_scatter(z: Any, labels: Any, classes: Sequence[str] | None, path: str | Path,
                        title: str | None = None) -> Path:
    """Latent codes ``(N, d)`` as a 2-D scatter colored by class; ``d > 2`` goes through PCA
    (the title says so, with the variance the two components explain)."""
    z = _np(z).reshape(len(_np(z)), -1).astype(np.float64)
    y = _np(labels).astype(int).reshape(-1)
    d = z.shape[1]
    if d == 1:
        z2, how = np.stack([z[:, 0], np.zeros(len(z))], 1), "1-D latent"
        xlabel, ylabel = "$z_1$", ""
    elif d == 2:
        z2, how, xlabel, ylabel = z, f"latent dim {d}", "$z_1$", "$z_2$"
    else:
        z2, ratio = pca_2d(z)
        how = f"PCA of the {d}-D latent means ({100 * ratio.sum():.0f}% of variance)"
        xlabel, ylabel = f"PC1 ({100 * ratio[0]:.0f}%)", f"PC2 ({100 * ratio[1]:.0f}%)"
    fig, ax = plt.subplots(figsize=(6.5, 5.2))
    k = int(y.max()) + 1 if len(y) else 0
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    for c in range(k):
        m = y == c
        if m.any():
            name = classes[c] if classes is not None and c < len(classes) else str(c)
            ax.scatter(z2[m, 0], z2[m, 1], s=3, alpha=0.6, color=cmap(c % cmap.N), label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if k:
        ax.legend(markerscale=4, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(f"{title + ': ' if title else ''}{how}", fontsize=9)
    return save_figure(fig, path)


def save_roc(curves: dict[str, tuple[Any, Any, float]], path: str | Path, title: str | None = None) -> Path:
    """ROC curves ``name -> (fpr, tpr, auc)`` on one figure, with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for i, (name, (fpr, tpr, auc)) in enumerate(curves.items()):
        ax.plot(_np(fpr), _np(tpr), lw=1.3, color=cmap(i % cmap.N), label=f"{name} (AUC {float(auc):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, alpha=0.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if title:
        ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def animate_grids(frames: Sequence[Any], path_gif: str | Path, nrow: int | None = None,
                  duration_ms: int = 200, titles: Sequence[str] | None = None, loop: int = 0) -> Path:
    """A GIF with one frame per grid (e.g. the same latent batch through training).

    ``frames`` holds image batches ``(N, C, H, W)`` in [0, 1] (made into grids of ``nrow``
    per row) or ready ``(H, W, 3)`` uint8 arrays; ``titles`` optionally labels each frame.
    """
    from PIL import Image

    if not frames:
        raise ValueError("animate_grids needs at least one frame")
    imgs = []
    for i, f in enumerate(frames):
        a = _np(f)
        arr = a if (a.ndim == 3 and a.dtype == np.uint8 and a.shape[-1] == 3) else make_grid(a, nrow)
        imgs.append(_with_title(arr, titles[i] if titles else None).convert("P", palette=Image.ADAPTIVE))
    return _save_pil(imgs[0], path_gif, save_all=True, append_images=imgs[1:], duration=duration_ms,
                     loop=loop, optimize=False)


__all__ = ["animate_grids", "grid_size", "make_grid", "pca_2d", "save_grid", "save_image_table",
           "save_latent_scatter", "save_roc", "save_strip", "save_traversal"]
