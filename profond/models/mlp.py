"""Multilayer perceptron (course §1.2, §1.5, §1.6).

The course's MNIST model is ``784 → 256 → 128 → 10`` with ReLU (§1.6): by §1.2.2 it has
``Σ n_ℓ (n_{ℓ-1} + 1) = 235 146`` parameters, which is what ``MODELS.build("mlp")`` gives.
Options add the chapter-3 regularisers: BatchNorm (§3.5) and dropout (§3.4), each hidden
layer being ``Linear → [BN] → activation → [Dropout]``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.layers import (
    activation as make_activation,
)
from ..nn.layers import (
    check_activation,
    check_bool,
    check_in_shape,
    check_init,
    check_int,
    check_int_list,
    check_prob,
    init_weights,
)
from ..registry import MODELS


class MLP(nn.Module):
    """``h^(ℓ) = σ(W^(ℓ) h^(ℓ-1) + b^(ℓ))`` (§1.2.1) on the flattened image, then a linear head.

    Modules: ``features`` (the hidden layers, a Sequential) and ``head`` (the last Linear,
    returning logits), so transfer learning can freeze ``features`` (§4.7).
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        widths: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batchnorm: bool = False,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for w in widths:
            layers.append(nn.Linear(prev, w))
            if batchnorm:
                layers.append(nn.BatchNorm1d(w))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.flatten(1)))


@MODELS.register("mlp", help="multilayer perceptron on the flattened image (course §1.2, §1.6)")
def mlp(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    widths: list[int] = [256, 128],  # noqa: B006 (read only; a list so configs stay YAML)
    activation: str = "relu",
    init: str = "default",
    dropout: float = 0.0,
    batchnorm: bool = False,
) -> nn.Module:
    """MLP ``prod(in_shape) → widths... → num_classes``.

    ``activation``: sigmoid, tanh, relu, leaky_relu, prelu, elu, gelu;
    ``init``: default (PyTorch's), xavier_uniform, xavier_normal, he (course §1.5);
    ``dropout``: after each hidden activation (§3.4); ``batchnorm``: Linear → BN → act (§3.5).
    """
    shape = check_in_shape(in_shape)
    num_classes = check_int("num_classes", num_classes)
    widths = check_int_list("widths", widths)
    act = check_activation(activation)
    scheme = check_init(init)
    model = MLP(
        math.prod(shape),
        num_classes,
        widths,
        activation=act,
        dropout=check_prob("dropout", dropout),
        batchnorm=check_bool("batchnorm", batchnorm),
    )
    return init_weights(model, scheme, act)
