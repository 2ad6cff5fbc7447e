r"""Exponential moving average (EMA) of a model's weights.

After every optimizer step the shadow copy is updated with

.. math:: \bar\theta \leftarrow d\,\bar\theta + (1 - d)\,\theta

the same exponential moving average as the momentum and moment estimates of the course's
optimizers (§2.4.1, §2.4.3), applied here to the weights themselves. The averaged weights
are usually smoother and generalize slightly better; they are what gets evaluated
(``train.ema_decay``). Buffers (BatchNorm running statistics, counters) are not averaged:
the shadow holds a copy of the latest ones.

The shadow tensors live on the same device and in the same dtype as the model's, so the EMA
works on CPU, CUDA, in fp32 or bf16 alike. Its ``state_dict()`` is a flat
``{state_dict key: tensor}`` mapping, ready for a checkpoint's ``extra_state``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError


class EMA:
    """Shadow copy of ``model``'s parameters (averaged) and buffers (copied)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"bad value for 'train.ema_decay': {decay!r}; it must be in [0, 1), e.g. 0.999.")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {}
        #: state_dict keys whose tensors are averaged (floating-point parameters)
        self.averaged: set[str] = set()
        with torch.no_grad():
            for key, value in model.state_dict(keep_vars=True).items():
                self.shadow[key] = value.detach().clone()
                if isinstance(value, nn.Parameter) and value.is_floating_point():
                    self.averaged.add(key)

    def _model_tensors(self, model: nn.Module) -> dict[str, torch.Tensor]:
        tensors = model.state_dict(keep_vars=True)
        if tensors.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - tensors.keys())[:5]
            unexpected = sorted(tensors.keys() - self.shadow.keys())[:5]
            raise ConfigError(
                f"this EMA was built for another model (missing {missing}, unexpected {unexpected}); "
                "build one EMA per network."
            )
        return tensors

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step: ``shadow = decay * shadow + (1 - decay) * param``; buffers copied."""
        for key, value in self._model_tensors(model).items():
            shadow = self.shadow[key]
            if key in self.averaged:
                shadow.mul_(self.decay).add_(value.detach().to(shadow.dtype), alpha=1.0 - self.decay)
            else:
                shadow.copy_(value.detach())
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s parameters and buffers with the EMA weights."""
        for key, value in self._model_tensors(model).items():
            value.data.copy_(self.shadow[key])

    @contextlib.contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into ``model`` (e.g. for evaluation); the
        training weights are restored bit for bit on exit, even after an exception."""
        with torch.no_grad():
            backup = {k: v.detach().clone() for k, v in self._model_tensors(model).items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for key, value in model.state_dict(keep_vars=True).items():
                    value.data.copy_(backup[key])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow tensors, keyed like the model's ``state_dict``."""
        return dict(self.shadow)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load shadow tensors saved by :meth:`state_dict` (cast to this EMA's device/dtype)."""
        if state.keys() != self.shadow.keys():
            missing = sorted(self.shadow.keys() - state.keys())[:5]
            unexpected = sorted(state.keys() - self.shadow.keys())[:5]
            raise CheckpointError(
                f"the saved EMA weights do not match the model (missing {missing}, unexpected "
                f"{unexpected}); resume with the same model config, or drop train.ema_decay."
            )
        for key, value in state.items():
            if value.shape != self.shadow[key].shape:
                raise CheckpointError(
                    f"saved EMA tensor {key!r} has shape {tuple(value.shape)}, the model has "
                    f"{tuple(self.shadow[key].shape)}; resume with the same model config."
                )
            self.shadow[key].copy_(value)
