"""User-facing errors.

Every error a user can cause (bad config, unknown name, missing or corrupt data) is a
:class:`ProfondError`. The CLI prints its message on one line and exits with code 2,
never a traceback. The message always names the problem *and* the fix.
"""


class ProfondError(Exception):
    """Base class for errors caused by user input; the CLI exits with code 2."""

    exit_code = 2


class ConfigError(ProfondError):
    """A bad config file, override key or value."""


class RegistryError(ProfondError, KeyError):
    """An unknown model / dataset / recipe / experiment name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetError(ProfondError):
    """Missing, truncated, corrupt or mismatched data files."""


class CheckpointError(ProfondError):
    """A missing, partial or incompatible checkpoint / run folder."""


class TrainingDiverged(ProfondError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""
