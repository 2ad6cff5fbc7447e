"""Early stopping (course §3.8), the loop's built-in callback. The callback hooks are
declared by :class:`profond.contract.Callback`.
"""

from __future__ import annotations

from typing import Any

from ..base.checkpoint import is_improvement, resolve_mode
from ..config import EarlyStopConfig
from ..contract import Callback
from ..errors import ConfigError


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
