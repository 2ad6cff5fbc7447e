"""Autoencoders of chapter 9: the plain / linear autoencoder (def. 9.2) and the VAE (§9.4-9.8).

Pure ``nn.Module`` s, no training logic (losses live in :mod:`profond.methods.autoencoder`
and :mod:`profond.methods.vae`). Both models are an *encoder* ``f_φ`` and a *decoder*
``g_θ`` built by the same two builders:

* ``arch: mlp`` — flatten, ``hidden`` Linear+activation layers, then a Linear to the code;
  the decoder mirrors it (``hidden`` reversed). ``hidden: [512]`` with ``latent_dim: 20`` is
  the course's §9.8 VAE ``784-512-20``; the table 9.1 ablation also uses ``[256, 256]``.
* ``arch: conv`` — exercise 9.3: three ``3×3`` stride-2 convolutions, each followed by
  BatchNorm and ReLU (``28 → 14 → 7 → 4``; ``8 → 4 → 2 → 1`` for sklearn digits), flatten,
  optional ``hidden`` Linear layers, a Linear to the code. The decoder is symmetric: a Linear
  (+ReLU) back to the ``C×h×w`` map, then three stride-2 up-sampling steps, either
  transposed convolutions (``upsample: transpose``, with the ``output_padding`` that lands
  exactly on the encoder's sizes) or nearest-neighbour up-sampling + ``3×3`` conv
  (``upsample: nearest``, free of checkerboard artefacts). Images must be at least 8 px
  (three halvings); smaller ones raise :class:`~profond.errors.ConfigError`.

The decoder returns **logits** ``(N, C, H, W)``: the methods apply a sigmoid (pixel means in
[0, 1]) or use BCE-with-logits, which is stable where ``BCE(sigmoid(·))`` of the §9.8 code is
not. A **linear** AE (``linear: true``, mlp only) has no activation anywhere and an identity
output (``out_activation = "identity"``): its reconstruction is the affine map
``x̂ = D(Ex + b₁) + b₂``. The biases are kept on purpose: they absorb the data mean, so the
MSE-optimal ``D`` spans the top-``k`` principal subspace of the *centred* data, i.e. what
``sklearn.decomposition.PCA`` finds (Baldi & Hornik 1989); ``hidden: []`` gives the classic
one-matrix-each-way linear AE.

The VAE encoder outputs ``2·latent_dim`` numbers, split into the posterior mean ``μ`` and
**log-variance** ``log σ²`` (the parametrisation the course recommends, eq. 9.26:
``σ = exp(½ log σ²)`` needs no positivity constraint).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, get_args

import torch
from torch import nn

from ..base.coerce import PosInt
from ..errors import ConfigError
from ..nn.layers import Activation, InShape
from ..nn.layers import activation as make_activation
from ..registry import MODELS

Arch = Literal["mlp", "conv"]
Upsample = Literal["transpose", "nearest"]
CodeActivation = Literal["none", "sigmoid", "relu"]
ARCHS, UPSAMPLES, CODE_ACTIVATIONS = get_args(Arch), get_args(Upsample), get_args(CodeActivation)
#: the conv widths, one per stride-2 convolution (:data:`CONV_DOWNS`)
Channels = Annotated[
    tuple[PosInt, PosInt, PosInt], "one width per stride-2 convolution of exercise 9.3, e.g. [32, 64, 128]"
]
#: default ``hidden`` widths per architecture (``hidden: null`` in a config)
DEFAULT_HIDDEN = {"mlp": [512], "conv": []}
#: the conv trunk halves the image this many times (exercise 9.3: three stride-2 convs)
CONV_DOWNS = 3


# ----------------------------------------------------------------------------------------
# MLP encoder / decoder


def _mlp(sizes: list[int], act: str | None, *, last_act: bool = False, bias: bool = True) -> nn.Sequential:
    """``Linear → act → ... → Linear`` through ``sizes`` (activation after the last layer if ``last_act``)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b, bias=bias))
        if act is not None and (i < len(sizes) - 2 or last_act):
            layers.append(make_activation(act))
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """``x ↦ W_L σ(… σ(W_1 vec(x) + b_1) …) + b_L`` with ``out_dim`` outputs."""

    def __init__(self, in_shape: tuple[int, int, int], hidden: list[int], out_dim: int, act: str | None):
        super().__init__()
        self.net = _mlp([math.prod(in_shape), *hidden, out_dim], act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class MLPDecoder(nn.Module):
    """``z ↦`` logits ``(N, C, H, W)``: the encoder's layers in reverse order."""

    def __init__(self, in_shape: tuple[int, int, int], hidden: list[int], latent_dim: int, act: str | None):
        super().__init__()
        self.shape = tuple(in_shape)
        self.net = _mlp([latent_dim, *reversed(hidden), math.prod(in_shape)], act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.shape)


# ----------------------------------------------------------------------------------------
# convolutional encoder / decoder (exercise 9.3)


def conv_sizes(size: int, downs: int = CONV_DOWNS) -> list[int]:
    """Spatial sizes through ``downs`` ``3×3``/stride-2/padding-1 convs: ``n → ⌈n/2⌉``."""
    sizes = [size]
    for _ in range(downs):
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def check_conv_shape(in_shape: tuple[int, int, int]) -> None:
    _, h, w = in_shape
    need = 2**CONV_DOWNS
    if h < need or w < need:
        raise ConfigError(
            f"arch='conv' needs images of at least {need}x{need} pixels (three stride-2 "
            f"convolutions, exercise 9.3); this dataset's images are {h}x{w}. Use arch='mlp'."
        )


class ConvEncoder(nn.Module):
    """Three ``Conv 3×3 stride 2 → BatchNorm → ReLU`` blocks, flatten, MLP to ``out_dim``."""

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], hidden: list[int],
                 out_dim: int, act: str):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        prev = c
        for ch in channels:
            layers += [nn.Conv2d(prev, ch, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(ch),
                       make_activation(act)]
            prev = ch
        self.features = nn.Sequential(*layers)
        flat = prev * conv_sizes(h)[-1] * conv_sizes(w)[-1]
        self.head = _mlp([flat, *hidden, out_dim], act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    """Linear(s) to a ``C×h×w`` map, then three stride-2 up-sampling steps back to ``in_shape``.

    Every step but the last is followed by BatchNorm + ReLU; the last one outputs logits.
    ``transpose``: ``ConvTranspose2d(3, stride 2, padding 1, output_padding)`` maps ``n`` to
    ``2n - 1 + output_padding``, and ``output_padding ∈ {0, 1}`` is chosen to land on the
    encoder's size at that depth (``4 → 7 → 14 → 28``). ``nearest``: ``Upsample(size)`` then a
    ``3×3`` convolution.
    """

    def __init__(self, in_shape: tuple[int, int, int], channels: list[int], hidden: list[int],
                 latent_dim: int, act: str, upsample: str):
        super().__init__()
        c, h, w = in_shape
        hs, ws = conv_sizes(h), conv_sizes(w)
        self.start = (channels[-1], hs[-1], ws[-1])
        self.head = _mlp([latent_dim, *reversed(hidden), math.prod(self.start)], act, last_act=True)
        outs = [*reversed(channels[:-1]), c]  # channels after each up-sampling step
        layers: list[nn.Module] = []
        prev = channels[-1]
        for i, ch in enumerate(outs):
            depth = CONV_DOWNS - 1 - i  # the encoder size this step must reach
            target = (hs[depth], ws[depth])
            last = i == len(outs) - 1
            if upsample == "transpose":
                n = (hs[depth + 1], ws[depth + 1])
                pad = (target[0] - (2 * n[0] - 1), target[1] - (2 * n[1] - 1))
                layers.append(nn.ConvTranspose2d(prev, ch, 3, stride=2, padding=1, output_padding=pad,
                                                 bias=last))
            else:
                layers += [nn.Upsample(size=target, mode="nearest"),
                           nn.Conv2d(prev, ch, 3, padding=1, bias=last)]
            if not last:
                layers += [nn.BatchNorm2d(ch), make_activation(act)]
            prev = ch
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.head(z).view(-1, *self.start))


def build_encoder_decoder(
    in_shape: tuple[int, int, int], arch: str, hidden: list[int], out_dim: int, latent_dim: int,
    act: str | None, channels: list[int], upsample: str,
) -> tuple[nn.Module, nn.Module]:
    """Encoder with ``out_dim`` outputs and decoder from ``latent_dim`` to logits of ``in_shape``."""
    if arch == "mlp":
        return (MLPEncoder(in_shape, hidden, out_dim, act),
                MLPDecoder(in_shape, hidden, latent_dim, act))
    check_conv_shape(in_shape)
    assert act is not None
    return (ConvEncoder(in_shape, channels, hidden, out_dim, act),
            ConvDecoder(in_shape, channels, hidden, latent_dim, act, upsample))


# ----------------------------------------------------------------------------------------
# the models


class AutoEncoder(nn.Module):
    """Deterministic autoencoder (def. 9.2): ``z = f_φ(x)``, ``x̂ = g_θ(z)``.

    ``encode(x)`` returns the code ``z`` (after ``code_activation``), ``decode(z)`` the
    decoder's raw output: logits (``out_activation = "sigmoid"``) or, for a linear AE, the
    reconstruction itself (``out_activation = "identity"``). ``forward(x)`` returns
    ``(decode(z), z)``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, *,
                 code_activation: str = "none", linear: bool = False, arch: str = "mlp"):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = latent_dim
        self.code_activation = code_activation
        self.linear = linear
        self.arch = arch
        self.out_activation = "identity" if linear else "sigmoid"
        self.code_act = {"none": nn.Identity, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}[code_activation]()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.code_act(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decode(z), z)`` with ``z = encode(x)`` (the methods need the code for penalties)."""
        z = self.encode(x)
        return self.decode(z), z


class VAE(nn.Module):
    """Variational autoencoder (§9.3-9.8): Gaussian encoder ``q_φ(z|x) = N(μ, diag σ²)``.

    ``encode(x) -> (μ, log σ²)`` (eq. 9.26), ``decode(z) -> logits``; ``forward(x, eps)``
    is the whole reparameterised pass (eq. 9.14), the one entry point a DDP / compiled
    wrapper sees during training.
    """

    out_activation = "sigmoid"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int, arch: str = "mlp"):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim = latent_dim
        self.arch = arch

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, μ, log σ², z)`` with ``z = μ + σ ⊙ ε`` (eq. 9.14).

        ``eps``: ``(N, d)`` for one sample per image, or ``(k, N, d)`` for ``k`` samples (IWAE,
        eq. 9.29; then ``z`` is ``(k, N, d)`` and ``logits`` ``(k·N, C, H, W)``, sample-major).
        ``None`` draws ``ε ~ N(0, I)`` from the global RNG, like the §9.8 code.
        """
        mu, logvar = self.encode(x)
        if eps is None:
            eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        return self.decode(z.reshape(-1, self.latent_dim)), mu, logvar, z


@MODELS.register("ae", help="autoencoder, mlp / conv / linear, with an optional sigmoid code (def. 9.2)",
                 tags=("method:autoencoder",))
def ae(
    in_shape: InShape = (1, 28, 28),
    num_classes: int = 10,
    arch: Arch = "mlp",
    hidden: list[PosInt] | None = None,
    latent_dim: PosInt = 32,
    activation: Activation = "relu",
    channels: Channels = (32, 64, 128),
    upsample: Upsample = "transpose",
    linear: bool = False,
    code_activation: CodeActivation = "none",
) -> nn.Module:
    """Autoencoder ``prod(in_shape) → hidden… → latent_dim → …hidden → prod(in_shape)``.

    ``arch``: mlp | conv (exercise 9.3); ``hidden``: Linear widths (default [512] for mlp,
    [] for conv, where they sit between the conv trunk and the code); ``channels``: the
    three conv widths; ``upsample``: transpose | nearest (conv decoder); ``linear``: no
    activations and an identity output (mlp only; compare with PCA); ``code_activation``:
    none | sigmoid | relu on the code (sigmoid for the KL sparsity penalty).
    ``num_classes`` is ignored (kept for the common builder signature).
    """
    if linear and arch != "mlp":
        raise ConfigError("linear=true is for arch='mlp' (a linear autoencoder has no convolutions, "
                          "BatchNorm or ReLU); set model.arch=mlp.")
    if linear and code_activation != "none":
        raise ConfigError("linear=true needs code_activation='none' (a linear AE has no activation).")
    hidden = DEFAULT_HIDDEN[arch] if hidden is None else hidden
    enc, dec = build_encoder_decoder(in_shape, arch, hidden, latent_dim, latent_dim,
                                     None if linear else activation, list(channels), upsample)
    return AutoEncoder(enc, dec, latent_dim, code_activation=code_activation, linear=linear, arch=arch)


@MODELS.register("vae", help="variational autoencoder, mlp (§9.8: 784-512-20) or conv (exercise 9.3)",
                 tags=("method:vae",))
def vae(
    in_shape: InShape = (1, 28, 28),
    num_classes: int = 10,
    arch: Arch = "mlp",
    hidden: list[PosInt] | None = None,
    latent_dim: PosInt = 20,
    activation: Activation = "relu",
    channels: Channels = (32, 64, 128),
    upsample: Upsample = "transpose",
) -> nn.Module:
    """VAE whose encoder outputs ``(μ, log σ²)`` (eq. 9.26) and decoder logits.

    Defaults are the course's §9.8 model: ``784 → 512 → (μ, log σ²) ∈ R^{20+20}``,
    ``20 → 512 → 784``, ReLU. ``arch``, ``hidden``, ``channels``, ``upsample`` as for ``ae``.
    ``num_classes`` is ignored (kept for the common builder signature).
    """
    hidden = DEFAULT_HIDDEN[arch] if hidden is None else hidden
    enc, dec = build_encoder_decoder(in_shape, arch, hidden, 2 * latent_dim, latent_dim, activation,
                                     list(channels), upsample)
    return VAE(enc, dec, latent_dim, arch=arch)
