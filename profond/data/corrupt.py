"""Corrupted training data for the generalisation puzzle (Zhang et al. 2017, "Understanding deep
learning requires rethinking generalization"; course §11.1-11.3: the capacity measures of
eq. 11.2-11.7 cannot tell a net that learnt from one that memorised).

Pure functions on in-memory image tensors ``x`` (``(N, C, H, W)``, uint8 or float) and labels
``y`` (int64 ``(N,)``), each seeded and returning new tensors (the inputs are never modified):

* :func:`random_labels` - a ``fraction`` of the labels replaced by classes drawn uniformly
  (a replaced label may by chance equal the true one, as in Zhang et al.);
* :func:`shuffled_pixels` - one fixed permutation of the ``H·W`` pixel positions, the same for
  every image (channels move together): the images keep all their information, but no longer
  their spatial structure;
* :func:`random_pixels` - an independent permutation per image: what is left is each image's
  histogram of values;
* :func:`gaussian_images` - every image replaced by Gaussian noise with the per-channel mean and
  standard deviation of ``x`` (for uint8, rounded and clipped to [0, 255]).

For the pixel corruptions ``fraction`` is the share of images corrupted (the first
``round(fraction·N)`` of a seeded random choice); the labels stay as they are.
:func:`corrupt` applies one of them by name: it is what ``data.corrupt`` /
``data.corrupt_fraction`` do to the training split (:func:`profond.methods.imagedata.split_loaders`;
the validation and test data stay clean).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: the names of ``data.corrupt``
CORRUPTIONS = ("none", "random-labels", "shuffled-pixels", "random-pixels", "gaussian")


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _chosen(n: int, fraction: float, g: torch.Generator) -> Tensor:
    """Indices of the ``round(fraction·n)`` examples to corrupt (a seeded random choice)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return torch.randperm(n, generator=g)[: round(fraction * n)]


def random_labels(y: Tensor, num_classes: int, *, fraction: float = 1.0, seed: int = 0) -> Tensor:
    """``y`` with a ``fraction`` of its labels replaced by uniform draws from ``0..num_classes-1``."""
    g = _generator(seed)
    idx = _chosen(len(y), fraction, g)
    out = y.clone()
    out[idx] = torch.randint(0, num_classes, (len(idx),), generator=g, dtype=y.dtype)
    return out


def pixel_permutation(n_pixels: int, seed: int = 0) -> Tensor:
    """The fixed permutation of :func:`shuffled_pixels` (so that other images, e.g. a test set,
    can be shuffled the same way)."""
    return torch.randperm(n_pixels, generator=_generator(seed))


def shuffled_pixels(x: Tensor, *, fraction: float = 1.0, seed: int = 0) -> Tensor:
    """Images with their pixel positions permuted by one permutation shared by all images."""
    n, c, h, w = x.shape
    g = _generator(seed)
    idx = _chosen(n, fraction, g)
    perm = pixel_permutation(h * w, seed)
    out = x.clone()
    out[idx] = x[idx].reshape(len(idx), c, h * w)[:, :, perm].reshape(len(idx), c, h, w)
    return out


def random_pixels(x: Tensor, *, fraction: float = 1.0, seed: int = 0) -> Tensor:
    """Images with their pixel positions permuted by an independent permutation per image."""
    n, c, h, w = x.shape
    g = _generator(seed)
    idx = _chosen(n, fraction, g)
    perms = torch.argsort(torch.rand(len(idx), h * w, generator=g), dim=1)  # one per image
    flat = x[idx].reshape(len(idx), c, h * w)
    out = x.clone()
    out[idx] = torch.gather(flat, 2, perms[:, None, :].expand(-1, c, -1)).reshape(len(idx), c, h, w)
    return out


def gaussian_images(x: Tensor, *, fraction: float = 1.0, seed: int = 0) -> Tensor:
    """Images replaced by i.i.d. Gaussian pixels with the per-channel mean / std of ``x``."""
    n, c, h, w = x.shape
    g = _generator(seed)
    idx = _chosen(n, fraction, g)
    xf = x.to(torch.float64)
    mean = xf.mean(dim=(0, 2, 3)).view(1, c, 1, 1)
    std = xf.std(dim=(0, 2, 3)).view(1, c, 1, 1)
    noise = mean + std * torch.randn(len(idx), c, h, w, generator=g, dtype=torch.float64)
    if not x.is_floating_point():
        info = torch.iinfo(x.dtype)
        noise = noise.round().clamp(info.min, info.max)
    out = x.clone()
    out[idx] = noise.to(x.dtype)
    return out


def corrupt(x: Tensor, y: Tensor, kind: str, *, fraction: float = 1.0, num_classes: int | None = None,
            seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, y)`` corrupted by ``kind`` (one of :data:`CORRUPTIONS`; ``none`` returns them as they
    are). ``num_classes`` (random labels): default ``y.max() + 1``."""
    if kind == "none":
        return x, y
    if kind == "random-labels":
        k = int(num_classes) if num_classes is not None else int(y.max()) + 1
        return x, random_labels(y, k, fraction=fraction, seed=seed)
    fns = {"shuffled-pixels": shuffled_pixels, "random-pixels": random_pixels, "gaussian": gaussian_images}
    if kind not in fns:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {', '.join(CORRUPTIONS)}")
    return fns[kind](x, fraction=fraction, seed=seed), y
