"""The contract between a family and the one training loop.

Both :mod:`profond.train` (the loop) and :mod:`profond.methods` (the families) import this
module, and neither imports the other. A *method* is what a family does with its models: it
builds its data and nets from the config, declares which parameters each optimizer updates,
and provides

* ``train_step(batch, ctx)``: one optimisation step (or several, e.g. a GAN's ``n_critic``
  discriminator updates then one generator update); every update goes through
  ``ctx.optimize(loss, "name")`` so the loop applies precision, clipping, NaN guards and
  DDP; it returns a dict of scalar metrics to log;
* ``evaluate(batches, ctx, detailed=False)``: metrics on held-out data (``val_*`` /
  ``test_*`` in logs; ``detailed=True`` adds what ``profond eval`` reports, e.g. a confusion
  matrix).

Everything else (devices, autocast, schedules, checkpoints, logging, progress, early
stopping, distribution) belongs to the loop; no family writes a loop. What a method can do
beyond training (sample images, generate text, ...) it declares through the capability
protocols of :mod:`profond.methods.capabilities`, which the CLI asks.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from .config import RunConfig, apply_dict


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


class StepContext(Protocol):
    """The loop's services handed to ``Method.train_step`` / ``Method.evaluate``."""

    @property
    def step(self) -> int:
        """Optimizer steps done so far (the step being taken is ``step + 1``)."""
        ...

    @property
    def epoch(self) -> int:
        """The current epoch, counted from 0."""
        ...

    @property
    def device(self) -> torch.device: ...

    @property
    def env(self) -> Env: ...

    def autocast(self) -> contextlib.AbstractContextManager:
        """The run's mixed-precision context (a no-op at fp32)."""
        ...

    def optimize(self, loss: torch.Tensor, name: str = "model") -> float | None:
        """Backward ``loss`` and step optimizer ``name`` (loss scaling, clipping, NaN guard).
        Returns the gradient norm before clipping (also logged as ``grad_norm_<name>``), or
        ``None`` when the loop does not measure it (no ``train.clip_grad_norm`` and the method
        did not ask for it with ``track_grad_norm``)."""
        ...


class Callback:
    """A training-loop callback: four optional hooks (the base class does nothing).

    * ``on_train_start(loop)``               -- before the first step (also after a resume);
    * ``on_step_end(loop, step, metrics)``   -- after each optimizer step, ``metrics`` being the
      step's scalar values (``{"loss": 0.31, ...}``);
    * ``on_eval_end(loop, epoch, metrics)``  -- at the end of each epoch, with the epoch's row
      (``train_*`` averages, ``val_*`` metrics when the model was evaluated, ``lr`` ...);
    * ``on_train_end(loop)``                 -- once training is over, whatever the reason.

    ``loop`` is the running trainer. A callback stops training by setting
    ``loop.should_stop = True``; the loop finishes the current epoch and stops.
    """

    def on_train_start(self, loop: Any) -> None:
        pass

    def on_step_end(self, loop: Any, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def on_train_end(self, loop: Any) -> None:
        pass


class Method:
    """Base class of every family's training logic (subclass and register in ``METHODS``).

    Subclasses set ``self.nets`` (name -> module) in ``__init__``; the loop may replace
    the entries by wrapped versions (DDP, ``torch.compile``) and keeps the originals in
    ``self.raw_nets`` for checkpoints. Always call nets through ``self.nets[...]``.

    ``with_data=False`` builds the nets without training / validation loaders: that is how a
    saved run is rebuilt for ``profond eval`` / ``sample`` / ``generate``. Every subclass
    accepts it.
    """

    #: options dataclass for ``cfg.method.args`` (validated, typed)
    Options: type = type("Options", (), {})
    #: nets whose weights get an EMA copy when ``train.ema_decay`` is set
    ema_nets: tuple[str, ...] = ("model",)
    #: the metric the best checkpoint is chosen by, and its mode
    monitor: tuple[str, str] = ("val_loss", "min")
    #: the loop measures the gradient norm of these optimizers every step, even without
    #: ``train.clip_grad_norm`` (``ctx.optimize`` returns it, the loop logs ``grad_norm_<name>``)
    track_grad_norm: tuple[str, ...] = ()

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
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
        from .models.transfer import param_groups

        o = self.cfg.optim
        return {
            "model": param_groups(
                self.raw_nets["model"], o.lr, o.lr_groups, o.weight_decay, o.decay_norm_and_bias
            )
        }

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """Metrics on ``batches``; ``detailed=True`` adds the non-scalar ones ``profond eval``
        writes to eval.json (confusion matrix, per-class numbers, ROC points, ...)."""
        raise NotImplementedError

    def test_data(self) -> Loader | None:
        """Held-out test data for the final report and ``profond eval``."""
        return None

    def attach_run(self, run_dir: Path) -> None:
        """Called once the weights of a saved run are loaded (``profond eval`` and the other
        commands on a run folder): reload what the run saved beside its checkpoints, e.g. a
        text method's tokenizer. Default: nothing."""

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

    def eval_figures(self, metrics: dict[str, Any], folder: Path, title: str) -> dict[str, Path]:
        """Figures of ``evaluate(..., detailed=True)``'s ``metrics`` that ``profond eval`` writes
        into ``folder`` (e.g. a confusion matrix, a ROC curve): ``{metric key: PNG path}``, added
        to eval.json. ``title`` names the run. Default: none."""
        return {}

    def callbacks(self) -> list[Callback]:
        """Training callbacks the family adds, e.g. a GAN's fixed-noise sample grid at the end
        of every epoch. Only the main process runs them."""
        return []

    # -- helpers -------------------------------------------------------------------------
    def train(self) -> None:
        for net in self.nets.values():
            net.train()

    def eval(self) -> None:
        for net in self.nets.values():
            net.eval()


# -- frozen runs ----------------------------------------------------------------------------------
#: A method may build on another finished run, frozen: a PixelCNN prior over a VQ-VAE's codes,
#: latent diffusion in an autoencoder's latent space. Methods never import the loop, so the loop
#: installs the opener (its ``load_run``) here when it is imported; the method asks for it.
_RUN_OPENER: Any = None


def install_run_opener(opener: Any) -> None:
    """Called once by :mod:`profond.train.loop` with ``load_run(run_dir, checkpoint=, device=)``."""
    global _RUN_OPENER
    _RUN_OPENER = opener


def open_frozen_run(run_dir: str | Path, *, device: str = "cpu", what: str = "run") -> Method:
    """The finished run ``run_dir`` as a method with its trained (EMA) weights, every net in eval
    mode with ``requires_grad`` off. ``what`` names the run in errors ("the VQ-VAE run")."""
    from .errors import ConfigError

    if _RUN_OPENER is None:
        raise RuntimeError("no run opener installed: import profond.train before building this method")
    path = Path(run_dir)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{what} {str(run_dir)!r} is not a run folder (no config.yaml): pass the folder "
                          "`profond train` made for it.")
    method, _trainer = _RUN_OPENER(path, checkpoint="last", device=device)
    for name in method.nets:
        net = getattr(method, "raw_nets", {}).get(name, method.nets[name])
        net.eval()
        net.requires_grad_(False)
    return method
