"""The ``profond`` command line: train, eval, sample, latent, generate, gates, translate,
attention, list, experiment, course.

One module per command group; the commands ask a run's method for its capabilities
(:mod:`profond.methods.capabilities`) and never name a family. Every user error (unknown
name, bad override, missing data) prints one line naming the problem and the fix, and exits
with code 2, without a traceback.
"""

# each module registers its commands; their order is the order of `profond --help`
from .common import app  # noqa: I001
from . import train, evaluate, sample, latent, text, attention, catalog  # noqa: F401, E402
from . import hf  # noqa: F401, E402
from . import explain  # noqa: F401, E402


def main() -> None:
    app()


__all__ = ["app", "main"]
