"""GAN generators and discriminators (course chapter 8): fully connected and DCGAN, optionally
class-conditional, with an optional spectral normalisation of the discriminator.

A GAN "model" is one :class:`GAN` module holding the generator ``.G`` and the discriminator
``.D``; the ``gan`` method trains them as two nets with two optimizers (``G`` and ``D``).

* ``G(z, labels=None)`` maps ``z ~ N(0, I)`` of shape ``(N, latent_dim)`` to images in
  **[-1, 1]** (Tanh output, §8.6 rule 4); the method converts to [0, 1] at its interface.
* ``D(x, labels=None)`` returns one **raw score per image**, shape ``(N,)``: a logit for the
  log-likelihood losses (``D = sigmoid(logit)`` in eq. 8.1), or a critic score for the
  Wasserstein / hinge losses. There is never a final sigmoid: the same network is a
  discriminator or a critic depending on the loss (:mod:`profond.methods.gan_losses`).

Conditional variants (``conditional: true``, cGAN, eq. 8.17 and exercise 8.4): ``G(z, y)``
concatenates a learned label embedding to ``z``; ``D(x, y)`` concatenates a label embedding to
its input (to the flattened image for the MLP, as one extra ``H x W`` input channel for DCGAN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from ..base.coerce import PosInt, Prob
from ..errors import ConfigError
from ..nn.layers import InShape
from ..registry import MODELS

DNorm = Literal["batch", "layer", "none"]
D_NORMS: tuple[str, ...] = get_args(DNorm)


class GAN(nn.Module):
    """A generator ``G`` and a discriminator / critic ``D`` (plus what the method needs to know)."""

    def __init__(self, G: nn.Module, D: nn.Module, latent_dim: int, num_classes: int, conditional: bool):
        super().__init__()
        self.G = G
        self.D = D
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.conditional = bool(conditional)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Generated images in [-1, 1] (the module's forward is the generator)."""
        return self.G(z, labels)


def dcgan_init(m: nn.Module) -> None:
    """DCGAN initialisation (Radford et al. 2016, course §8.7 ``weights_init``): conv weights
    ``N(0, 0.02)``, batch-norm scales ``N(1, 0.02)`` and shifts 0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        w = getattr(m, "parametrizations", None)
        weight = w.weight.original if w is not None and hasattr(w, "weight") else m.weight
        nn.init.normal_(weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def _maybe_sn(layer: nn.Module, sn: bool) -> nn.Module:
    return _sn(layer) if sn else layer


# ----------------------------------------------------------------------------------------
# fully connected GAN (the seed's model: G 100-256-512-784 Tanh, D 784-512-256-1)


class MLPGenerator(nn.Module):
    def __init__(self, in_shape: Sequence[int], latent_dim: int, hidden: Sequence[int], num_classes: int,
                 conditional: bool, embed_dim: int):
        super().__init__()
        self.out_shape = tuple(int(v) for v in in_shape)
        self.embed = nn.Embedding(num_classes, embed_dim) if conditional else None
        layers: list[nn.Module] = []
        d = latent_dim + (embed_dim if conditional else 0)
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LeakyReLU(0.2, inplace=True)]
            d = h
        layers += [nn.Linear(d, math.prod(self.out_shape)), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ConfigError("a conditional generator needs labels.")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z).view(len(z), *self.out_shape)


class MLPDiscriminator(nn.Module):
    def __init__(self, in_shape: Sequence[int], hidden: Sequence[int], num_classes: int, conditional: bool,
                 embed_dim: int, spectral_norm: bool, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(num_classes, embed_dim) if conditional else None
        layers: list[nn.Module] = []
        d = math.prod(int(v) for v in in_shape) + (embed_dim if conditional else 0)
        for h in hidden:
            layers += [_maybe_sn(nn.Linear(d, h), spectral_norm), nn.LeakyReLU(0.2, inplace=True)]
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(_maybe_sn(nn.Linear(d, 1), spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = x.flatten(1)
        if self.embed is not None:
            if labels is None:
                raise ConfigError("a conditional discriminator needs labels.")
            h = torch.cat([h, self.embed(labels)], dim=1)
        return self.net(h).view(-1)


@MODELS.register("gan", help="fully connected GAN (G 100-256-512-784 Tanh, D 784-512-256-1), "
                             "optionally conditional (§8.5) / spectral-normalised", tags=("method:gan",))
def gan(in_shape: InShape = (1, 28, 28), num_classes: PosInt = 10, latent_dim: PosInt = 100,
        g_hidden: tuple[PosInt, ...] = (256, 512), d_hidden: tuple[PosInt, ...] = (512, 256),
        conditional: bool = False, embed_dim: PosInt = 10, spectral_norm: bool = False,
        dropout: Prob = 0.0) -> GAN:
    G = MLPGenerator(in_shape, latent_dim, list(g_hidden), num_classes, conditional, embed_dim)
    D = MLPDiscriminator(in_shape, list(d_hidden), num_classes, conditional, embed_dim, spectral_norm, dropout)
    return GAN(G, D, latent_dim, num_classes, conditional)


# ----------------------------------------------------------------------------------------
# DCGAN (§8.6 guidelines, §8.7 architecture)


def dcgan_sizes(h: int, w: int) -> list[int]:
    """Spatial sizes of the discriminator's feature maps, image first, down to 4x4:
    28 -> [28, 14, 7, 4] (§8.7), 32 -> [32, 16, 8, 4], 8 -> [8, 4]. Each step halves
    (rounding up); the generator runs it backwards from a 4x4 map."""
    if h != w:
        raise ConfigError(f"dcgan needs square images, got {h}x{w}.")
    sizes = [h]
    while sizes[-1] > 4:
        sizes.append(math.ceil(sizes[-1] / 2))
    if sizes[-1] != 4:
        raise ConfigError(f"dcgan cannot reach a 4x4 map from {h}x{w} by halving (sizes {sizes}); "
                          "use 8, 14, 16, 28, 32, 64... pixel images or model.name=gan.")
    return sizes


class DCGenerator(nn.Module):
    """``z -> ConvT(4x4, stride 1) -> 4x4`` then strided transposed convolutions up to the image
    size (kernel 4 to double, kernel 3 for 4 -> 7), BatchNorm + ReLU, Tanh output, no bias
    (§8.7: for 28x28, 4f x 4 x 4 -> 2f x 7 x 7 -> f x 14 x 14 -> 1 x 28 x 28)."""

    def __init__(self, in_shape: Sequence[int], latent_dim: int, features: int, num_classes: int,
                 conditional: bool, embed_dim: int):
        super().__init__()
        c, h, w = (int(v) for v in in_shape)
        sizes = dcgan_sizes(h, w)[::-1]  # 4, 7, 14, 28
        n_up = len(sizes) - 1
        self.embed = nn.Embedding(num_classes, embed_dim) if conditional else None
        d_in = latent_dim + (embed_dim if conditional else 0)
        ch = features * 2 ** (n_up - 1) if n_up else features
        layers: list[nn.Module] = [nn.ConvTranspose2d(d_in, ch, 4, 1, 0, bias=False)]
        for i, (s, t) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers += [nn.BatchNorm2d(ch), nn.ReLU(True)]
            last = i == n_up - 1
            out_ch = c if last else ch // 2
            k = 4 if t == 2 * s else 3  # 4 -> 7: (4 - 1) * 2 - 2 + 3 = 7
            layers.append(nn.ConvTranspose2d(ch, out_ch, k, 2, 1, bias=False))
            ch = out_ch
        if n_up == 0:  # 4x4 images: the first layer already has the size
            layers += [nn.BatchNorm2d(ch), nn.ReLU(True), nn.Conv2d(ch, c, 3, 1, 1, bias=False)]
        layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ConfigError("a conditional generator needs labels.")
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z[:, :, None, None])


class DCDiscriminator(nn.Module):
    """Strided convolutions down to 4x4 (kernel 4, or 3 for 7 -> 4), LeakyReLU(0.2), a norm on
    every layer but the first (§8.6 rule 2), then a 4x4 convolution to one score (§8.7, without
    its final Sigmoid: the losses take logits). ``d_norm``: ``batch`` (the course, bias-free
    convs), ``layer`` (GroupNorm(1, C), for WGAN-GP whose per-example penalty forbids batch
    statistics) or ``none`` (with ``spectral_norm``, SN-GAN); those two keep their conv biases."""

    def __init__(self, in_shape: Sequence[int], features: int, num_classes: int, conditional: bool,
                 spectral_norm: bool, d_norm: str):
        super().__init__()
        c, h, w = (int(v) for v in in_shape)
        sizes = dcgan_sizes(h, w)
        self.hw = (h, w)
        self.embed = nn.Embedding(num_classes, h * w) if conditional else None
        ch_in = c + (1 if conditional else 0)
        layers: list[nn.Module] = []
        ch = features
        # DCGAN's convs have no bias because a norm follows them; without any norm the biases
        # are needed: a bias-free conv + LeakyReLU stack is positively homogeneous (D(a x) =
        # a D(x)) and cannot tell a -1 background from a grey one (G then draws grey samples).
        # A per-example (layer) norm after such a stack is worse: it divides the scale out, so
        # D(a x) = D(x) for every a > 0 and the critic cannot see an image's contrast at all
        # (its input gradient is orthogonal to x, so G gets no push away from a flat grey).
        # The layer-norm critic keeps its biases on every conv, as the WGAN-GP critic of
        # Gulrajani et al. does; BatchNorm (the course's §8.7 DCGAN) normalises over the batch,
        # not per example, and its convs stay bias-free.
        bias = d_norm != "batch"
        for i, s in enumerate(sizes[:-1]):
            k = 4 if s % 2 == 0 else 3  # 7 -> 4: (7 + 2 - 3) / 2 + 1 = 4
            layers.append(_maybe_sn(nn.Conv2d(ch_in, ch, k, 2, 1, bias=bias), spectral_norm))
            if i > 0 and d_norm == "batch":
                layers.append(nn.BatchNorm2d(ch))
            elif i > 0 and d_norm == "layer":
                layers.append(nn.GroupNorm(1, ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch_in, ch = ch, ch * 2
        layers.append(_maybe_sn(nn.Conv2d(ch_in, 1, 4, 1, 0, bias=bias), spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            if labels is None:
                raise ConfigError("a conditional discriminator needs labels.")
            x = torch.cat([x, self.embed(labels).view(len(x), 1, *self.hw).to(x.dtype)], dim=1)
        return self.net(x).view(-1)


@MODELS.register("dcgan", help="DCGAN (§8.7; 28x28: 4f-2f-f transposed convs / f-2f-4f convs), "
                               "optionally conditional (§8.5), spectral norm, critic norm",
                 tags=("method:gan",))
def dcgan(in_shape: InShape = (1, 28, 28), num_classes: PosInt = 10, latent_dim: PosInt = 100,
          features_g: PosInt = 64, features_d: PosInt = 64, conditional: bool = False,
          embed_dim: PosInt = 10, spectral_norm: bool = False, d_norm: DNorm = "batch") -> GAN:
    G = DCGenerator(in_shape, latent_dim, features_g, num_classes, conditional, embed_dim)
    D = DCDiscriminator(in_shape, features_d, num_classes, conditional, spectral_norm, d_norm)
    G.apply(dcgan_init)
    D.apply(dcgan_init)
    return GAN(G, D, latent_dim, num_classes, conditional)
