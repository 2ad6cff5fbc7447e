"""Batched data augmentation on the device (course §3.7).

Every transform works on a whole float batch ``x`` of shape ``(B, C, H, W)`` with values
in [0, 1] at once (no Python loop over samples) and draws its randomness from an explicit
:class:`torch.Generator`, so a batch's augmentation is a pure function of its seed: a run
resumed mid-epoch gets the same augmented batches (see :class:`profond.data.loader.Batches`).

Random numbers are drawn on the generator's device (normally the CPU) and then moved to
the batch's device, so the same seed gives the same augmentation on CPU and GPU.

Each transform has ``sample(x, generator) -> params`` and ``apply(x, params)``;
``__call__`` is ``apply(x, sample(x, generator))``. Tests use the split to check the
output against a by-hand computation with the very parameters that were drawn.

Transforms, as written in ``data.augment`` (``--set data.augment=[crop,flip]``):

``crop[:PAD]``
    random crop after zero padding by ``PAD`` pixels (default 4 for images of 32 px and
    more, 2 from 16 px, else 1) - "recadrages aléatoires" in §3.7.1;
``flip[:P]``
    horizontal flip with probability ``P`` (default 0.5) - "symétries horizontales";
``affine[:DEGREES]``
    small random rotation (uniform in ±DEGREES, default 10, as in the course's MNIST
    recipe), translation (±10% of the size) and scale (0.9..1.1), bilinear, zero fill.

Label-mixing transforms (``data.mixup_alpha``, ``data.cutmix_alpha``) turn the int64
labels into soft targets ``(B, num_classes)``:

Mixup (Zhang et al. 2018; course eq. 3.23-3.24)
    ``x = lam * x + (1 - lam) * x[perm]``, ``y = lam * y + (1 - lam) * y[perm]``,
    ``lam ~ Beta(alpha, alpha)``, one ``lam`` and one permutation per batch;
CutMix (Yun et al. 2019; course eq. 3.25-3.26)
    a box of area ``(1 - lam) * H * W`` of ``x[perm]`` is pasted into ``x``, and ``lam`` is
    then corrected to the real (clipped) box area so that targets match pixels.

With both on, each batch uses one of them with probability 1/2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

Tensor = torch.Tensor

VALID_SPECS = ("crop[:PAD]", "flip[:P]", "affine[:DEGREES]")


def _to(t: Tensor, x: Tensor) -> Tensor:
    return t.to(x.device, non_blocking=True)


def default_padding(size: int) -> int:
    """Crop padding for images of ``size`` pixels: 4 for 32 px, 2 for 28 px, 1 for 8 px."""
    return 4 if size >= 32 else 2 if size >= 16 else 1


# ----------------------------------------------------------------------------------------
# Per-sample geometric transforms
# ----------------------------------------------------------------------------------------


@dataclass
class RandomCrop:
    """Zero-pad by ``padding`` then crop back to ``H x W`` at a random offset per sample.

    Vectorized: the batch is padded once, and one advanced-indexing gather picks each
    sample's window out of a strided view of all the windows (no loop over samples).
    """

    padding: int | None = None

    def pad_for(self, x: Tensor) -> int:
        return self.padding if self.padding is not None else default_padding(max(x.shape[-2:]))

    def sample(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Offsets ``(B, 2)`` (dy, dx), each in ``0..2*pad``, on the generator's device."""
        p = self.pad_for(x)
        return torch.randint(0, 2 * p + 1, (x.shape[0], 2), generator=generator,
                             device=generator.device)  # fmt: skip

    def apply(self, x: Tensor, offsets: Tensor) -> Tensor:
        p = self.pad_for(x)
        if p == 0:
            return x
        b, c, h, w = x.shape
        padded = F.pad(x, (p, p, p, p))
        sb, sc, sh, sw = padded.stride()
        # A view of every H x W window of every padded image, indexed by its offset:
        # windows[i, dy, dx] is padded[i, :, dy:dy+H, dx:dx+W] (no copy yet).
        windows = padded.as_strided((b, 2 * p + 1, 2 * p + 1, c, h, w), (sb, sh, sw, sc, sh, sw))
        off = _to(offsets, x)
        return windows[torch.arange(b, device=x.device), off[:, 0], off[:, 1]]

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(x, self.sample(x, generator))


@dataclass
class RandomFlip:
    """Mirror each sample left-right with probability ``p``."""

    p: float = 0.5

    def sample(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Boolean mask ``(B,)``: which samples are flipped."""
        return torch.rand(x.shape[0], generator=generator, device=generator.device) < self.p

    def apply(self, x: Tensor, mask: Tensor) -> Tensor:
        return torch.where(_to(mask, x)[:, None, None, None], x.flip(-1), x)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(x, self.sample(x, generator))


def affine_theta(
    angle_deg: Tensor, translate: Tensor, scale: Tensor, height: int, width: int
) -> Tensor:
    """The ``(B, 2, 3)`` matrices for :func:`F.affine_grid` of a rotation/translation/scale.

    The image is rotated by ``angle_deg`` (counter-clockwise on screen, like
    ``torch.rot90``) about its centre, scaled by ``scale`` and shifted by ``translate``
    (fractions of width and height, ``(B, 2)``). ``affine_grid`` maps *output*
    coordinates to *input* ones, so the matrix is the inverse transform, written in
    normalized coordinates (``x = 2 * col / W - 1`` with ``align_corners=False``) and
    corrected for non-square images.
    """
    a = torch.deg2rad(angle_deg.to(torch.float32))
    cos, sin = torch.cos(a) / scale, torch.sin(a) / scale
    r = height / width
    theta = torch.empty(len(a), 2, 3, dtype=torch.float32, device=a.device)
    # Inverse of "rotate by +a on screen (y points down)": R(-a) in (x, y-down) pixel
    # coordinates, rescaled between the x and y normalizations.
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * r
    theta[:, 1, 0] = sin / r
    theta[:, 1, 1] = cos
    # Output point q comes from input M q - M t  (t: translation in normalized units).
    t = translate.to(torch.float32) * 2
    theta[:, 0, 2] = -(theta[:, 0, 0] * t[:, 0] + theta[:, 0, 1] * t[:, 1])
    theta[:, 1, 2] = -(theta[:, 1, 0] * t[:, 0] + theta[:, 1, 1] * t[:, 1])
    return theta


@dataclass
class RandomAffine:
    """Small random rotation, translation and scaling of every sample (bilinear, zero fill)."""

    degrees: float = 10.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.9, 1.1)

    def sample(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """``(B, 2, 3)`` affine_grid matrices, on the generator's device."""
        b, dev = x.shape[0], generator.device
        u = torch.rand(b, 4, generator=generator, device=dev)
        angle = (2 * u[:, 0] - 1) * self.degrees
        shift = (2 * u[:, 1:3] - 1) * self.translate
        lo, hi = self.scale
        scale = lo + (hi - lo) * u[:, 3]
        return affine_theta(angle, shift, scale, x.shape[-2], x.shape[-1])

    def apply(self, x: Tensor, theta: Tensor) -> Tensor:
        grid = F.affine_grid(_to(theta, x).to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return self.apply(x, self.sample(x, generator))


# ----------------------------------------------------------------------------------------
# Label-mixing transforms
# ----------------------------------------------------------------------------------------


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """``lam ~ Beta(alpha, alpha)`` drawn reproducibly from ``generator``.

    torch's Beta distribution takes no generator, so a seed is drawn from the generator
    and handed to numpy's Beta sampler.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def soft_targets(y: Tensor, num_classes: int) -> Tensor:
    """int64 labels -> one-hot float targets; float ``(B, K)`` targets pass through."""
    if y.is_floating_point():
        return y
    return F.one_hot(y, num_classes).to(torch.float32)


@dataclass
class Mixup:
    """Mixup: convex combination of the batch with a permutation of itself."""

    alpha: float = 0.2
    num_classes: int = 10

    def sample(self, x: Tensor, generator: torch.Generator) -> tuple[float, Tensor]:
        """``(lam, perm)``."""
        lam = sample_beta(self.alpha, generator)
        perm = torch.randperm(x.shape[0], generator=generator, device=generator.device)
        return lam, perm

    def apply(self, x: Tensor, y: Tensor, params: tuple[float, Tensor]) -> tuple[Tensor, Tensor]:
        lam, perm = params
        perm = _to(perm, x)
        t = soft_targets(y, self.num_classes)
        return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.apply(x, y, self.sample(x, generator))


@dataclass
class CutMix:
    """CutMix: paste a random box of a permuted batch; targets weighted by box area."""

    alpha: float = 1.0
    num_classes: int = 10

    def sample(
        self, x: Tensor, generator: torch.Generator
    ) -> tuple[float, Tensor, tuple[int, int, int, int]]:
        """``(lam, perm, (y0, y1, x0, x1))`` with ``lam`` corrected to the clipped box area."""
        h, w = x.shape[-2:]
        lam = sample_beta(self.alpha, generator)
        perm = torch.randperm(x.shape[0], generator=generator, device=generator.device)
        ratio = math.sqrt(1.0 - lam)  # box sides r*H x r*W: area (1 - lam) * H * W
        bh, bw = int(h * ratio), int(w * ratio)
        cy = int(torch.randint(0, h, (1,), generator=generator, device=generator.device))
        cx = int(torch.randint(0, w, (1,), generator=generator, device=generator.device))
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)  # the box was clipped at the border
        return lam, perm, (y0, y1, x0, x1)

    def apply(self, x: Tensor, y: Tensor, params) -> tuple[Tensor, Tensor]:
        lam, perm, (y0, y1, x0, x1) = params
        perm = _to(perm, x)
        out = x.clone()
        out[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
        t = soft_targets(y, self.num_classes)
        return out, lam * t + (1 - lam) * t[perm]

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return self.apply(x, y, self.sample(x, generator))


# ----------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------


@dataclass
class Augment:
    """Geometric transforms in order, then at most one label-mixing transform per batch."""

    transforms: list = field(default_factory=list)
    mixers: list = field(default_factory=list)
    num_classes: int = 10

    @property
    def soft_targets(self) -> bool:
        """True when labels come out as float ``(B, num_classes)`` targets."""
        return bool(self.mixers)

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        for t in self.transforms:
            x = t(x, generator)
        if self.mixers:
            i = 0
            if len(self.mixers) > 1:
                u = torch.rand(1, generator=generator, device=generator.device)
                i = min(int(u * len(self.mixers)), len(self.mixers) - 1)
            x, y = self.mixers[i](x, y, generator)
        return x, y


def _parse(spec: str) -> object:
    name, _, arg = spec.strip().partition(":")
    name = name.strip().lower()
    try:
        if name == "crop":
            pad = int(arg) if arg else None
            if pad is not None and pad < 0:
                raise ValueError
            return RandomCrop(pad)
        if name == "flip":
            p = float(arg) if arg else 0.5
            if not 0 <= p <= 1:
                raise ValueError
            return RandomFlip(p)
        if name == "affine":
            deg = float(arg) if arg else 10.0
            if not 0 <= deg <= 180:
                raise ValueError
            return RandomAffine(deg)
    except ValueError:
        raise ConfigError(
            f"augmentation {spec!r} has a bad value; valid specs: {', '.join(VALID_SPECS)} "
            "(PAD an integer >= 0, P in [0, 1], DEGREES in [0, 180])."
        ) from None
    raise ConfigError(
        f"unknown augmentation {spec!r} in data.augment; valid specs: {', '.join(VALID_SPECS)}, "
        "plus data.mixup_alpha and data.cutmix_alpha for Mixup and CutMix."
    )


def build_augment(
    specs: Sequence[str] | None,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    num_classes: int = 10,
) -> Augment | None:
    """Build the pipeline of ``data.augment`` specs; ``None`` when there is nothing to do."""
    if isinstance(specs, str):
        specs = [specs]
    transforms = [_parse(s) for s in specs or []]
    mixers: list = []
    for what, alpha, cls in (("mixup", mixup_alpha, Mixup), ("cutmix", cutmix_alpha, CutMix)):
        if alpha is None or alpha == 0:
            continue
        if not alpha > 0 or math.isinf(alpha):
            raise ConfigError(f"data.{what}_alpha={alpha} must be >= 0 (0 disables {what}).")
        mixers.append(cls(float(alpha), num_classes))
    if not transforms and not mixers:
        return None
    return Augment(transforms, mixers, num_classes)
