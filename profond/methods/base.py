"""The plug between a family and the one training loop.

A *method* is what a family does with its models: it builds its data and nets from the
config, declares which parameters each optimizer updates, and provides

* ``train_step(batch, ctx)``: one optimisation step (or several, e.g. a GAN's ``n_critic``
  discriminator updates then one generator update); every update goes through
  ``ctx.optimize(loss, "name")`` so the loop applies precision, clipping, NaN guards and
  DDP; it returns a dict of scalar metrics to log;
* ``evaluate(batches, ctx)``: metrics on held-out data (``val_*`` / ``test_*`` in logs).

Everything else (devices, autocast, schedules, checkpoints, logging, progress, early
stopping, distribution) belongs to :mod:`profond.train.loop`; no family writes a loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..config import RunConfig, apply_dict


@dataclass
class Env:
    """Where a run executes: device and data-parallel position."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    seed: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class Loader(Protocol):
    """What the loop needs of training data: batches of an epoch, resumable mid-epoch."""

    def __len__(self) -> int: ...

    def batches(self, epoch: int, start: int = 0) -> Iterator[Any]: ...


class Method:
    """Base class of every family's training logic (subclass and register in ``METHODS``).

    Subclasses set ``self.nets`` (name -> module) in ``__init__``; the loop may replace
    the entries by wrapped versions (DDP, ``torch.compile``) and keeps the originals in
    ``self.raw_nets`` for checkpoints. Always call nets through ``self.nets[...]``.
    """

    #: options dataclass for ``cfg.method.args`` (validated, typed)
    Options: type = type("Options", (), {})
    #: nets whose weights get an EMA copy when ``train.ema_decay`` is set
    ema_nets: tuple[str, ...] = ("model",)
    #: the metric the best checkpoint is chosen by, and its mode
    monitor: tuple[str, str] = ("val_loss", "min")

    def __init__(self, cfg: RunConfig, env: Env):
        self.cfg = cfg
        self.env = env
        self.opts = self.parse_options(cfg)
        self.nets: dict[str, nn.Module] = {}
        self.raw_nets: dict[str, nn.Module] = {}
        self.train_data: Loader | None = None
        self.val_data: Loader | None = None

    @classmethod
    def parse_options(cls, cfg: RunConfig) -> Any:
        opts = cls.Options()
        if dataclasses.is_dataclass(opts):
            apply_dict(opts, dict(cfg.method.args), prefix="method.")
        return opts

    # -- what the loop calls -------------------------------------------------------------
    def optimizer_params(self) -> dict[str, Any]:
        """Optimizer name -> parameters or parameter groups. Default: one optimizer."""
        from ..models.transfer import param_groups

        o = self.cfg.optim
        return {
            "model": param_groups(
                self.raw_nets["model"], o.lr, o.lr_groups, o.weight_decay, o.decay_norm_and_bias
            )
        }

    def train_step(self, batch: Any, ctx: Any) -> dict[str, Any]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: Any) -> dict[str, float]:
        raise NotImplementedError

    def test_data(self) -> Loader | None:
        """Held-out test data for the final report and ``profond eval``."""
        return None

    def describe(self) -> dict[str, Any]:
        """Facts about the data / task for summary.json."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """JSON-able training state of the method itself (not of its nets), saved in every
        checkpoint's metadata so that a resumed run continues it exactly (e.g. a GAN's
        collapse counter). Default: none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (an empty dict from older checkpoints)."""

    def callbacks(self) -> list[Any]:
        """Training callbacks the family adds (:class:`profond.train.callbacks.Callback`), e.g.
        a GAN's fixed-noise sample grid at the end of every epoch. Only the main process runs them."""
        return []

    # -- helpers -------------------------------------------------------------------------
    def train(self) -> None:
        for net in self.nets.values():
            net.train()

    def eval(self) -> None:
        for net in self.nets.values():
            net.eval()
