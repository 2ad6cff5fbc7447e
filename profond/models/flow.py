r"""Normalizing flows: invertible layers with a tractable Jacobian, and the models built of them.

A flow is a bijection ``z = f(x) = f_K ∘ … ∘ f_1 (x)`` onto a latent ``z`` with a simple prior
``p(z) = N(0, I)``. The change of variables gives the *exact* log-density of the data
(Dinh et al. 2017, "Density estimation using Real NVP"; Kingma & Dhariwal 2018, "Glow"):

.. math::

    \log p(x) = \log p(z) + \sum_{k=1}^{K} \log\left|\det \frac{\partial f_k}{\partial h_{k-1}}\right|,
    \qquad h_0 = x,\; h_k = f_k(h_{k-1}),\; z = h_K

Every layer here is an ``nn.Module`` with

* ``forward(x, cond=None) -> (z, logdet)``: ``z`` of ``x``'s shape (except :class:`Squeeze`) and
  ``logdet`` ``(N,)``, the ``log|det ∂z/∂x|`` of each example;
* ``inverse(z, cond=None) -> x``: the exact inverse.

Layers (each a way to keep ``det`` cheap):

* :class:`AffineCoupling` — RealNVP: split ``x`` by a mask ``b`` into ``x_a = b ⊙ x`` (kept)
  and the rest; ``z = x_a + (1 − b) ⊙ (x ⊙ exp(s(x_a)) + t(x_a))``. The Jacobian is triangular
  with diagonal ``exp(s)`` on the changed entries: ``log|det| = Σ (1 − b) ⊙ s``. Masks:
  ``checkerboard`` (pixels where ``(i + j)`` is even / odd) and ``channel`` (first / second
  half of the channels). ``s`` is bounded: ``tanh`` (``s = a · tanh(ŝ)``, ``a`` a learned
  per-channel scale, as RealNVP) or ``sigmoid`` (``exp(s) = 2σ(ŝ) ∈ (0, 2)``, the stable
  form of Glow's sigmoid scale). The last layer of the ``s, t`` network is zero-initialised,
  so every coupling — and the whole flow — starts at the identity.
* :class:`Squeeze` — space-to-depth: ``(C, H, W) -> (4C, H/2, W/2)``, a permutation (log|det| = 0).
* :class:`ActNorm` — Glow: ``z = (x + b) ⊙ exp(log s)`` per channel, ``log|det| = H·W·Σ log s``;
  ``b, log s`` are initialised from the first batch it sees so that this batch leaves it with
  zero mean and unit variance per channel (data-dependent init). A buffer ``initialized``
  (saved in the state dict) records it, so a loaded model never re-initialises.
* :class:`InvConv1x1` — Glow: a 1x1 convolution ``z = W x`` (a learned channel permutation),
  ``W = P L (U + diag(sign(s) exp(log|s|)))`` (LU form: ``P`` a fixed permutation, ``L`` unit
  lower triangular, ``U`` strictly upper): ``log|det| = H·W·Σ log|s|`` in O(C).
* Multi-scale factor-out (:class:`MultiScaleFlow`): after each scale half of the channels
  leave the flow and are scored by the prior directly (RealNVP §3.6); the rest go on at half the
  resolution. The latent is the list of the factored-out tensors and the last one.

Models (registered): ``realnvp`` and ``glow`` for images, ``realnvp-2d`` for 2-D points. For
28x28 images: each scale squeezes by 2, so the default 2 scales go 28 -> 14 -> 7 (no padding;
an image size not divisible by ``2**levels`` is refused with the fix).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Range
from ..errors import ConfigError
from ..nn.layers import InShape
from ..registry import MODELS

__all__ = ["ActNorm", "AffineCoupling", "InvConv1x1", "Squeeze", "VectorCoupling", "MultiScaleFlow",
           "VectorFlow", "standard_normal_logp", "realnvp", "glow", "realnvp_2d"]

LOG_2PI = math.log(2 * math.pi)
Scale = Literal["tanh", "sigmoid"]


def standard_normal_logp(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over all but the first dimension: ``−½ Σ (z² + log 2π)`` ``(N,)``."""
    return -0.5 * (z.pow(2) + LOG_2PI).flatten(1).sum(1)


def _zeros(n: int, like: Tensor) -> Tensor:
    return torch.zeros(n, dtype=like.dtype, device=like.device)


# -- the s, t networks ------------------------------------------------------------------------
class ResBlock(nn.Module):
    """``x + conv(relu(conv(relu(x))))``: a 3x3 residual block of the coupling network."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.c2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.c2(F.relu(self.c1(F.relu(x))))


class ConvST(nn.Module):
    """``(s_raw, t)`` of a coupling from the kept part: conv3x3 -> ``blocks`` residual blocks ->
    a zero-initialised conv3x3 giving ``2·out_ch`` maps (so the coupling starts at the identity)."""

    def __init__(self, in_ch: int, out_ch: int, hidden: int, blocks: int):
        super().__init__()
        self.inp = nn.Conv2d(in_ch, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*[ResBlock(hidden) for _ in range(blocks)])
        self.out = nn.Conv2d(hidden, 2 * out_ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.blocks(self.inp(x)))
        s, t = self.out(h).chunk(2, dim=1)  # (N, out_ch, H, W) each
        return s, t


class MLPST(nn.Module):
    """``(s_raw, t)`` of a vector coupling: an MLP with a zero-initialised last layer."""

    def __init__(self, dim: int, hidden: int, layers: int):
        super().__init__()
        mods: list[nn.Module] = []
        d = dim
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.body = nn.Sequential(*mods)
        self.out = nn.Linear(d, 2 * dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self.out(self.body(x)).chunk(2, dim=-1)  # (N, D) each
        return s, t


class BoundedScale(nn.Module):
    """``log s`` of a coupling from the network's raw output, bounded so that the flow stays
    stable: ``tanh``: ``a · tanh(ŝ)`` (``a`` learned per channel, initialised to 1; RealNVP);
    ``sigmoid``: ``log(2σ(ŝ)) = log 2 + logsigmoid(ŝ)`` (scale in (0, 2), 1 at ``ŝ = 0``)."""

    def __init__(self, channels: int, kind: Scale, spatial: bool = True):
        super().__init__()
        if kind not in ("tanh", "sigmoid"):
            raise ConfigError(f"bad value for 'model.scale': {kind!r}. Valid values: tanh, sigmoid.")
        self.kind = kind
        shape = (1, channels, 1, 1) if spatial else (1, channels)
        self.a = nn.Parameter(torch.ones(shape)) if kind == "tanh" else None

    def forward(self, raw: Tensor) -> Tensor:
        if self.a is not None:
            return self.a * torch.tanh(raw)
        return math.log(2.0) + F.logsigmoid(raw)


# -- layers ------------------------------------------------------------------------------------
def checkerboard(h: int, w: int, parity: int, like: Tensor) -> Tensor:
    """``b (1, 1, H, W)``: 1 where ``(i + j + parity)`` is even (the kept pixels)."""
    i = torch.arange(h, device=like.device).view(-1, 1)
    j = torch.arange(w, device=like.device).view(1, -1)
    return ((i + j + parity) % 2 == 0).to(like.dtype).view(1, 1, h, w)


class AffineCoupling(nn.Module):
    """RealNVP affine coupling (Dinh et al. 2017, eq. 6-9) on ``(N, C, H, W)``.

    ``mask="checkerboard"``: kept ``x_a = b ⊙ x``; ``z = x_a + (1 − b) ⊙ (x ⊙ e^{s(x_a)} + t(x_a))``.
    ``mask="channel"``: ``x = [x_1, x_2]`` split along channels; ``z = [x_1, x_2 ⊙ e^{s(x_1)} + t(x_1)]``
    (``parity=1`` swaps the roles of the halves). ``log|det ∂z/∂x| = Σ s`` over the changed
    entries. ``cond_channels``: extra ``(N, Cc, H, W)`` maps given as ``cond`` and read by the
    ``s, t`` network only (a conditional flow)."""

    def __init__(self, channels: int, mask: Literal["checkerboard", "channel"] = "checkerboard", parity: int = 0,
                 hidden: int = 64, blocks: int = 2, scale: Scale = "tanh", cond_channels: int = 0):
        super().__init__()
        if mask not in ("checkerboard", "channel"):
            raise ConfigError(f"bad coupling mask {mask!r}: use checkerboard or channel.")
        if mask == "channel" and channels < 2:
            raise ConfigError("a channel coupling needs at least 2 channels: squeeze first, or use the "
                              "checkerboard mask.")
        self.channels, self.mask, self.parity = channels, mask, int(parity) % 2
        self.cond_channels = cond_channels
        if mask == "checkerboard":
            n_in, n_out = channels, channels
        else:
            c1 = channels // 2
            n_in, n_out = (c1, channels - c1) if self.parity == 0 else (channels - c1, c1)
        self.split = channels // 2
        self.net = ConvST(n_in + cond_channels, n_out, hidden, blocks)
        self.scale = BoundedScale(n_out, scale)

    def _st(self, kept: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        if (cond is None) != (self.cond_channels == 0):
            raise ConfigError(f"this coupling was built with cond_channels={self.cond_channels}: pass cond "
                              "exactly when cond_channels > 0.")
        inp = kept if cond is None else torch.cat([kept, cond], dim=1)
        raw, t = self.net(inp)
        return self.scale(raw), t  # log s, t

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x[:, : self.split], x[:, self.split:]
        return (a, b) if self.parity == 0 else (b, a)  # (kept, changed)

    def _join(self, kept: Tensor, changed: Tensor) -> Tensor:
        return torch.cat([kept, changed] if self.parity == 0 else [changed, kept], dim=1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.mask == "checkerboard":
            b = checkerboard(x.shape[2], x.shape[3], self.parity, x)   # (1, 1, H, W)
            log_s, t = self._st(x * b, cond)                             # (N, C, H, W)
            log_s, t = log_s * (1 - b), t * (1 - b)                      # only the changed pixels
            z = x * torch.exp(log_s) + t                                 # x_a + (1−b)(x e^s + t)
            return z, log_s.flatten(1).sum(1)                            # Σ (1−b) ⊙ s
        kept, changed = self._halves(x)
        log_s, t = self._st(kept, cond)
        z2 = changed * torch.exp(log_s) + t                              # x_2 ⊙ e^{s(x_1)} + t(x_1)
        return self._join(kept, z2), log_s.flatten(1).sum(1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        if self.mask == "checkerboard":
            b = checkerboard(z.shape[2], z.shape[3], self.parity, z)
            log_s, t = self._st(z * b, cond)                             # z_a = x_a: same s, t
            log_s, t = log_s * (1 - b), t * (1 - b)
            return (z - t) * torch.exp(-log_s)
        kept, z2 = self._halves(z)
        log_s, t = self._st(kept, cond)
        return self._join(kept, (z2 - t) * torch.exp(-log_s))


class VectorCoupling(nn.Module):
    """Affine coupling on vectors ``(N, D)`` with a fixed binary mask ``b`` (RealNVP on 2-D points):
    ``z = b ⊙ x + (1 − b) ⊙ (x ⊙ e^{s(b ⊙ x)} + t(b ⊙ x))``, ``log|det| = Σ (1 − b) ⊙ s``."""

    def __init__(self, dim: int, mask: Tensor, hidden: int = 64, layers: int = 2, scale: Scale = "tanh"):
        super().__init__()
        self.register_buffer("mask", mask.float().view(1, dim))
        self.net = MLPST(dim, hidden, layers)
        self.scale = BoundedScale(dim, scale, spatial=False)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b = self.mask.to(x.dtype)
        raw, t = self.net(x * b)
        log_s, t = self.scale(raw) * (1 - b), t * (1 - b)
        return x * torch.exp(log_s) + t, log_s.sum(1)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        b = self.mask.to(z.dtype)
        raw, t = self.net(z * b)
        log_s, t = self.scale(raw) * (1 - b), t * (1 - b)
        return (z - t) * torch.exp(-log_s)


class Squeeze(nn.Module):
    """Space-to-depth: each 2x2 block of pixels becomes 4 channels, ``(N, C, H, W) -> (N, 4C, H/2, W/2)``.
    A permutation of the entries: ``log|det| = 0``."""

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ConfigError(f"cannot squeeze a {h}x{w} map: its height and width must be even (use fewer "
                              "model.levels, or images whose size divides by 2**levels).")
        z = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return z, _zeros(n, x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        n, c4, h, w = z.shape
        c = c4 // 4
        return z.view(n, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c, 2 * h, 2 * w)


class ActNorm(nn.Module):
    """Glow's activation normalisation (Kingma & Dhariwal 2018, §3.1): ``z = (x + b) ⊙ e^{log s}``
    per channel of ``(N, C, H, W)`` (or per feature of ``(N, C)``); ``log|det| = H·W·Σ_c log s_c``.

    Data-dependent init: the first forward call (in any mode) sets ``b = −mean``,
    ``log s = −log(std + eps)`` of its batch per channel, so that batch leaves with zero mean and
    unit variance, and sets the buffer ``initialized`` (saved in the state dict: loading a
    trained model's weights also loads the flag, and the init is not redone)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, -1, *([1] * (x.dim() - 2)))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))                           # all but the channel axis
        mean = x.mean(dims)
        std = x.std(dims, unbiased=False)
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not bool(self.initialized):
            self.initialize(x)
        z = (x + self._view(self.loc, x)) * torch.exp(self._view(self.log_scale, x))
        pixels = math.prod(x.shape[2:])                                  # H·W (1 for vectors)
        return z, (pixels * self.log_scale.sum()).expand(x.shape[0]).to(x.dtype)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return z * torch.exp(-self._view(self.log_scale, z)) - self._view(self.loc, z)


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution, LU-parametrised (Kingma & Dhariwal 2018, §3.2):

    ``W = P · L · (U + diag(sign(s) · exp(log|s|)))``, ``P`` a fixed permutation, ``L`` unit lower
    triangular, ``U`` strictly upper triangular; ``z_{:,ij} = W x_{:,ij}`` at every pixel and
    ``log|det| = H·W·Σ log|s|``. Initialised from a random rotation (the LU factors of a QR ``Q``)."""

    def __init__(self, channels: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> Tensor:
        """``W (C, C)`` from its LU factors."""
        eye = torch.eye(self.log_s.numel(), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.l_mask + eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        w = self.weight().to(x.dtype)
        c = w.shape[0]
        z = F.conv2d(x, w.view(c, c, 1, 1))                              # W x at every pixel
        logdet = x.shape[2] * x.shape[3] * self.log_s.sum()              # H·W·Σ log|s|
        return z, logdet.expand(x.shape[0]).to(x.dtype)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        w_inv = torch.linalg.inv(self.weight().to(z.dtype))
        c = w_inv.shape[0]
        return F.conv2d(z, w_inv.view(c, c, 1, 1))


# -- models ------------------------------------------------------------------------------------
class Sequence(nn.Module):
    """Layers applied in turn: ``logdet`` adds up; ``inverse`` runs them backwards."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logdet = _zeros(x.shape[0], x)
        for layer in self.layers:
            x, ld = layer(x, cond)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        for layer in reversed(self.layers):
            z = layer.inverse(z, cond)
        return z


class MultiScaleFlow(nn.Module):
    """A multi-scale image flow (RealNVP §3.6, Glow fig. 2) on ``(N, C, H, W)``.

    ``kind="realnvp"``: per scale, ``steps`` checkerboard couplings, a squeeze, ``steps``
    channel couplings (alternating halves), then half of the channels factored out; after the
    last scale, ``steps`` more checkerboard couplings. ``kind="glow"``: per scale, a squeeze,
    ``steps`` × (actnorm, invertible 1x1 conv, channel coupling), then the factor-out.

    ``forward(x) -> (zs, logdet)``: ``zs`` the list of factored-out latents and the final one
    (shapes :attr:`z_shapes`), ``logdet (N,)``. :meth:`log_prob` is ``Σ log N(z; 0, I) + logdet``.
    """

    def __init__(self, in_shape: tuple[int, int, int], kind: Literal["realnvp", "glow"] = "realnvp",
                 levels: int = 2, steps: int = 4, hidden: int = 64, blocks: int = 2, scale: Scale = "tanh"):
        super().__init__()
        c, h, w = (int(v) for v in in_shape)
        if h % (2 ** levels) or w % (2 ** levels):
            raise ConfigError(f"bad value for 'model.levels': {levels} scales halve a {h}x{w} image {levels} "
                              f"times, so its size must divide by {2 ** levels}: use model.levels="
                              f"{self.max_levels(h, w)} or fewer.")
        self.in_shape, self.kind, self.levels = (c, h, w), kind, levels
        self.scales = nn.ModuleList()
        self.z_shapes: list[tuple[int, int, int]] = []
        for lev in range(levels):
            layers: list[nn.Module] = []
            if kind == "realnvp":
                layers += [AffineCoupling(c, "checkerboard", k, hidden, blocks, scale) for k in range(steps)]
                layers.append(Squeeze())
                c, h, w = 4 * c, h // 2, w // 2
                layers += [AffineCoupling(c, "channel", k, hidden, blocks, scale) for k in range(steps)]
            else:
                layers.append(Squeeze())
                c, h, w = 4 * c, h // 2, w // 2
                for k in range(steps):
                    layers += [ActNorm(c), InvConv1x1(c), AffineCoupling(c, "channel", k, hidden, blocks, scale)]
            if lev == levels - 1:
                if kind == "realnvp":
                    layers += [AffineCoupling(c, "checkerboard", k, hidden, blocks, scale) for k in range(steps)]
                self.z_shapes.append((c, h, w))
            else:
                self.z_shapes.append((c - c // 2, h, w))                 # factored out to the prior
                c = c // 2
            self.scales.append(Sequence(layers))

    @staticmethod
    def max_levels(h: int, w: int) -> int:
        n = 0
        while h % 2 == 0 and w % 2 == 0 and h > 1 and w > 1:
            h, w, n = h // 2, w // 2, n + 1
        return n

    @property
    def dims(self) -> int:
        return math.prod(self.in_shape)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        zs: list[Tensor] = []
        logdet = _zeros(x.shape[0], x)
        h = x
        for lev, scale in enumerate(self.scales):
            h, ld = scale(h)
            logdet = logdet + ld
            if lev < self.levels - 1:
                keep = h.shape[1] // 2
                zs.append(h[:, keep:])                                   # (N, C − C/2, H, W) -> prior
                h = h[:, :keep]
        zs.append(h)
        return zs, logdet

    def inverse(self, zs: list[Tensor], cond: Tensor | None = None) -> Tensor:
        h = zs[-1]
        for lev in reversed(range(self.levels)):
            if lev < self.levels - 1:
                h = torch.cat([h, zs[lev]], dim=1)
            h = self.scales[lev].inverse(h)
        return h

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x) = Σ_scales log N(z_l; 0, I) + Σ_k log|det ∂f_k|`` ``(N,)`` nats."""
        zs, logdet = self(x)
        return sum(standard_normal_logp(z) for z in zs) + logdet

    def flatten(self, zs: list[Tensor]) -> Tensor:
        """The latents as one ``(N, D)`` vector (for Jacobians and plots)."""
        return torch.cat([z.flatten(1) for z in zs], dim=1)

    def unflatten(self, z: Tensor) -> list[Tensor]:
        out, i = [], 0
        for shp in self.z_shapes:
            k = math.prod(shp)
            out.append(z[:, i:i + k].view(-1, *shp))
            i += k
        return out

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images (model scale) from ``z ~ N(0, τ² I)``: ``x = f⁻¹(τ ε)``."""
        p = next(self.parameters())
        dev = generator.device if generator is not None else p.device
        zs = [temperature * torch.randn((n, *shp), generator=generator, device=dev, dtype=p.dtype)
              for shp in self.z_shapes]
        return self.inverse([z.to(p.device) for z in zs])


class VectorFlow(nn.Module):
    """RealNVP on vectors ``(N, D)`` (2-D toy densities): ``steps`` couplings with alternating
    masks, each followed by an actnorm. ``forward(x) -> (z, logdet)``."""

    def __init__(self, dim: int = 2, steps: int = 8, hidden: int = 64, layers: int = 2, scale: Scale = "tanh",
                 actnorm: bool = True):
        super().__init__()
        if dim < 2:
            raise ConfigError("a coupling flow needs at least 2 dimensions (one kept, one changed).")
        self.dim = dim
        mods: list[nn.Module] = []
        for k in range(steps):
            mask = (torch.arange(dim) % 2 == k % 2).float()
            mods.append(VectorCoupling(dim, mask, hidden, layers, scale))
            if actnorm:
                mods.append(ActNorm(dim))
        self.flow = Sequence(mods)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.flow(x)

    def inverse(self, z: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.flow.inverse(z)

    def log_prob(self, x: Tensor) -> Tensor:
        z, logdet = self(x)
        return standard_normal_logp(z) + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        p = next(self.parameters())
        dev = generator.device if generator is not None else p.device
        z = temperature * torch.randn((n, self.dim), generator=generator, device=dev, dtype=p.dtype)
        return self.inverse(z.to(p.device))


# -- registered builders --------------------------------------------------------------------------
Levels = Annotated[int, Range(1, 8), "scales (each squeezes by 2): 2 for 28x28 (28 -> 14 -> 7)"]


@MODELS.register("realnvp", help="RealNVP image flow (Dinh et al. 2017): checkerboard / channel affine "
                                 "couplings, squeeze, multi-scale factor-out", tags=("method:flow",))
def realnvp(in_shape: InShape = (1, 28, 28), num_classes: NonNegInt = 10, levels: Levels = 2,
            steps: Annotated[PosInt, "couplings per mask type and scale"] = 3, hidden: PosInt = 64,
            blocks: Annotated[NonNegInt, "residual blocks of each s, t network"] = 2,
            scale: Scale = "tanh") -> MultiScaleFlow:
    """``in_shape`` comes from the data (``num_classes`` is ignored: the flow is unconditional)."""
    return MultiScaleFlow(tuple(in_shape), "realnvp", levels, steps, hidden, blocks, scale)


@MODELS.register("glow", help="Glow image flow (Kingma & Dhariwal 2018): actnorm, LU 1x1 convolution, "
                              "affine coupling, multi-scale", tags=("method:flow",))
def glow(in_shape: InShape = (1, 28, 28), num_classes: NonNegInt = 10, levels: Levels = 2,
         steps: Annotated[PosInt, "flow steps (actnorm, 1x1 conv, coupling) per scale"] = 8,
         hidden: PosInt = 64, blocks: Annotated[NonNegInt, "residual blocks of each s, t network"] = 1,
         scale: Scale = "sigmoid") -> MultiScaleFlow:
    """``in_shape`` comes from the data (``num_classes`` is ignored: the flow is unconditional)."""
    return MultiScaleFlow(tuple(in_shape), "glow", levels, steps, hidden, blocks, scale)


@MODELS.register("realnvp-2d", help="RealNVP on 2-D points (toy densities): MLP couplings + actnorm",
                 tags=("method:flow-2d",))
def realnvp_2d(in_shape: tuple[PosInt, ...] = (2,), num_classes: NonNegInt = 0, steps: PosInt = 8,
               hidden: PosInt = 64, layers: PosInt = 2, scale: Scale = "tanh", actnorm: bool = True) -> VectorFlow:
    """``in_shape = (D,)``: points of dimension D >= 2."""
    dims = tuple(int(v) for v in in_shape)
    if len(dims) != 1:
        raise ConfigError(f"bad value for 'model.in_shape': {list(dims)}; realnvp-2d reads vectors: use [D], "
                          "e.g. [2].")
    return VectorFlow(dims[0], steps, hidden, layers, scale, actnorm)
