"""Training-loop callbacks, and early stopping (course §3.8).

A callback is an object with four hooks, all optional (the base class does nothing):

* ``on_train_start(loop)``               -- before the first step (also after a resume);
* ``on_step_end(loop, step, metrics)``   -- after each optimizer step, ``metrics`` being the
  step's scalar values (``{"loss": 0.31, ...}``);
* ``on_eval_end(loop, epoch, metrics)``  -- at the end of each epoch, with the epoch's row
  (``train_*`` averages, ``val_*`` metrics when the model was evaluated, ``lr`` ...);
* ``on_train_end(loop)``                 -- once training is over, whatever the reason.

``loop`` is the running trainer. A callback stops training by setting
``loop.should_stop = True``; the loop finishes the current epoch and stops.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import EarlyStopConfig
from ..errors import ConfigError

#: substrings of metric names for which larger is better (``mode: auto``)
HIGHER_IS_BETTER = ("acc", "f1", "auc", "psnr", "ssim", "iou", "dice", "bleu", "precision", "recall")


def resolve_mode(monitor: str, mode: str) -> str:
    """``"min"`` or ``"max"``: ``mode`` itself, or for ``"auto"`` guessed from the metric name
    (``max`` for accuracy-like names: acc, f1, auc, psnr, ssim, iou, dice, bleu, precision,
    recall; ``min`` otherwise, e.g. losses, perplexity, FID)."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ConfigError(f"bad mode {mode!r} for monitored metric {monitor!r}. Valid values: auto, min, max.")
    name = monitor.lower()
    return "max" if any(s in name for s in HIGHER_IS_BETTER) else "min"


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never improves)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Callback:
    """Base class of training callbacks: override the hooks you need."""

    def on_train_start(self, loop: Any) -> None:
        pass

    def on_step_end(self, loop: Any, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def on_train_end(self, loop: Any) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when the monitored metric stops improving (course §3.8, Définition 3.7).

    After each evaluation, the metric ``cfg.monitor`` is compared with the best value seen
    so far; an *improvement* is a value better than the best by more than ``cfg.min_delta``
    (lower for ``mode: min``, higher for ``mode: max``; ``auto`` picks from the name, see
    :func:`resolve_mode`). After ``cfg.patience`` evaluations in a row without improvement
    it sets ``loop.should_stop = True`` and records ``stopped_epoch``. ``best_value`` and
    ``best_epoch`` describe the best evaluation. ``patience: null`` disables it.

    An epoch row with no ``val_*`` metric at all (no evaluation that epoch, e.g. with
    ``train.eval_every > 1``) is skipped when the monitored metric is a ``val_*`` one. A row
    that has been evaluated but lacks the monitored metric raises
    :class:`~profond.errors.ConfigError` naming the available metrics.
    """

    def __init__(self, cfg: EarlyStopConfig):
        self.cfg = cfg
        self.monitor = cfg.monitor
        self.mode = resolve_mode(cfg.monitor, cfg.mode)
        if cfg.patience is not None and cfg.patience < 1:
            raise ConfigError(
                f"bad value for 'train.early_stop.patience': {cfg.patience!r}; use an integer >= 1, "
                "or null to disable early stopping."
            )
        if cfg.min_delta < 0:
            raise ConfigError(f"bad value for 'train.early_stop.min_delta': {cfg.min_delta!r}; it must be >= 0.")
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    @property
    def enabled(self) -> bool:
        return self.cfg.patience is not None

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.monitor not in metrics:
            evaluated = any(str(k).startswith("val_") for k in metrics)
            if self.monitor.startswith("val_") and not evaluated:
                return  # no evaluation this epoch
            available = ", ".join(sorted(str(k) for k in metrics)) or "none"
            raise ConfigError(
                f"early stopping monitors {self.monitor!r}, which is not among the logged metrics "
                f"({available}); set train.early_stop.monitor to one of them."
            )
        value = float(metrics[self.monitor])
        if is_improvement(value, self.best_value, self.mode, self.cfg.min_delta):
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            return
        self.wait += 1
        if self.wait >= self.cfg.patience:
            self.stopped_epoch = epoch
            loop.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state, for exact resume."""
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_value": self.best_value,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "stopped_epoch": self.stopped_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor", self.monitor) != self.monitor:
            raise ConfigError(
                f"the checkpoint's early stopping monitored {state['monitor']!r}, this run monitors "
                f"{self.monitor!r}; keep train.early_stop.monitor unchanged when resuming."
            )
        best = state.get("best_value")
        self.best_value = None if best is None else float(best)
        self.best_epoch = state.get("best_epoch")
        self.wait = int(state.get("wait", 0))
        self.stopped_epoch = state.get("stopped_epoch")
