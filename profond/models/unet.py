"""Image-to-image networks: the U-Net generator and PatchGAN discriminator of Pix2Pix, and a
small SRGAN-style super-resolution generator.

Course: course seed 004 ("Pix2Pix: Architecture du Générateur (U-Net)",
"PatchGAN", "Super-Résolution avec GANs / SRGAN") and course ch. 8 (GANs). Papers: Isola et al. 2017 (Pix2Pix: U-Net with
skip connections, 70×70 PatchGAN), Ronneberger et al. 2015 (U-Net), Ledig et al. 2017 (SRGAN:
residual blocks at low resolution, sub-pixel (PixelShuffle) upsampling).

All generators take and return images on the **[0, 1]** scale (N, C, H, W); the U-Net ends in
a sigmoid, the SR net adds a learned residual to the bicubic upsampling of its input (so at
initialisation it is close to bicubic and training only has to learn the high frequencies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import check_choice
from ..errors import ConfigError
from ..registry import MODELS


def _down(cin: int, cout: int, norm: bool | str = True) -> nn.Sequential:
    """Conv 4×4 stride 2 (halves H, W) -> BN -> LeakyReLU(0.2): Isola et al.'s C-k block
    (``norm``: ``True``/``"batch"``, ``"instance"``, or ``False`` for none)."""
    kind = "batch" if norm is True else norm
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not kind)]
    if kind:
        layers.append(_norm(kind, cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _norm(kind: str, c: int) -> nn.Module:
    """``batch`` (Pix2Pix) or ``instance`` (CycleGAN: per-image statistics, affine)."""
    return nn.BatchNorm2d(c) if kind == "batch" else nn.InstanceNorm2d(c, affine=True)


def _conv(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True))


#: accepted values of ``UNet(skips=...)`` (booleans are aliases of ``all`` / ``none``)
SKIPS = ("all", "inner", "none")
NORMS = ("batch", "instance")


def skip_mode(skips: bool | str) -> str:
    """``True`` -> ``"all"``, ``False`` -> ``"none"``, else one of :data:`SKIPS`."""
    if isinstance(skips, bool):
        return "all" if skips else "none"
    return check_choice(skips, SKIPS, "model.skips")


class UNet(nn.Module):
    """U-Net (encoder / decoder with skip connections at every resolution).

    ``depth`` stride-2 downsamplings (channels ``base·2^i``, capped at ``8·base``), a
    bottleneck, then ConvTranspose upsamplings; the decoder at each resolution gets the
    encoder's features of the **same resolution** concatenated (``skips=True``), including the
    full-resolution ones, which carry the fine detail of the input straight to the output (the
    course's "connexions de sauts ... cruciales pour préserver les détails fins").
    ``skips=False`` (or ``"none"``) is the plain encoder-decoder ablation of Isola et al.
    (fig. 5). ``skips="inner"`` keeps every skip **but the full-resolution one**: the output
    can no longer copy the input pixel by pixel and must be redrawn from features at ≤ H/2,
    which is what an unpaired translation that changes a silhouette (CycleGAN, §8 / course
    004 "CycleGAN") needs (with ``depth=1`` it equals ``"none"``); the default ``True``
    (``"all"``) is Pix2Pix's.
    ``norm="instance"`` replaces BatchNorm by affine InstanceNorm (CycleGAN, Zhu et al. 2017:
    per-image statistics, identical in train and eval mode).

    Inputs whose H, W are not multiples of ``2**depth`` are reflect/zero padded and the output
    cropped back. Output: ``sigmoid`` of the last 1×1 conv, in [0, 1].
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 32, depth: int = 2,
                 skips: bool | str = True, dropout: float = 0.0, norm: str = "batch"):
        super().__init__()
        if depth < 1:
            raise ConfigError(f"unet depth={depth} must be >= 1.")
        norm = check_choice(norm, NORMS, "model.norm")
        mode = skip_mode(skips)
        self.depth, self.mode = depth, mode
        #: per decoder stage (coarsest first): does it get the encoder's features
        self.use_skip = [mode == "all" or (mode == "inner" and i > 0) for i in reversed(range(depth))]
        self.skips = any(self.use_skip)
        ch = [min(base * 2**i, 8 * base) for i in range(depth + 1)]
        self.inc = _conv(in_channels, ch[0], norm)
        self.downs = nn.ModuleList(_down(ch[i], ch[i + 1], norm=norm) for i in range(depth))
        self.mid = _conv(ch[-1], ch[-1], norm)
        self.ups = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i, skip in zip(reversed(range(depth)), self.use_skip, strict=True):
            self.ups.append(nn.Sequential(nn.ConvTranspose2d(ch[i + 1], ch[i], 4, 2, 1, bias=False),
                                          _norm(norm, ch[i]), nn.ReLU(inplace=True),
                                          nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()))
            self.fuse.append(_conv(ch[i] * (2 if skip else 1), ch[i], norm))
        self.out = nn.Conv2d(ch[0], out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        feats = [self.inc(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        y = self.mid(feats[-1])
        for i, (up, fuse) in enumerate(zip(self.ups, self.fuse, strict=True)):
            y = up(y)
            if self.use_skip[i]:
                y = torch.cat([y, feats[-2 - i]], 1)
            y = fuse(y)
        return torch.sigmoid(self.out(y))[..., :h, :w]


class PatchGAN(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017): a fully convolutional net giving one logit per
    overlapping patch instead of one per image, so it judges local texture / sharpness and the
    L1 term takes care of the low frequencies.

    ``forward(*images)`` concatenates its arguments along channels: Pix2Pix's **conditional**
    D gets ``(input, output)`` pairs, SRGAN's unconditional D the output alone. Layers:
    ``n_layers`` C-k blocks (4×4, stride 2; no BN on the first), then a 3×3 conv to one logit
    map. On 28×28 with ``n_layers=2``: a 7×7 grid of logits, each seeing a 10×10 patch.
    """

    def __init__(self, in_channels: int = 2, base: int = 32, n_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(n_layers):
            cout = min(base * 2**i, 8 * base)
            layers.append(_down(c, cout, norm=i > 0))
            c = cout
        layers.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, *images: Tensor) -> Tensor:
        x = torch.cat(images, 1) if len(images) > 1 else images[0]
        return self.net(x)


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.PReLU(c),
                                  nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SRNet(nn.Module):
    """SRGAN-style ×``scale`` generator (Ledig et al. 2017), small: conv 9×9 -> ``blocks``
    residual blocks at low resolution -> conv + PixelShuffle(``scale``) -> conv 9×9; the
    result is added to the **bicubic** upsampling of the input (global residual), so the
    net only learns what bicubic misses. 14×14 -> 28×28 for ``scale=2``.
    Output not clamped (a clamp would kill gradients); callers clamp to [0, 1] for display."""

    def __init__(self, channels: int = 1, width: int = 32, blocks: int = 4, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, 1, 4), nn.PReLU(width))
        self.body = nn.Sequential(*[ResBlock(width) for _ in range(blocks)],
                                  nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width))
        self.up = nn.Sequential(nn.Conv2d(width, width * scale**2, 3, 1, 1), nn.PixelShuffle(scale),
                                nn.PReLU(width))
        self.tail = nn.Conv2d(width, channels, 9, 1, 4)
        nn.init.zeros_(self.tail.weight)  # starts as bicubic exactly
        nn.init.zeros_(self.tail.bias)

    def forward(self, lr: Tensor) -> Tensor:
        h = self.head(lr)
        h = h + self.body(h)
        base = F.interpolate(lr, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.tail(self.up(h))


@MODELS.register("unet", help="U-Net generator with skip connections (Pix2Pix, Isola et al. 2017)",
                 tags=("method:pix2pix",))
def unet(in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, base: int = 32,
         depth: int = 2, skips: bool | str = True, dropout: float = 0.0, in_channels: int | None = None,
         norm: str = "batch") -> UNet:
    """``in_channels`` defaults to the image channels (num_classes is ignored). ``skips``:
    ``true``/``all`` (Pix2Pix), ``inner`` (no full-resolution skip, for CycleGAN) or
    ``false``/``none``; ``norm``: ``batch`` or ``instance``."""
    c = int(in_shape[0])
    return UNet(in_channels or c, c, base=base, depth=depth, skips=skips, dropout=dropout, norm=norm)


@MODELS.register("patchgan", help="PatchGAN discriminator: one logit per patch (Pix2Pix)")
def patchgan(in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, in_channels: int = 2,
             base: int = 32, n_layers: int = 2) -> PatchGAN:
    return PatchGAN(in_channels, base=base, n_layers=n_layers)


@MODELS.register("srnet", help="SRGAN-style x2 super-resolution generator (residual blocks + PixelShuffle)",
                 tags=("method:srgan",))
def srnet(in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, width: int = 32,
          blocks: int = 4, scale: int = 2) -> SRNet:
    """``in_shape`` is the **high-resolution** image shape (H, W must be multiples of ``scale``)."""
    if in_shape[1] % scale or in_shape[2] % scale:
        raise ConfigError(f"srnet: image size {tuple(in_shape[1:])} is not a multiple of scale={scale}.")
    return SRNet(int(in_shape[0]), width=width, blocks=blocks, scale=scale)
