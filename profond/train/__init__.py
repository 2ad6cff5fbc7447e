"""The one training loop and its parts (optimizers, schedules, checkpoints, logging, DDP).

``from profond.train import train`` is resolved lazily so that light submodules
(``profond.train.io``) import without the whole loop.
"""

from typing import Any

__all__ = ["train", "Trainer", "RunResult", "StepContext", "load_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(name)
