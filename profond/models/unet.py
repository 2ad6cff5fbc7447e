"""Image-to-image networks: the U-Net generator and PatchGAN discriminator of Pix2Pix, and a
small SRGAN-style super-resolution generator.

Course: ``/work/shared/course/004_782aa6af8ddb8f45.txt`` ("Pix2Pix: Architecture du
Générateur (U-Net)", "PatchGAN", "Super-Résolution avec GANs / SRGAN") and
``003_5fd00316ac58b774.txt`` ch. 8 (GANs). Papers: Isola et al. 2017 (Pix2Pix: U-Net with
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

from ..errors import ConfigError
from ..registry import MODELS


def _down(cin: int, cout: int, norm: bool = True) -> nn.Sequential:
    """Conv 4×4 stride 2 (halves H, W) -> BN -> LeakyReLU(0.2): Isola et al.'s C-k block."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 4, 2, 1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """U-Net (encoder / decoder with skip connections at every resolution).

    ``depth`` stride-2 downsamplings (channels ``base·2^i``, capped at ``8·base``), a
    bottleneck, then ConvTranspose upsamplings; the decoder at each resolution gets the
    encoder's features of the **same resolution** concatenated (``skips=True``), including the
    full-resolution ones, which carry the fine detail of the input straight to the output (the
    course's "connexions de sauts ... cruciales pour préserver les détails fins").
    ``skips=False`` is the plain encoder-decoder ablation of Isola et al. (fig. 5).

    Inputs whose H, W are not multiples of ``2**depth`` are reflect/zero padded and the output
    cropped back. Output: ``sigmoid`` of the last 1×1 conv, in [0, 1].
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, base: int = 32, depth: int = 2,
                 skips: bool = True, dropout: float = 0.0):
        super().__init__()
        if depth < 1:
            raise ConfigError(f"unet depth={depth} must be >= 1.")
        self.depth, self.skips = depth, skips
        ch = [min(base * 2**i, 8 * base) for i in range(depth + 1)]
        self.inc = _conv(in_channels, ch[0])
        self.downs = nn.ModuleList(_down(ch[i], ch[i + 1]) for i in range(depth))
        self.mid = _conv(ch[-1], ch[-1])
        self.ups = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in reversed(range(depth)):
            self.ups.append(nn.Sequential(nn.ConvTranspose2d(ch[i + 1], ch[i], 4, 2, 1, bias=False),
                                          nn.BatchNorm2d(ch[i]), nn.ReLU(inplace=True),
                                          nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()))
            self.fuse.append(_conv(ch[i] * (2 if skips else 1), ch[i]))
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
            if self.skips:
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
         depth: int = 2, skips: bool = True, dropout: float = 0.0, in_channels: int | None = None) -> UNet:
    """``in_channels`` defaults to the image channels (num_classes is ignored)."""
    c = int(in_shape[0])
    return UNet(in_channels or c, c, base=base, depth=depth, skips=skips, dropout=dropout)


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
