"""Attribution maps drawn over the image: a heatmap on the grey image, one PNG per method, and
a side-by-side panel of several methods (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from ..viz.curves import plt

#: methods whose maps are signed (red: raises the class score, blue: lowers it); the others
#: are magnitudes
SIGNED = ("ig", "occlusion", "shap")


def save_figure(fig: object, path: Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG atomically (temp file + rename) and close it; no tight bounding
    box (it draws the figure twice), the layouts here leave their own margins."""
    from ..base.io import atomic_write

    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    plt.close(fig)
    return path


def pixel_map(attr: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` or ``(1, C, H, W)`` attribution as one ``(H, W)`` map: the sum over
    channels (for a grey image, the map itself)."""
    a = attr.detach().float().cpu()
    a = a[0] if a.ndim == 4 else a
    return (a.sum(0) if a.ndim == 3 else a).numpy()


def grey(image: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` / ``(1, C, H, W)`` image in [0, 1] as an ``(H, W)`` grey image."""
    x = image.detach().float().cpu()
    x = x[0] if x.ndim == 4 else x
    return x.mean(0).clamp(0, 1).numpy()


def draw_overlay(ax: object, image: Tensor, heat: np.ndarray, *, signed: bool, title: str = "",
                 colorbar: bool = True) -> None:
    """The grey ``image`` under ``heat`` (half transparent; signed maps on a symmetric
    blue-white-red scale, magnitudes on 'inferno' from 0 to their max), with its colour bar."""
    ax.imshow(grey(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    top = float(np.abs(heat).max()) or 1.0
    if signed:
        im = ax.imshow(heat, cmap="bwr", vmin=-top, vmax=top, alpha=0.55, interpolation="nearest")
    else:
        im = ax.imshow(heat, cmap="inferno", vmin=0, vmax=top, alpha=0.55, interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def save_overlay(path: Path, image: Tensor, heat: np.ndarray, *, signed: bool, title: str) -> Path:
    """One overlay PNG at ``path``."""
    fig, ax = plt.subplots(figsize=(3.6, 3.3))
    fig.subplots_adjust(left=0.03, right=0.8, bottom=0.03, top=0.84)
    draw_overlay(ax, image, heat, signed=signed, title=title)
    return save_figure(fig, path)


def save_panel(path: Path, image: Tensor, maps: dict[str, tuple[np.ndarray, str]], *, title: str) -> Path:
    """The image, then one overlay per method (``maps``: method -> (heat, subtitle)), side by
    side; no colour bars (each method's own PNG has its scale)."""
    n = len(maps) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.0))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.03, top=0.8, wspace=0.15)
    axes[0].imshow(grey(image), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[0].set_axis_off()
    for ax, (method, (heat, sub)) in zip(axes[1:], maps.items(), strict=True):
        draw_overlay(ax, image, heat, signed=method in SIGNED, title=sub, colorbar=False)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_token_figure(path: Path, rows: dict[str, tuple[list[str], np.ndarray]], *, title: str,
                      width: int = 64) -> Path:
    """The text once per method (``rows``: subtitle -> (token strings, values)), each token on
    a background coloured by its value (signed rows: blue-white-red around 0; rows of
    magnitudes: white to red), wrapped at ``width`` characters; the values are normalised
    per row by their largest magnitude."""
    from matplotlib import colormaps

    def lay_out(tokens: list[str]) -> list[tuple[int, int]]:
        places, col, line = [], 0, 0
        for tok in tokens:
            n = max(1, len(tok))
            if col and col + n > width:
                col, line = 0, line + 1
            places.append((col, line))
            col += n
        return places

    layouts = {name: lay_out([t.replace("\n", "⏎") for t in toks]) for name, (toks, _) in rows.items()}
    n_lines = sum(1 + max(y for _, y in lay) + 1 for lay in layouts.values())
    fig = plt.figure(figsize=(0.13 * width + 0.6, 0.32 * n_lines + 0.7))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.96 - 0.35 / fig.get_figheight()))
    ax.set_xlim(0, width)
    ax.set_ylim(n_lines, 0)
    ax.set_axis_off()
    y0 = 0
    for name, (toks, values) in rows.items():
        values = np.asarray(values, dtype=float)
        signed = bool((values < 0).any())
        top = float(np.abs(values).max()) or 1.0
        cmap = colormaps["bwr" if signed else "Reds"]
        ax.text(0, y0 + 0.5, name, fontsize=9, fontweight="bold", va="center")
        lay = layouts[name]
        for tok, (cx, cy), v in zip(toks, lay, values, strict=True):
            colour = cmap(0.5 + 0.5 * v / top if signed else v / top)
            shown = tok.replace("\n", "⏎").replace(" ", "␣") if tok.strip() == "" else tok.replace("\n", "⏎")
            ax.add_patch(plt.Rectangle((cx, y0 + 1 + cy + 0.1), max(1, len(tok)), 0.8, color=colour, lw=0))
            ax.text(cx, y0 + 1 + cy + 0.5, shown, fontsize=11, family="monospace", va="center", ha="left")
        y0 += 1 + max(y for _, y in lay) + 1
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


__all__ = ["SIGNED", "pixel_map", "grey", "draw_overlay", "save_overlay", "save_panel", "save_token_figure"]
