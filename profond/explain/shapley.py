"""Shapley values of feature groups (course §12.5.3): exact by the subset formula, and
Kernel SHAP (Lundberg & Lee 2017) by a weighted linear regression on sampled coalitions.

A *game* is a value function ``v`` over coalitions of ``d`` players: ``v(masks)`` takes a
``(M, d)`` bool tensor (row ``m``: which players are present) and returns ``(M,)`` values.
For an image, the players are groups of pixels (superpixels; :func:`grid_groups` makes a
grid of patches) and ``v(S) = f_c(x_S)``, the class score of the image in which the groups
outside ``S`` are replaced by a baseline (:func:`image_game`). The Shapley value of player
``i`` (course §12.5.3)

    φ_i = Σ_{S ⊆ {1..d} \\ {i}} |S|! (d − |S| − 1)! / d! · [v(S ∪ {i}) − v(S)]

needs all ``2^d`` coalitions, hence at most :data:`MAX_EXACT_PLAYERS` players. Kernel SHAP
finds the same values as the solution of a least-squares problem weighted by the Shapley
kernel ``π(S) = (d − 1) / (C(d, |S|) |S| (d − |S|))`` under ``Σ_i φ_i = v(all) − v(∅)``;
sampling coalitions with probability ∝ π makes the unweighted regression on the sample
converge to it as the number of samples grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .attributions import Target, class_scores, resolve_target

Game = Callable[[Tensor], Tensor]

#: most players (feature groups) the exact subset formula takes (2^12 = 4096 coalitions)
MAX_EXACT_PLAYERS = 12


def grid_groups(height: int, width: int, rows: int, cols: int) -> Tensor:
    """A ``(height, width)`` long tensor labelling ``rows × cols`` rectangular patches
    ``0 .. rows·cols − 1`` row by row (the superpixels of a grid; edges split as evenly as
    possible)."""
    if not (1 <= rows <= height and 1 <= cols <= width):
        raise ValueError(f"a {rows}x{cols} grid does not fit a {height}x{width} image.")
    r = torch.arange(height) * rows // height
    c = torch.arange(width) * cols // width
    return r.view(-1, 1) * cols + c.view(1, -1)


def image_game(model: nn.Module, x: Tensor, groups: Tensor, target: Target = None, *,
               baseline: float | Tensor = 0.0, batch_size: int = 256) -> Game:
    """The game ``v(S) = f_c(x_S)`` of one image ``x`` (``(1, C, H, W)`` or ``(C, H, W)``): the
    pixels of the groups absent from ``S`` take the ``baseline`` (a float or an image)."""
    x = x.detach()
    x = x.unsqueeze(0) if x.ndim == 3 else x
    if x.shape[0] != 1:
        raise ValueError(f"image_game takes one image, not a batch of {x.shape[0]}.")
    groups = groups.to(x.device).long()
    if tuple(groups.shape) != tuple(x.shape[2:]):
        raise ValueError(f"groups of shape {tuple(groups.shape)} for an image of {tuple(x.shape[2:])}.")
    d = int(groups.max()) + 1
    t = resolve_target(model, x, target)
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    onehot = torch.nn.functional.one_hot(groups, d).to(x.dtype)  # (H, W, d)

    @torch.no_grad()
    def v(masks: Tensor) -> Tensor:
        outs = []
        for i in range(0, len(masks), batch_size):
            m = masks[i: i + batch_size].to(device=x.device, dtype=x.dtype)
            keep = (onehot @ m.T).permute(2, 0, 1).unsqueeze(1)  # (M, 1, H, W): 1 where the group is in S
            xs = base + keep * (x - base)
            outs.append(class_scores(model, xs, t.expand(len(m))))
        return torch.cat(outs).double().cpu()

    return v


def all_coalitions(d: int) -> Tensor:
    """The ``2^d`` coalitions as a ``(2^d, d)`` bool tensor; row ``m`` holds the bits of ``m``."""
    m = torch.arange(2 ** d).view(-1, 1)
    return (m >> torch.arange(d).view(1, -1)) & 1 == 1


def shapley_exact(game: Game, d: int) -> Tensor:
    """The Shapley values ``φ_1..φ_d`` (float64) of ``game`` by the subset formula of course
    §12.5.3, from the ``2^d`` values of every coalition (``d <= 12``)."""
    if not 1 <= d <= MAX_EXACT_PLAYERS:
        raise ValueError(f"{d} players: the exact Shapley values take 1 to {MAX_EXACT_PLAYERS} (2^d coalitions); "
                         "use fewer groups or kernel_shap.")
    values = game(all_coalitions(d)).double().cpu().numpy()  # v(S) for every S, S ↔ its bit mask
    sizes = np.array([bin(m).count("1") for m in range(2 ** d)])
    weight = np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) if s < d else 0.0
                       for s in range(d + 1)])  # |S|! (d − |S| − 1)! / d!
    phi = np.zeros(d)
    masks = np.arange(2 ** d)
    for i in range(d):
        without = masks[(masks >> i) & 1 == 0]  # S ⊆ {1..d} \ {i}
        # course §12.5.3: φ_i = Σ_S |S|!(d−|S|−1)!/d! [v(S ∪ {i}) − v(S)]
        phi[i] = np.sum(weight[sizes[without]] * (values[without | (1 << i)] - values[without]))
    return torch.from_numpy(phi)


def shapley_kernel(d: int, size: int) -> float:
    """The Shapley kernel ``π(S) = (d − 1) / (C(d, |S|) |S| (d − |S|))`` of a coalition of
    ``size`` players (infinite at 0 and d: those two are constraints, not samples)."""
    if size in (0, d):
        return math.inf
    return (d - 1) / (math.comb(d, size) * size * (d - size))


def sample_coalitions(d: int, n_samples: int, seed: int = 0) -> Tensor:
    """``n_samples`` coalitions (rounded up to even) with probability ∝ the Shapley kernel:
    a size ``k`` in 1..d−1 with probability ∝ C(d, k) π(k) = (d − 1)/(k (d − k)), then ``k``
    players uniformly; each draw comes with its complement (paired sampling, which removes
    the odd part of the regression's error). Seeded: same seed, same coalitions."""
    if d < 2:
        raise ValueError("Kernel SHAP needs 2 players or more.")
    rng = np.random.default_rng(int(seed))
    k = np.arange(1, d)
    p = (d - 1) / (k * (d - k))
    pairs = (n_samples + 1) // 2
    sizes = rng.choice(k, size=pairs, p=p / p.sum())
    z = np.zeros((pairs, d), dtype=bool)
    order = np.argsort(rng.random((pairs, d)), axis=1)  # a uniform random permutation per draw
    z[np.arange(pairs)[:, None], order] = np.arange(d)[None, :] < sizes[:, None]
    return torch.from_numpy(np.concatenate([z, ~z]))


def kernel_shap(game: Game, d: int, n_samples: int = 2048, seed: int = 0) -> Tensor:
    """Kernel SHAP estimate (float64) of the Shapley values of ``game``: the least-squares fit
    of ``v(S) ≈ φ_0 + Σ_{i ∈ S} φ_i`` over :func:`sample_coalitions` (drawn ∝ the Shapley
    kernel, so the fit is unweighted) with ``φ_0 = v(∅)`` and ``Σ_i φ_i = v(all) − v(∅)``
    imposed exactly (φ_d eliminated). Converges to :func:`shapley_exact` as ``n_samples``
    grows."""
    z = sample_coalitions(d, n_samples, seed)
    ends = torch.stack([torch.zeros(d, dtype=torch.bool), torch.ones(d, dtype=torch.bool)])
    vals = game(torch.cat([ends, z])).double().numpy()
    v0, v1, y = vals[0], vals[1], vals[2:]
    zf = z.double().numpy()
    # v(S) − v0 − z_d (v1 − v0) = Σ_{i<d} φ_i (z_i − z_d), with φ_d = (v1 − v0) − Σ_{i<d} φ_i
    a = zf[:, :-1] - zf[:, -1:]
    b = y - v0 - zf[:, -1] * (v1 - v0)
    head, *_ = np.linalg.lstsq(a, b, rcond=None)
    return torch.from_numpy(np.append(head, (v1 - v0) - head.sum()))


def group_map(values: Tensor, groups: Tensor) -> Tensor:
    """Per-pixel map ``(H, W)`` of per-group values: each pixel gets its group's value."""
    return values.to(torch.float32)[groups.long().cpu()]


def shapley_image(model: nn.Module, x: Tensor, groups: Tensor, target: Target = None, *,
                  baseline: float | Tensor = 0.0, n_samples: int | None = None, seed: int = 0) -> Tensor:
    """Shapley values of the groups of each image of ``x`` (``(N, C, H, W)``) for its class
    ``target``: exact (``n_samples=None``) or by Kernel SHAP with ``n_samples`` coalitions.
    Returns ``(N, d)`` float64 values."""
    t = resolve_target(model, x, target)
    d = int(groups.max()) + 1
    rows = []
    for i in range(len(x)):
        game = image_game(model, x[i: i + 1], groups, t[i: i + 1], baseline=baseline)
        rows.append(shapley_exact(game, d) if n_samples is None else kernel_shap(game, d, n_samples, seed))
    return torch.stack(rows)


__all__ = ["MAX_EXACT_PLAYERS", "grid_groups", "image_game", "all_coalitions", "shapley_exact", "shapley_kernel",
           "sample_coalitions", "kernel_shap", "group_map", "shapley_image"]
