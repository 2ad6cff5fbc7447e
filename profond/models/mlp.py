"""Multilayer perceptron (course §1.2, §1.5, §1.6).

The course's MNIST model is ``784 → 256 → 128 → 10`` with ReLU (§1.6): by §1.2.2 it has
``Σ n_ℓ (n_{ℓ-1} + 1) = 235 146`` parameters, which is what ``MODELS.build("mlp")`` gives.
Options add the chapter-3 regularisers: BatchNorm (§3.5) and dropout (§3.4), each hidden
layer being ``Linear → [BN] → activation → [Dropout]``.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from ..base.coerce import PosInt, Prob
from ..errors import ConfigError
from ..nn.layers import Activation, Init, InShape, init_weights
from ..nn.layers import activation as make_activation
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
        norm: str = "none",
        dropout_impl: str = "torch",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for w in widths:
            layers.append(nn.Linear(prev, w))
            if norm != "none":
                layers.append(make_norm(norm, w))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(make_dropout(dropout_impl, dropout))
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.flatten(1)))


#: ``norm`` values: PyTorch's layers, or the hand-written ones of profond.scratch (§3.5, §3.6)
MLPNorm = Literal["none", "batchnorm", "layernorm", "rmsnorm",
                  "scratch-batchnorm", "scratch-layernorm", "scratch-rmsnorm"]
MLP_NORMS: tuple[str, ...] = get_args(MLPNorm)


def make_norm(name: str, features: int) -> nn.Module:
    if name.startswith("scratch-"):
        from ..scratch import layers as scratch

        kind = name.removeprefix("scratch-")
        return {"batchnorm": lambda: scratch.BatchNorm(features, dims=1),
                "layernorm": lambda: scratch.LayerNorm(features),
                "rmsnorm": lambda: scratch.RMSNorm(features)}[kind]()
    return {"batchnorm": lambda: nn.BatchNorm1d(features),
            "layernorm": lambda: nn.LayerNorm(features),
            "rmsnorm": lambda: nn.RMSNorm(features)}[name]()


def make_dropout(impl: str, p: float) -> nn.Module:
    if impl == "scratch":
        from ..scratch.layers import Dropout

        return Dropout(p)
    return nn.Dropout(p)


@MODELS.register("mlp", help="multilayer perceptron on the flattened image (course §1.2, §1.6)")
def mlp(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    widths: list[PosInt] = [256, 128],  # noqa: B006 (read only; a list so configs stay YAML)
    activation: Activation = "relu",
    init: Init = "default",
    dropout: Prob = 0.0,
    batchnorm: bool = False,
    norm: MLPNorm = "none",
    dropout_impl: Literal["torch", "scratch"] = "torch",
) -> nn.Module:
    """MLP ``prod(in_shape) → widths... → num_classes``.

    ``activation``: sigmoid, tanh, relu, leaky_relu, prelu, elu, gelu;
    ``init``: default (PyTorch's), xavier_uniform, xavier_normal, he (course §1.5);
    ``dropout``: after each hidden activation (§3.4); ``batchnorm``: Linear → BN → act (§3.5),
    the same as ``norm="batchnorm"``; ``norm``: none, batchnorm, layernorm, rmsnorm, or the
    from-scratch ``scratch-batchnorm`` / ``scratch-layernorm`` / ``scratch-rmsnorm``;
    ``dropout_impl``: torch or scratch (profond.scratch.layers.Dropout).
    """
    if batchnorm:
        if norm not in ("none", "batchnorm"):
            raise ConfigError(f"batchnorm=true conflicts with norm={norm!r}; set only norm.")
        norm = "batchnorm"
    model = MLP(math.prod(in_shape), num_classes, widths, activation=activation, dropout=dropout,
                norm=norm, dropout_impl=dropout_impl)
    return init_weights(model, init, activation)
