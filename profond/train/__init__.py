"""The one training loop and its parts (optimizers, schedules, callbacks, EMA, logging, DDP)."""

from .loop import LoopContext, RunResult, Trainer, load_run, train

__all__ = ["LoopContext", "RunResult", "Trainer", "load_run", "train"]
