"""Building blocks shared by the models: activations, norms, init schemes, conv blocks.

Everything here is small and explicit so that a student can read a model definition and
map each line to the course:

* :func:`activation` — the 7 activation functions of the course (§1.1, §1.8) by name;
* :func:`init_weights` — Xavier/Glorot and He/Kaiming initialisation (§1.5);
* :func:`norm_layer` — BatchNorm / LayerNorm / GroupNorm by name (§3.5, §3.6);
* :func:`conv_bn_act` — the ``Conv → BN → activation`` brick of chapter 4 (§4.4, §4.6);
* :class:`SeparableConv2d` — depthwise-separable convolution (§4.9, equation 4.10);
* :func:`count_parameters` / :func:`parameter_table` — the parameter counts of §1.2.2.

Bad names or values raise :class:`~profond.errors.ConfigError` naming the valid choices.
The argument types of the model builders live here too: :data:`Activation`, :data:`Init`
(``Literal`` choices) and :data:`InShape`, checked by the registry (:mod:`profond.base.coerce`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal, get_args

import torch
from torch import nn

from ..base.coerce import PosInt, Prob, Range, check_choice, coerce
from ..errors import ConfigError

#: ``in_shape`` of the image models
InShape = Annotated[
    tuple[PosInt, PosInt, PosInt], "channels, height, width, e.g. [1, 28, 28] or [3, 32, 32]"
]

# ----------------------------------------------------------------------------------------
# activations (course §1.1)

#: negative slope used by ``leaky_relu`` (PyTorch's default)
LEAKY_SLOPE = 0.01
#: initial slope of ``prelu`` (He et al. 2015, PyTorch's default)
PRELU_INIT = 0.25

Activation = Literal["sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu"]
ACTIVATIONS: tuple[str, ...] = get_args(Activation)

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
    "prelu": lambda: nn.PReLU(num_parameters=1, init=PRELU_INIT),
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module from its name: one of :data:`ACTIVATIONS` (``"Leaky-ReLU"``
    is ``leaky_relu``).

    ``prelu`` has one learnable slope (initialised to 0.25); ``leaky_relu`` uses slope 0.01.
    """
    return _ACTIVATIONS[check_choice(name, ACTIVATIONS, "activation")]()


# ----------------------------------------------------------------------------------------
# normalisation layers (course §3.5 BatchNorm, §3.6 LayerNorm)

NORMS: tuple[str, ...] = ("batch", "layer", "group", "none")


def norm_layer(name: str, channels: int, dims: int = 2, groups: int = 8) -> nn.Module:
    """A normalisation layer for ``channels`` features.

    ``dims`` is 1 for (B, C) features (after a Linear) and 2 for (B, C, H, W) maps.

    * ``batch`` — BatchNorm1d / BatchNorm2d (§3.5);
    * ``layer`` — LayerNorm over the features (§3.6); for maps, GroupNorm with one group,
      which normalises over (C, H, W) like a LayerNorm on images;
    * ``group`` — GroupNorm with ``groups`` groups (or fewer when ``channels`` is small);
    * ``none`` — identity.
    """
    key = check_choice(name, NORMS, "norm")
    if dims not in (1, 2):
        raise ConfigError(f"norm dims must be 1 or 2, got {dims}.")
    if key == "none":
        return nn.Identity()
    if key == "batch":
        return nn.BatchNorm1d(channels) if dims == 1 else nn.BatchNorm2d(channels)
    if key == "layer":
        return nn.LayerNorm(channels) if dims == 1 else nn.GroupNorm(1, channels)
    g = math.gcd(channels, groups)  # largest group count <= groups dividing channels
    return nn.GroupNorm(g, channels)


# ----------------------------------------------------------------------------------------
# weight initialisation (course §1.5)

INITS: tuple[str, ...] = ("default", "xavier_uniform", "xavier_normal", "he")
#: an :data:`INITS` scheme, or ``kaiming``, another name of ``he``
Init = Literal["default", "xavier_uniform", "xavier_normal", "he", "kaiming"]


def init_weights(module: nn.Module, scheme: str = "default", activation: str = "relu") -> nn.Module:
    """Initialise every Linear / Conv weight of ``module`` in place (course §1.5).

    * ``default`` — leave PyTorch's own initialisation untouched;
    * ``xavier_uniform`` — :math:`W \\sim U(-\\sqrt{6/(n_{in}+n_{out})}, +\\sqrt{6/(n_{in}+n_{out})})`
      (Glorot & Bengio 2010, gain 1 as in the course);
    * ``xavier_normal`` — :math:`W \\sim N(0, 2/(n_{in}+n_{out}))`;
    * ``he`` — :math:`W \\sim N(0, 2/n_{in})` (He et al. 2015, fan-in, ReLU gain); for
      ``leaky_relu`` / ``prelu`` the gain uses their negative slope: :math:`2/((1+a^2) n_{in})`.

    Explicit schemes set biases to zero. ``n_in`` counts ``in_channels/groups * k*k`` for
    convolutions, as PyTorch does. Returns ``module`` for chaining.
    """
    scheme = check_choice(scheme, get_args(Init), "init")
    scheme = "he" if scheme == "kaiming" else scheme
    act = check_choice(activation, ACTIVATIONS, "activation")
    if scheme == "default":
        return module
    slope = {"leaky_relu": LEAKY_SLOPE, "prelu": PRELU_INIT}.get(act, 0.0)
    for m in module.modules():
        if not isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            continue
        if scheme == "xavier_uniform":
            nn.init.xavier_uniform_(m.weight)
        elif scheme == "xavier_normal":
            nn.init.xavier_normal_(m.weight)
        else:  # he
            nonlin = "leaky_relu" if slope else "relu"
            nn.init.kaiming_normal_(m.weight, a=slope, mode="fan_in", nonlinearity=nonlin)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


# ----------------------------------------------------------------------------------------
# convolutions (course §4.2, §4.9)


class SeparableConv2d(nn.Module):
    """Depthwise-separable convolution (course §4.9).

    A standard ``k×k`` convolution ``C_in → C_out`` costs ``C_in·C_out·k²`` weights (and
    multiplications per output position). The separable version factorises it into

    1. *depthwise*: one ``k×k`` filter per input channel (``groups=C_in``): ``C_in·k²``;
    2. *pointwise*: a ``1×1`` convolution mixing channels: ``C_in·C_out``;

    so the ratio of costs is (equation 4.10)

    .. math:: \\frac{C_{in} k^2 + C_{in} C_{out}}{C_{in} C_{out} k^2} = \\frac{1}{C_{out}} + \\frac{1}{k^2}.

    ``stride`` and ``padding`` apply to the depthwise step (default padding ``k//2``,
    "same" size for odd ``k``); only the pointwise step carries a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        bias: bool = True,
    ):
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=in_channels,
            bias=False,
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def separable_ratio(out_channels: int, kernel_size: int) -> float:
    """Equation 4.10: separable / standard cost = ``1/C_out + 1/k²``."""
    return 1.0 / out_channels + 1.0 / kernel_size**2


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int | None = None,
    bias: bool = True,
    separable: bool = False,
) -> nn.Module:
    """A ``k×k`` convolution, standard or depthwise-separable (§4.9); padding ``k//2`` by default."""
    padding = kernel_size // 2 if padding is None else padding
    if separable:
        return SeparableConv2d(in_channels, out_channels, kernel_size, stride, padding, bias)
    return nn.Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias
    )


def conv_bn_act(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    act: str | None = "relu",
    norm: str = "batch",
    separable: bool = False,
) -> nn.Sequential:
    """``Conv k×k → Norm → activation``, the brick of the VGG-style networks (§4.4.3, §4.6).

    The convolution has no bias when a norm follows (the norm's shift replaces it).
    ``act=None`` leaves the activation out (e.g. before a residual addition, §4.4.4).
    """
    layers: list[nn.Module] = [
        conv2d(
            in_channels, out_channels, kernel_size, stride, bias=norm == "none", separable=separable
        )
    ]
    if norm != "none":
        layers.append(norm_layer(norm, out_channels, dims=2))
    if act is not None:
        layers.append(activation(act))
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------
# parameter counting (course §1.2.2)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared tensors counted once), as in §1.2.2."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """``[(name, shape, count), ...]`` for every parameter, in registration order."""
    return [(name, tuple(p.shape), p.numel()) for name, p in model.named_parameters()]


# ----------------------------------------------------------------------------------------
# argument checks in code (profond.metrics.features); a registered builder needs none of
# them: the registry checks its arguments against its annotations (InShape, PosInt, ...)


def check_in_shape(in_shape: object) -> tuple[int, int, int]:
    """``in_shape`` as a ``(C, H, W)`` tuple of positive ints, else ConfigError."""
    return coerce(in_shape, InShape, "in_shape")


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, else ConfigError naming ``name``."""
    return coerce(value, Annotated[int, Range(minimum)], name)


def check_prob(name: str, value: object) -> float:
    """A dropout probability in [0, 1), else ConfigError naming ``name``."""
    return coerce(value, Prob, name)
