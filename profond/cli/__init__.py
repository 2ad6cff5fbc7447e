"""The ``profond`` command line: train, eval, sample, latent, generate, gates, translate,
list, experiment, course.

One module per command group; the commands ask a run's method for its capabilities
(:mod:`profond.methods.capabilities`) and never name a family. Every user error (unknown
name, bad override, missing data) prints one line naming the problem and the fix, and exits
with code 2, without a traceback.
"""

from . import catalog, evaluate, latent, sample, text, train  # noqa: F401  (each registers its commands)
from .common import app


def main() -> None:
    app()


__all__ = ["app", "main"]
