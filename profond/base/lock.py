"""One process per run folder: an exclusive OS lock on ``RUN_DIR/.lock``.

Two trainings writing into one run folder would interleave its files (config.yaml and
metrics.csv of one run, ``best/`` of the other) or crash in a checkpoint rename. The
training process therefore holds an exclusive, non-blocking ``flock`` on ``RUN_DIR/.lock``
for as long as it trains, taken before it writes anything there (also on ``--resume``);
the file holds the holder's PID, for the message the second process prints.

The lock belongs to the open file, not to the file on disk: the kernel releases it when the
process exits, however it exits (a SIGKILLed run leaves a ``.lock`` file that blocks
nothing, and ``--resume`` works at once). The file itself is never deleted (deleting a lock
file while another process opens it would let two processes lock two different files).
On a platform without ``fcntl`` (Windows) or a filesystem without locks, runs are not locked.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..errors import ProfondError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"
#: errnos meaning "this filesystem cannot lock": the run goes on unlocked
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


class RunFolderLocked(ProfondError):
    """Another live process trains in this run folder."""


class RunLock:
    """The exclusive lock of one run folder; :meth:`acquire` it, :meth:`release` it (or let
    the process end). Also a context manager."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Create the folder if needed and lock it, or raise :class:`RunFolderLocked` naming the
        holder's PID (an ``OSError`` if the folder cannot be created)."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        if fcntl is None:
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"profond process {holder}" if holder else "another profond process"
            stop = f" (or stop it: kill {holder})" if holder else ""
            raise RunFolderLocked(
                f"run folder {str(self.folder)!r} is in use: {who} is training there (it holds "
                f"{str(self.path)!r}); wait for it to finish{stop}, or train into another --name/--out."
            ) from None
        except OSError as e:
            if e.errno not in _NO_LOCKS:
                os.close(fd)
                raise
        try:  # the PID is for the message of a second process only: best effort (a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock (closing the file releases the lock); the file stays. Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_run_folder(folder: str | Path) -> RunLock:
    """Take the exclusive lock of run folder ``folder`` (see :class:`RunLock`)."""
    return RunLock(folder).acquire()


__all__ = ["RunLock", "RunFolderLocked", "lock_run_folder", "LOCK_FILE"]
