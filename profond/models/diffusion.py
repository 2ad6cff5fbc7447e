r"""The denoising U-Net of the diffusion models (course §10.5, fig. 10.2, §10.8): ``diffusion-unet``.

One network ``model(x_t, t, y=None)`` for the whole diffusion family: it predicts ε (eq. 10.9),
``x_0`` or ``v`` for the DDPM process and the velocity for flow matching; the method decides
what its output means. Its shape is that of ``x_t``::

    e      = MLP(PE(t)) [+ E_y[y]]                 time embedding (eq. 10.19) + class embedding
    h      = conv3x3(x_t)                          stem, `base` channels
    encoder: per level l, `num_res_blocks` × ResBlock(h, e) [+ attention], then a stride-2 conv
    middle : ResBlock, attention, ResBlock         (the bottleneck of fig. 10.2)
    decoder: per level, `num_res_blocks + 1` × ResBlock(cat(h, skip), e) [+ attention], then
             nearest ×2 upsampling + conv3x3
    out    = conv3x3(SiLU(GN(h)))                  zero-initialised

* **Residual blocks** (course §10.8 ``ResBlock``, with group normalisation §10.5):
  ``GN → SiLU → conv3x3``, then the embedding injected "par addition ou modulation" (§10.5):
  added per channel (``film=False``, the course's block) or as a scale and shift of the second
  normalisation, ``GN(h)·(1 + s) + b`` (``film=True``, FiLM / the "scale-shift norm" of
  Dhariwal & Nichol 2021); then ``SiLU → dropout → conv3x3``, plus the input (1×1 conv when
  the channel count changes).
* **Skip connections** by concatenation (fig. 10.2): the decoder at each resolution reads every
  encoder feature map of that resolution (stem, blocks and downsamplings, as in Ho et al.
  2020), so fine detail of ``x_t`` reaches the output without going through the bottleneck.
* **Self-attention** (course §6.5, def. 6.5) over the ``H·W`` positions as tokens, ``x +
  MHA(GN(x))``, at the levels listed in ``attn_levels`` (the lowest resolutions, "Attention" in
  fig. 10.2: quadratic in ``H·W``, so cheap only there) and in the bottleneck. It runs through
  :class:`~profond.nn.attention.MultiHeadAttention` (PyTorch's fused SDPA by default).
* **Class conditioning** (def. 10.8, exercise 10.5): ``num_classes > 0`` adds a learned
  embedding of ``num_classes + 1`` rows to the time embedding; row ``num_classes`` is the null
  class ∅ of eq. 10.22, used for ``y=None`` and for the labels the method drops during
  training, so one net gives both ``ε(x_t, t, c)`` and ``ε(x_t, t, ∅)``.
* **Zero initialisation** of the last conv, of the second conv of every residual block and of
  the output projection of every attention block (Ho et al. 2020's code, Nichol & Dhariwal
  2021): every residual branch starts as 0, so every block is the identity and the net the zero
  function. The ε-loss then starts at ``E‖ε‖²/d = 1`` whatever the depth, activations do not
  grow with the number of blocks, and training starts from "predict the mean noise", the
  best constant. The gradient still reaches every weight: the last conv gets one at the first
  step, the branches as soon as the convs after them are no longer 0 (a few steps).

Sizes: ``L = len(mults)`` levels need ``H`` and ``W`` divisible by ``2^(L-1)`` (28 with 3
levels: 28 → 14 → 7; a 4th level would need 8). Other sizes are padded (reflect padding of the
input, split between both sides; zeros when the image is too small to reflect) to the next
multiple, and the output cropped back: a 30×30 image runs at 32×32 with 3 levels.

Timesteps ``t`` are indices ``0 … T−1`` (float or int tensors, ``(N,)`` or a scalar); floats in
between are fine (flow matching passes ``t·(T−1)``): eq. 10.19 is continuous in ``t``.

Presets (``preset=``): ``small`` is table 10.1's "petit réseau (32 dim)" read as ``base=32``
(the default net, and the width of the course's §10.8 ``SimpleUNet`` stem); ``large`` its
"grand réseau (256 dim)" read as ``base=256`` (same levels, much slower); ``fig10.2`` the
64-128-256-512 net of fig. 10.2 (``base=64``, ``mults=(1, 2, 4, 8)``, attention at the two
lowest levels). Explicit ``base`` / ``mults`` / ``attn_levels`` override the preset's.

Memory and speed: no loop over the batch; the attention tokens are a view of a channels_last
tensor (``x.flatten(2).transpose(1, 2)``), so ``model.to(memory_format=torch.channels_last)``
runs without copies there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Prob
from ..errors import ConfigError
from ..nn.attention import MultiHeadAttention
from ..nn.layers import InShape
from ..registry import MODELS

__all__ = ["PRESETS", "AttentionBlock", "DiffusionMLP", "DiffusionUNet", "ResBlock", "TimeEmbedding", "timestep_embedding"]

Preset = Literal["small", "large", "fig10.2"]
#: computations of eq. 6.9 for the attention blocks (``local`` would need a window: not offered)
AttnImpl = Literal["sdpa", "profond", "tiled", "linear"]
#: ``preset`` -> (base, mults, attn_levels); see the module docstring for the mapping
PRESETS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...]]] = {
    "small": (32, (1, 2, 2), (2,)),
    "large": (256, (1, 2, 2), (2,)),
    "fig10.2": (64, (1, 2, 4, 8), (2, 3)),
}


def timestep_embedding(t: Tensor, d: int, max_period: float = 10000.0) -> Tensor:
    """``(N, d)`` sinusoidal embedding of the (float) timesteps ``t`` ``(N,)``, course §10.5.1,
    eq. 10.19 (the Transformer's eqs. 7.4–7.5 with ``t`` for the position)::

        PE(t, 2i) = sin(t / 10000^{2i/d}),   PE(t, 2i+1) = cos(t / 10000^{2i/d})

    Computed in float32 whatever the dtype of ``t``, so non-integer ``t`` are exact too."""
    freq = torch.exp(-math.log(max_period) * torch.arange(0, d, 2, device=t.device, dtype=torch.float32) / d)
    arg = t.float()[:, None] * freq[None]  # (N, ⌈d/2⌉)  t / 10000^{2i/d}
    pe = torch.stack([arg.sin(), arg.cos()], dim=-1).flatten(1)  # (N, 2⌈d/2⌉) interleaved  (10.19)
    return pe[:, :d]


class TimeEmbedding(nn.Module):
    """``t ↦ Linear(SiLU(Linear(PE(t))))``, ``PE`` of eq. 10.19 with ``freq_dim`` components,
    output ``(N, dim)``: the MLP lets each block read the features of ``t`` it needs."""

    def __init__(self, freq_dim: int, dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        pe = timestep_embedding(t, self.freq_dim)  # (N, freq_dim)  (10.19)
        return self.mlp(pe.to(self.mlp[0].weight.dtype))  # (N, dim)


class ResBlock(nn.Module):
    """Residual block with the embedding injected after the first conv (course §10.8
    ``ResBlock``): ``x + conv(drop(SiLU(GN(conv(SiLU(GN(x))) + W e))))`` (``film=False``), or
    with ``GN(·)·(1 + s) + b``, ``(s, b) = W e``, in place of ``GN(· + W e)`` (``film=True``).
    A 1×1 conv maps ``x`` to ``cout`` channels when ``cin != cout``. The second conv starts at 0."""

    def __init__(self, cin: int, cout: int, emb_dim: int, *, dropout: float = 0.0, groups: int = 8,
                 film: bool = False):
        super().__init__()
        self.film = film
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout if film else cout))
        self.norm2 = nn.GroupNorm(groups, cout)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (N, cout, H, W)
        e = self.emb(emb)[:, :, None, None].to(h.dtype)  # (N, cout or 2·cout, 1, 1)
        if self.film:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift  # modulation (§10.5)
        else:
            h = self.norm2(h + e)  # addition (§10.5, §10.8)
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """``x + MHA(GN(x))`` with the ``H·W`` positions as tokens of width ``C`` (self-attention,
    def. 6.5). The output projection ``W^O`` starts at 0, so the block starts as the identity."""

    def __init__(self, channels: int, num_heads: int, *, groups: int = 8, impl: str = "sdpa"):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        # no biases: a key bias adds the same q·b to every score of a query, which the softmax
        # ignores (its gradient is 0), and GroupNorm's shift already plays the others' part
        self.attn = MultiHeadAttention(channels, num_heads, impl=impl)
        nn.init.zeros_(self.attn.out_proj.weight)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (N, H·W, C), a view if channels_last
        out, _ = self.attn(tokens)  # (N, H·W, C)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class _Down(nn.Module):
    """Stride-2 conv 3×3: halves H and W (even sizes)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    """Nearest-neighbour ×2 upsampling then conv 3×3 (no checkerboard, unlike ConvTranspose)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DiffusionUNet(nn.Module):
    """Denoising U-Net ``forward(x, t, y=None)`` (course §10.5, fig. 10.2; see the module docstring).

    ``x`` ``(N, C, H, W)`` (images on [-1, 1] plus noise), ``t`` ``(N,)`` timestep indices (float
    or int; a scalar is broadcast), ``y`` ``(N,)`` long labels in ``0 … num_classes`` (the last
    one the null class ∅) or None (all ∅). Returns ``(N, out_channels, H, W)``.

    ``mults``: channel multiplier of each level (``base·mults[l]`` channels; level ``l`` runs at
    ``H / 2^l``); ``attn_levels``: the levels with self-attention after each residual block;
    ``groups``: GroupNorm groups (must divide every level's channel count); ``time_dim``: width of
    the embedding ``e`` (default ``4·base``); ``num_classes=0``: unconditional.
    """

    #: the diffusion method checks this: the net is called ``model(x_t, t, y)``
    is_denoiser = True

    def __init__(self, in_channels: int = 1, image_size: Sequence[int] | int = (28, 28), base: int = 32,
                 mults: Sequence[int] = (1, 2, 2), num_res_blocks: int = 2, attn_levels: Sequence[int] = (2,),
                 num_heads: int = 4, dropout: float = 0.1, groups: int = 8, num_classes: int = 0,
                 time_dim: int | None = None, out_channels: int | None = None, film: bool = False,
                 attn_impl: str = "sdpa"):
        super().__init__()
        mults, attn_levels = tuple(int(m) for m in mults), tuple(sorted({int(a) for a in attn_levels}))
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        self._check(in_channels, size, base, mults, num_res_blocks, attn_levels, num_heads, dropout, groups,
                    num_classes, time_dim, film)
        self.in_channels, self.image_size, self.base, self.mults = in_channels, size, base, mults
        self.attn_levels, self.num_classes = attn_levels, num_classes
        self.out_channels = out_channels or in_channels
        self.time_dim = time_dim or 4 * base
        self.multiple = 2 ** (len(mults) - 1)  # H, W must be multiples of this (padded otherwise)
        emb = self.time_dim
        self.time_embed = TimeEmbedding(base, emb)
        #: class embedding, row ``num_classes`` = ∅ (eq. 10.22); None when unconditional
        self.class_embed = nn.Embedding(num_classes + 1, emb) if num_classes else None

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, emb, dropout=dropout, groups=groups, film=film)

        def attn(c: int) -> AttentionBlock:
            return AttentionBlock(c, num_heads, groups=groups, impl=attn_impl)

        self.stem = nn.Conv2d(in_channels, base, 3, padding=1)
        skips = [base]  # channels of every encoder output the decoder will concatenate
        ch = base
        self.down = nn.ModuleList()  # per level: ModuleList of (res, attn) pairs, then the downsampling
        for lvl, m in enumerate(mults):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(nn.ModuleList([res(ch, base * m), attn(base * m) if lvl in attn_levels else nn.Identity()]))
                ch = base * m
                skips.append(ch)
            stage = nn.ModuleDict({"blocks": blocks})
            if lvl < len(mults) - 1:
                stage["resample"] = _Down(ch)
                skips.append(ch)
            self.down.append(stage)
        self.mid1, self.mid_attn, self.mid2 = res(ch, ch), attn(ch), res(ch, ch)
        self.up = nn.ModuleList()
        for lvl in reversed(range(len(mults))):
            m = mults[lvl]
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(nn.ModuleList([res(ch + skips.pop(), base * m),
                                             attn(base * m) if lvl in attn_levels else nn.Identity()]))
                ch = base * m
            stage = nn.ModuleDict({"blocks": blocks})
            if lvl > 0:
                stage["resample"] = _Up(ch)
            self.up.append(stage)
        self.out_norm = nn.GroupNorm(groups, ch)
        self.out = nn.Conv2d(ch, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # the net starts as the zero function (module docstring)
        nn.init.zeros_(self.out.bias)

    @staticmethod
    def _check(in_channels: int, size: tuple[int, ...], base: int, mults: tuple[int, ...], num_res_blocks: int,
               attn_levels: tuple[int, ...], num_heads: int, dropout: float, groups: int, num_classes: int,
               time_dim: int | None, film: bool) -> None:
        """What the builder's annotations cannot say (relations between the options)."""
        for name, v in (("in_channels", in_channels), ("base", base), ("num_res_blocks", num_res_blocks),
                        ("num_heads", num_heads), ("groups", groups)):
            if v < 1:
                raise ConfigError(f"bad value for 'model.{name}': {v}; must be >= 1.")
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"bad image size {size}: give (H, W) with H, W >= 1.")
        if not mults or min(mults) < 1:
            raise ConfigError(f"bad value for 'model.mults': {list(mults)}; give one multiplier >= 1 per level, "
                              "e.g. [1, 2, 2].")
        bad = [a for a in attn_levels if not 0 <= a < len(mults)]
        if bad:
            raise ConfigError(f"bad value for 'model.attn_levels': {list(attn_levels)}; levels {bad} do not exist "
                              f"(mults={list(mults)} has levels 0..{len(mults) - 1}; [] for no attention "
                              "outside the bottleneck).")
        chans = sorted({base * m for m in mults})
        if any(c % groups for c in chans):
            raise ConfigError(f"bad value for 'model.groups': {groups} must divide every level's channel count "
                              f"base·mults = {chans}: pick a divisor of {math.gcd(*chans)} (or change model.base).")
        if not film and groups in chans:
            raise ConfigError(f"bad value for 'model.groups': {groups} groups of {groups} channels leave one channel "
                              "per group, and GroupNorm would then erase the per-channel time embedding added "
                              "before it: use fewer groups or model.film=true.")
        att = sorted({base * mults[a] for a in attn_levels} | {base * mults[-1]})
        if any(c % num_heads for c in att):
            raise ConfigError(f"bad value for 'model.num_heads': {num_heads} must divide the channel counts of the "
                              f"attention levels and the bottleneck {att}: pick a divisor of {math.gcd(*att)}.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"bad value for 'model.dropout': {dropout}; must be in [0, 1).")
        if num_classes < 0:
            raise ConfigError(f"bad number of classes {num_classes}; must be >= 0 (0: unconditional).")
        if time_dim is not None and time_dim < 1:
            raise ConfigError(f"bad value for 'model.time_dim': {time_dim}; must be >= 1 (null: 4·base).")

    def embed(self, t: Tensor, y: Tensor | None, n: int) -> Tensor:
        """``(N, time_dim)``: ``MLP(PE(t))`` plus the class (or ∅) embedding when conditional."""
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise ConfigError(f"t has shape {tuple(t.shape)}; the denoiser needs one timestep per image, ({n},).")
        e = self.time_embed(t)  # (N, time_dim)
        if self.class_embed is None:
            if y is not None:
                raise ConfigError("labels given to an unconditional denoiser: build it with model.conditional=true "
                                  "(and a labelled dataset), or call it with y=None.")
            return e
        if y is None:
            y = torch.full((n,), self.num_classes, dtype=torch.long, device=e.device)  # all ∅
        return e + self.class_embed(y)  # (N, time_dim)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        n, _, h, w = x.shape
        emb = self.embed(t, y, n)
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        top, left = ph // 2, pw // 2
        if ph or pw:  # (left, right, top, bottom); reflect needs the pad to be smaller than the image
            mode = "reflect" if max(top, ph - top) < h and max(left, pw - left) < w else "constant"
            x = F.pad(x, (left, pw - left, top, ph - top), mode=mode)
        hs = [self.stem(x)]  # encoder outputs, for the skip connections
        for stage in self.down:
            for block, att in stage["blocks"]:
                hs.append(att(block(hs[-1], emb)))
            if "resample" in stage:
                hs.append(stage["resample"](hs[-1]))
        z = self.mid2(self.mid_attn(self.mid1(hs[-1], emb)), emb)  # bottleneck: res, attn, res
        for stage in self.up:
            for block, att in stage["blocks"]:
                z = att(block(torch.cat([z, hs.pop()], dim=1), emb))  # skip by concatenation
            if "resample" in stage:
                z = stage["resample"](z)
        out = self.out(F.silu(self.out_norm(z)))  # (N, C_out, H + ph, W + pw)
        return out[..., top:top + h, left:left + w]


@MODELS.register("diffusion-unet", help="denoising U-Net of diffusion models (§10.5, fig. 10.2): res blocks, "
                                        "time / class embeddings, self-attention", tags=("method:diffusion",))
def diffusion_unet(in_shape: InShape = (1, 28, 28), num_classes: NonNegInt = 0, conditional: bool = False,
                   preset: Preset | None = None, base: PosInt | None = None,
                   mults: tuple[PosInt, ...] | None = None, num_res_blocks: PosInt = 2,
                   attn_levels: tuple[NonNegInt, ...] | None = None, num_heads: PosInt = 4, dropout: Prob = 0.1,
                   groups: PosInt = 8, time_dim: PosInt | None = None, film: bool = False,
                   attn_impl: AttnImpl = "sdpa") -> DiffusionUNet:
    """``in_shape`` and ``num_classes`` come from the data; ``conditional`` decides whether the net
    gets the class embedding (num_classes rows + ∅). ``preset``: ``small`` (base 32), ``large``
    (base 256), ``fig10.2`` (64-128-256-512); ``base`` / ``mults`` / ``attn_levels`` given
    explicitly override it (defaults without a preset: 32, [1, 2, 2], [2]); ``attn_levels`` left
    out with ``mults`` given: the preset's levels that exist, else the lowest resolution."""
    if conditional and num_classes < 1:
        raise ConfigError("model.conditional=true needs a labelled dataset (num_classes >= 1): use a dataset "
                          "with classes or set model.conditional=false.")
    p_base, p_mults, p_attn = PRESETS[preset or "small"]
    mults = tuple(mults) if mults is not None else p_mults
    if attn_levels is None:
        attn_levels = tuple(a for a in p_attn if a < len(mults)) or (len(mults) - 1,)
    c, h, w = (int(v) for v in in_shape)
    return DiffusionUNet(c, (h, w), base=base or p_base, mults=mults, num_res_blocks=num_res_blocks,
                         attn_levels=tuple(attn_levels),
                         num_heads=num_heads, dropout=dropout, groups=groups,
                         num_classes=num_classes if conditional else 0, time_dim=time_dim, film=film,
                         attn_impl=attn_impl)


# ----------------------------------------------------------------------------------------
# a denoiser for vector data: latent diffusion in an autoencoder's latent space


class MLPBlock(nn.Module):
    """``x + W₂ drop(SiLU(LN(W₁ x) · (1 + s) + b))``, ``(s, b) = W e``: the time (and class)
    embedding ``e`` modulates each block (FiLM); ``W₂`` starts at 0, so the block starts as the
    identity, as the U-Net's residual blocks do."""

    def __init__(self, dim: int, hidden: int, emb_dim: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(emb_dim, 2 * hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        s, b = self.film(F.silu(emb)).chunk(2, dim=1)                   # (N, hidden) each
        h = self.norm(self.fc1(x)) * (1 + s) + b
        return x + self.fc2(self.drop(F.silu(h)))                       # (N, dim)


class DiffusionMLP(nn.Module):
    """Denoiser ``model(z_t, t, y)`` of vectors ``z ∈ ℝ^d`` (an autoencoder's latent codes:
    latent diffusion, Rombach et al. 2022, course seed 000 "Stable Diffusion"): a linear map to
    ``width``, ``depth`` residual FiLM blocks reading the embedding of eq. 10.19 (plus a class
    embedding with the null class ∅ of eq. 10.22 when conditional), a linear map back to ``d``
    that starts at 0 (the net starts as the zero function: ε-loss 1 at initialisation).
    Inputs of any shape ``(N, *shape)`` are flattened to ``d = prod(shape)`` and the output
    reshaped back, so the same net is a (weak, position-blind) pixel-space baseline too."""

    is_denoiser = True

    def __init__(self, dim: int, *, width: int = 256, depth: int = 4, num_classes: int = 0,
                 dropout: float = 0.0, time_dim: int | None = None):
        super().__init__()
        self.dim, self.num_classes = dim, num_classes
        time_dim = time_dim or width
        self.time_embed = TimeEmbedding(min(width, 128), time_dim)
        self.class_embed = nn.Embedding(num_classes + 1, time_dim) if num_classes else None  # + ∅
        self.inp = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(MLPBlock(width, 2 * width, time_dim, dropout) for _ in range(depth))
        self.out_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        n = z.shape[0]
        if t.dim() == 0:
            t = t.expand(n)
        e = self.time_embed(t)                                          # (N, time_dim)  (10.19)
        if self.class_embed is not None:
            if y is None:
                y = torch.full((n,), self.num_classes, dtype=torch.long, device=z.device)  # all ∅
            e = e + self.class_embed(y)
        elif y is not None:
            raise ConfigError("labels given to an unconditional denoiser: build it with model.conditional=true.")
        h = self.inp(z.flatten(1))                                      # (N, width)
        for block in self.blocks:
            h = block(h, e)
        return self.out(F.silu(self.out_norm(h))).view(z.shape)        # (N, *shape): ε̂ (or x̂_0, v̂)


@MODELS.register("diffusion-mlp", help="denoiser of vectors (latent diffusion in an autoencoder's latent space): "
                                       "residual FiLM MLP with time / class embeddings", tags=("method:diffusion",))
def diffusion_mlp(in_shape: tuple[PosInt, ...] = (16,), num_classes: NonNegInt = 0, conditional: bool = False,
                  width: PosInt = 256, depth: PosInt = 4, dropout: Prob = 0.0,
                  time_dim: PosInt | None = None) -> DiffusionMLP:
    """``in_shape``: ``(d,)``, the latent size (method ``diffusion`` with ``method.autoencoder``
    passes it), or an image shape (flattened: a pixel-space baseline); ``conditional`` as for
    ``diffusion-unet``."""
    if conditional and num_classes < 1:
        raise ConfigError("model.conditional=true needs a labelled dataset (num_classes >= 1).")
    return DiffusionMLP(math.prod(int(v) for v in in_shape), width=width, depth=depth, num_classes=num_classes if conditional else 0,
                        dropout=dropout, time_dim=time_dim)
