"""Convolutional networks of chapter 4: LeNet-5, VGG-style, the §4.6 CIFAR-10 CNN, ResNet.

Every model has the same two-part layout so that transfer learning (§4.7) can address its
parts by name: a convolutional trunk (``features``; for ResNet ``stem``, ``layer1``,
``layer2``, ``layer3``) and a classifier ``head`` ending with the Linear that returns the
logits. All builders take ``in_shape=(C, H, W)`` and work on 1×28×28 and 3×32×32 images;
``separable=True`` swaps the 3×3 convolutions (all but the first one, which sees the raw
image) for depthwise-separable ones (§4.9).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..base.coerce import NonNegInt, PosInt, Prob
from ..errors import ConfigError
from ..nn.layers import Activation, InShape, conv2d, conv_bn_act
from ..nn.layers import activation as make_activation
from ..registry import MODELS


def _after_pools(
    in_shape: tuple[int, int, int], n_pools: int, arg: str = "in_shape"
) -> tuple[int, int]:
    """Spatial size after ``n_pools`` 2×2 poolings; ConfigError if it reaches zero."""
    _, h, w = in_shape
    h2, w2 = h >> n_pools, w >> n_pools
    if h2 < 1 or w2 < 1:
        raise ConfigError(
            f"{arg}={list(in_shape)} is too small: this architecture halves the image {n_pools} "
            f"times, so height and width must be at least {2**n_pools}."
        )
    return h2, w2


class _TrunkHead(nn.Module):
    """``head(features(x))``: the layout shared by the chapter-4 CNNs."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ----------------------------------------------------------------------------------------
# LeNet-5 (course §4.4.1)


@MODELS.register("lenet5", help="LeNet-5: conv5-pool-conv5-pool-fc120-fc84 (course §4.4.1)")
def lenet5(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    activation: Activation = "tanh",
    pool: Literal["avg", "max"] = "avg",
) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998), as drawn in §4.4.1 for 32×32 inputs.

    ``32×32 → conv5 (6) → 28×28 → pool → 14×14 → conv5 (16) → 10×10 → pool → 5×5 →
    FC 120 → FC 84 → num_classes``. Images smaller than 32 px (MNIST's 28×28) get a
    padding of 2 on the first convolution, as the course does, so the maps are the same.
    ``activation``: tanh (original) or any name of :data:`profond.nn.ACTIVATIONS`;
    ``pool``: avg (original) or max.
    """
    c, h, w = in_shape
    pad = 2 if min(h, w) < 32 else 0
    # conv5 shrinks by 4, pool halves: s -> (s + 2p - 4) // 2 -> ((..) - 4) // 2
    fh, fw = ((h + 2 * pad - 4) // 2 - 4) // 2, ((w + 2 * pad - 4) // 2 - 4) // 2
    if fh < 1 or fw < 1:
        raise ConfigError(
            f"in_shape={list(in_shape)} is too small for lenet5: height and width must be "
            "at least 13 (28×28 and 32×32 are the intended sizes)."
        )
    pool_layer = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
    features = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=pad), make_activation(activation), pool_layer(2),
        nn.Conv2d(6, 16, 5), make_activation(activation), pool_layer(2),
    )  # fmt: skip
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(16 * fh * fw, 120), make_activation(activation),
        nn.Linear(120, 84), make_activation(activation),
        nn.Linear(84, num_classes),
    )  # fmt: skip
    return _TrunkHead(features, head)


# ----------------------------------------------------------------------------------------
# VGG-style networks (course §4.4.3)


@MODELS.register("vgg", help="VGG-style stacks of 3×3 convs + max-pool (course §4.4.3)")
def vgg(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    stages: list[list[PosInt]] = [[32, 32], [64, 64], [128, 128]],  # noqa: B006 (read only)
    batchnorm: bool = True,
    activation: Activation = "relu",
    dropout: Prob = 0.0,
    head: NonNegInt = 256,
    global_pool: bool = False,
    separable: bool = False,
) -> nn.Module:
    """VGG-style CNN: each stage is ``[conv3×3 → (BN) → act] × len(stage)`` then 2×2 max-pool.

    Two stacked 3×3 convolutions see a 5×5 field with fewer weights (remark 4.6).
    ``stages``: output channels of each conv, per stage; ``head``: width of the hidden FC
    layer (0: a single Linear); ``global_pool``: global average pooling before the head
    instead of flattening the whole map; ``dropout``: before the last Linear;
    ``separable``: depthwise-separable convs for all but the first conv (§4.9).
    """
    if not stages or not all(stages):
        raise ConfigError(
            f"stages={stages!r} must be a non-empty list of non-empty lists of positive channel "
            "counts, e.g. [[32, 32], [64, 64], [128, 128]]."
        )
    norm = "batch" if batchnorm else "none"
    h, w = _after_pools(in_shape, len(stages))

    layers: list[nn.Module] = []
    prev, first = in_shape[0], True
    for stage in stages:
        for ch in stage:
            sep = separable and not first
            layers.append(conv_bn_act(prev, ch, 3, act=activation, norm=norm, separable=sep))
            prev, first = ch, False
        layers.append(nn.MaxPool2d(2))
    features = nn.Sequential(*layers)

    head_layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1)] if global_pool else []
    dim = prev if global_pool else prev * h * w
    head_layers.append(nn.Flatten())
    if head > 0:
        head_layers += [nn.Linear(dim, head), make_activation(activation)]
        dim = head
    if dropout > 0:
        head_layers.append(nn.Dropout(dropout))
    head_layers.append(nn.Linear(dim, num_classes))
    return _TrunkHead(features, nn.Sequential(*head_layers))


# ----------------------------------------------------------------------------------------
# the CIFAR-10 network of §4.6


@MODELS.register("course-cnn", help="the chapter-4 CIFAR-10 CNN: 3 blocks 64-128-256 (course §4.6)")
def course_cnn(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    width: PosInt = 64,
    dropout: Prob = 0.25,
    head_dropout: Prob = 0.5,
    separable: bool = False,
) -> nn.Module:
    """``CIFAR10Net`` of §4.6.

    Three blocks ``[conv3×3 → BN → ReLU] × 2 → MaxPool 2×2 → Dropout2d(dropout)`` with
    ``width``, ``2·width``, ``4·width`` channels (64-128-256 in the course), then the head
    as written in the course: ``global average pool → Linear(4w, 128) → ReLU →
    Dropout(head_dropout) → Linear(128, num_classes)``. Thanks to the global pooling the
    same weights work on 28×28 and 32×32 images. With the course defaults on 3×32×32 it has
    1,181,386 parameters (the course's printed "952,202" is wrong).
    """
    _after_pools(in_shape, 3)

    layers: list[nn.Module] = []
    prev = in_shape[0]
    for i, ch in enumerate((width, 2 * width, 4 * width)):
        # as in the course, the convolutions keep their bias even though BN follows
        for cin, sep in ((prev, separable and i > 0), (ch, separable)):
            layers += [
                conv2d(cin, ch, 3, bias=True, separable=sep),
                nn.BatchNorm2d(ch),
                nn.ReLU(inplace=True),
            ]
        layers += [nn.MaxPool2d(2), nn.Dropout2d(dropout)]
        prev = ch
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(prev, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(head_dropout),
        nn.Linear(128, num_classes),
    )
    return _TrunkHead(nn.Sequential(*layers), head)


# ----------------------------------------------------------------------------------------
# a small, fast CNN for the Fashion-MNIST recipes


@MODELS.register("fmnist-cnn", help="small fast CNN (conv×2-pool-conv×2-pool-fc) for Fashion-MNIST")
def fmnist_cnn(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    width: PosInt = 32,
    dropout: Prob = 0.25,
    separable: bool = False,
) -> nn.Module:
    """``[conv3×3(w)-BN-ReLU]×2 → pool → [conv3×3(2w)-BN-ReLU]×2 → pool → dropout → FC``.

    Built for speed on a CPU: bias-free convs followed by BN, in-place ReLUs, and a single
    Linear head on the flattened ``2w × H/4 × W/4`` map; runs well with
    ``channels_last`` and bf16 autocast.
    """
    h, w = _after_pools(in_shape, 2)

    def block(cin: int, cout: int, sep: bool) -> list[nn.Module]:
        return [
            conv2d(cin, cout, 3, bias=False, separable=sep),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]

    features = nn.Sequential(
        *block(in_shape[0], width, False),
        *block(width, width, separable),
        nn.MaxPool2d(2),
        *block(width, 2 * width, separable),
        *block(2 * width, 2 * width, separable),
        nn.MaxPool2d(2),
    )
    head = nn.Sequential(
        nn.Dropout(dropout), nn.Flatten(), nn.Linear(2 * width * h * w, num_classes)
    )
    return _TrunkHead(features, head)


# ----------------------------------------------------------------------------------------
# ResNet for CIFAR (course §4.4.4; He et al. 2016, §4.2)


class BasicBlock(nn.Module):
    """Residual block ``y = ReLU(F(x) + shortcut(x))`` (equation 4.7).

    ``F = conv3×3 → BN → ReLU → conv3×3 → BN``. The shortcut is the identity when the
    shape is kept, and a projection ``conv1×1 (stride) → BN`` when the block changes the
    number of channels or the resolution (He et al.'s option B).
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, separable: bool = False
    ):
        super().__init__()
        self.conv1 = conv2d(in_channels, out_channels, 3, stride, bias=False, separable=separable)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv2d(out_channels, out_channels, 3, 1, bias=False, separable=separable)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()

    @property
    def projects(self) -> bool:
        """True when the shortcut is a projection rather than the identity."""
        return not isinstance(self.shortcut, nn.Identity)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: ``stem conv3×3(w) → layer1 (w) → layer2 (2w, /2) → layer3 (4w, /2) → head``.

    Each layer stacks ``n`` :class:`BasicBlock`; depth ``6n + 2`` counts the stem, the
    ``6n`` convolutions of the blocks and the final Linear. The head is global average
    pooling + Linear. Convolutions use He initialisation (fan-in, §1.5), BN starts at
    weight 1, bias 0.
    """

    def __init__(
        self, in_channels: int, num_classes: int, n: int, width: int = 16, separable: bool = False
    ):
        super().__init__()
        self.stem = conv_bn_act(in_channels, width, 3)
        chans = [width, 2 * width, 4 * width]
        prev = width
        for i, ch in enumerate(chans):
            blocks = [
                BasicBlock(prev if j == 0 else ch, ch, 2 if (i > 0 and j == 0) else 1, separable)
                for j in range(n)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            prev = ch
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, num_classes)
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.head(x)


@MODELS.register("resnet", help="CIFAR ResNet, depth 6n+2 (20: 0.27M params; course §4.4.4)")
def resnet(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    depth: int = 20,
    width: PosInt = 16,
    separable: bool = False,
) -> nn.Module:
    """ResNet for small images (He et al. 2016): ``depth = 6n + 2`` (8, 14, 20, 32, 44, 56, 110...),
    stage widths ``width, 2·width, 4·width``; ``separable``: depthwise-separable 3×3 convs in
    the residual blocks (§4.9)."""
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            f"depth={depth!r} is not a CIFAR ResNet depth: it must be 6n+2 with n >= 1 "
            "(valid values: 8, 14, 20, 26, 32, 44, 56, 110, ...)."
        )
    return ResNet(in_shape[0], num_classes, (depth - 2) // 6, width, separable)


@MODELS.register("resnet8", help="ResNet-8 (resnet with depth=8), ~78k params")
def resnet8(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    width: PosInt = 16,
    separable: bool = False,
) -> nn.Module:
    """``resnet(depth=8)``: one BasicBlock per stage."""
    return resnet(in_shape, num_classes, depth=8, width=width, separable=separable)


@MODELS.register("resnet20", help="ResNet-20 (resnet with depth=20), 0.27M params")
def resnet20(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    width: PosInt = 16,
    separable: bool = False,
) -> nn.Module:
    """``resnet(depth=20)``: three BasicBlocks per stage, as in He et al.'s table 6."""
    return resnet(in_shape, num_classes, depth=20, width=width, separable=separable)
