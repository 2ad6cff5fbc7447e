"""Reusable layers: activations, norms, init schemes, conv blocks (see :mod:`.layers`)."""

from .layers import (
    ACTIVATIONS,
    INITS,
    NORMS,
    SeparableConv2d,
    activation,
    conv2d,
    conv_bn_act,
    count_parameters,
    init_weights,
    norm_layer,
    parameter_table,
    separable_ratio,
)

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "NORMS",
    "SeparableConv2d",
    "activation",
    "conv2d",
    "conv_bn_act",
    "count_parameters",
    "init_weights",
    "norm_layer",
    "parameter_table",
    "separable_ratio",
]
