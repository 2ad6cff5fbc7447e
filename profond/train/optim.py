"""Optimizers built from an :class:`~profond.config.OptimConfig` (course §2.4).

The four optimizers of the course, with the update rules of §2.4:

* ``sgd``      -- plain gradient descent, optionally with momentum (§2.4.1,
  :math:`v_{t+1} = \\mu v_t + g_t,\\ \\theta_{t+1} = \\theta_t - \\eta v_{t+1}`) and its
  Nesterov variant;
* ``rmsprop``  -- per-parameter step sizes from a running mean of squared gradients (§2.4.2;
  ``alpha`` is the course's :math:`\\beta`);
* ``adam``     -- momentum + RMSProp + bias correction (§2.4.3; ``betas`` = :math:`(\\beta_1, \\beta_2)`);
* ``adamw``    -- Adam with *decoupled* weight decay (§2.4.4,
  :math:`\\theta_{t+1} = (1 - \\eta\\lambda)\\theta_t - \\dots`). Note: ``weight_decay`` is
  taken from the config (default 0), not torch's AdamW default of 0.01.

``optim.sam_rho > 0`` wraps any of them in SAM (course §11.8, def. 11.20): the base
optimizer's update, with the gradient taken at the locally worst point ``θ + ε̂``.

``weight_decay`` of the config is the optimizer default; a parameter group that carries its
own ``weight_decay`` (e.g. norms and biases excluded from decay, built by
``profond.models.transfer.param_groups``) keeps it, as torch's parameter groups always do.

Methods with several optimizers (a GAN's generator ``G`` and discriminator ``D``) derive
one config per optimizer with :func:`optimizer_cfg_for`, applying ``optim.per_optimizer``.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..config import OptimConfig, coerce
from ..errors import ConfigError

#: the optimizer names accepted in ``optim.name``
OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw", "lion")
IMPLS = ("torch", "scratch")


def _check_unit_interval(name: str, value: float, key: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"bad value for 'optim.{key}' ({name}): {value!r}; it must be in [0, 1).")


def build_optimizer(cfg: OptimConfig, params_or_groups: Any) -> torch.optim.Optimizer:
    """Build the optimizer named ``cfg.name`` over ``params_or_groups``.

    ``params_or_groups`` is what torch optimizers take (an iterable of parameters or of
    parameter-group dicts); an ``nn.Module`` is also accepted and means its trainable
    parameters. Bad names or values raise :class:`~profond.errors.ConfigError`.
    """
    name = cfg.name.lower()
    if name not in OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {cfg.name!r} in 'optim.name'. Valid names: {', '.join(OPTIMIZERS)}."
        )
    if isinstance(params_or_groups, nn.Module):
        params_or_groups = [p for p in params_or_groups.parameters() if p.requires_grad]
    params = list(params_or_groups)
    if not params:
        raise ConfigError(
            "the optimizer got no trainable parameters (are all layers frozen? check 'model.freeze')."
        )
    if cfg.lr <= 0:
        raise ConfigError(f"bad value for 'optim.lr': {cfg.lr!r}; the learning rate must be > 0.")
    if cfg.weight_decay < 0:
        raise ConfigError(f"bad value for 'optim.weight_decay': {cfg.weight_decay!r}; it must be >= 0.")
    if cfg.eps <= 0:
        raise ConfigError(f"bad value for 'optim.eps': {cfg.eps!r}; it must be > 0.")

    if cfg.impl not in IMPLS:
        raise ConfigError(f"bad value for 'optim.impl': {cfg.impl!r}. Valid values: {', '.join(IMPLS)}.")
    scratch = cfg.impl == "scratch" or name == "lion"
    kwargs: dict[str, Any] = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if name == "lion":
        from ..scratch.optim import Lion

        betas = list(cfg.betas)
        for b in betas:
            _check_unit_interval(name, b, "betas")
        return _maybe_sam(cfg, Lion, params, dict(lr=cfg.lr, betas=(float(betas[0]), float(betas[1])),
                                                  weight_decay=cfg.weight_decay))
    if name == "sgd":
        _check_unit_interval(name, cfg.momentum, "momentum")
        if cfg.nesterov and cfg.momentum <= 0:
            raise ConfigError(
                "optim.nesterov=true needs a momentum > 0 (Nesterov is a variant of momentum, "
                "course §2.4.1): set e.g. --set optim.momentum=0.9, or optim.nesterov=false."
            )
        cls: type[torch.optim.Optimizer] = torch.optim.SGD
        kwargs.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    elif name == "rmsprop":
        _check_unit_interval(name, cfg.momentum, "momentum")
        _check_unit_interval(name, cfg.alpha, "alpha")
        cls = torch.optim.RMSprop
        kwargs.update(alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum)
    else:
        betas = list(cfg.betas)
        if len(betas) != 2:
            raise ConfigError(
                f"bad value for 'optim.betas': {cfg.betas!r}; write two numbers, e.g. [0.9, 0.999]."
            )
        for b in betas:
            _check_unit_interval(name, b, "betas")
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        kwargs.update(betas=(float(betas[0]), float(betas[1])), eps=cfg.eps)
    if scratch:  # the course's update rules, written out in profond.scratch.optim
        from ..scratch import optim as scratch_optim

        cls = {torch.optim.SGD: scratch_optim.SGD, torch.optim.RMSprop: scratch_optim.RMSprop,
               torch.optim.Adam: scratch_optim.Adam, torch.optim.AdamW: scratch_optim.AdamW}[cls]
    elif cls is not torch.optim.RMSprop and _fusable(params):
        # one fused kernel per step instead of ~6 elementwise ops per tensor (faster steps,
        # also on CPU); same update rule
        kwargs["fused"] = True
    try:
        return _maybe_sam(cfg, cls, params, kwargs)
    except ValueError as e:  # torch's own argument checks
        raise ConfigError(f"invalid settings for optimizer {name!r}: {e}") from None


def _maybe_sam(cfg: OptimConfig, cls: type[torch.optim.Optimizer], params: list[Any],
               kwargs: dict[str, Any]) -> torch.optim.Optimizer:
    """``cls(params, **kwargs)``, or, with ``optim.sam_rho > 0``, SAM around it (course §11.8,
    def. 11.20, :class:`profond.scratch.optim.SAM`): the loop then runs the method's step twice
    per batch, at θ and at θ + ε̂ (see :meth:`profond.train.loop.LoopContext.optimize`)."""
    if cfg.sam_rho < 0:
        raise ConfigError(f"bad value for 'optim.sam_rho': {cfg.sam_rho!r}; it must be >= 0 (0: no SAM).")
    if cfg.sam_rho == 0:
        return cls(params, **kwargs)
    from ..scratch.optim import SAM

    return SAM(params, cls, rho=cfg.sam_rho, **kwargs)


def _fusable(params: list[Any]) -> bool:
    """torch's fused SGD/Adam/AdamW kernels take floating-point tensors on CPU or CUDA."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return all(
        isinstance(p, torch.Tensor) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
        for p in tensors
    )


def optimizer_cfg_for(
    cfg: OptimConfig, name: str, *, known: Iterable[str] | None = None
) -> OptimConfig:
    """The config of optimizer ``name`` (e.g. ``"G"`` or ``"D"``): ``cfg`` with the overrides
    ``cfg.per_optimizer[name]`` applied.

    ``per_optimizer`` maps an optimizer name to ``{OptimConfig field: value}``, e.g.
    ``{D: {lr: 4e-4}, G: {betas: [0.5, 0.999]}}``. Unknown fields raise
    :class:`~profond.errors.ConfigError`. If ``known`` (the method's optimizer names) is
    given, ``per_optimizer`` entries for other names are reported too (likely typos).
    The returned config has an empty ``per_optimizer``; ``cfg`` is not modified.
    """
    if known is not None:
        known = list(known)
        stray = [k for k in cfg.per_optimizer if k not in known]
        if stray:
            raise ConfigError(
                f"'optim.per_optimizer' names unknown optimizer(s) {', '.join(map(repr, stray))}. "
                f"This method's optimizers are: {', '.join(known)}."
            )
    out = copy.deepcopy(cfg)
    out.per_optimizer = {}
    overrides = cfg.per_optimizer.get(name) or {}
    if not isinstance(overrides, dict):
        raise ConfigError(
            f"'optim.per_optimizer.{name}' must be a mapping like {{lr: 4e-4}}, got {overrides!r}."
        )
    fields = [f.name for f in dataclasses.fields(OptimConfig) if f.name != "per_optimizer"]
    hints = typing.get_type_hints(OptimConfig)
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"unknown key {key!r} in 'optim.per_optimizer.{name}'. Valid keys: {', '.join(fields)}."
            )
        setattr(out, key, coerce(copy.deepcopy(value), hints[key], f"optim.per_optimizer.{name}.{key}"))
    return out
