"""Atomic file writes: nothing profond writes is ever left half-written.

Each writer writes a temporary file in the destination folder, flushes and fsyncs it,
then ``os.replace``-s it over the destination (atomic on POSIX and Windows).

Files are created like ``open(path, "w")`` creates them: mode ``0o666`` less the process's
umask (``0644`` under the usual ``022``), so a shared run folder stays readable by the
group when the umask says so. An ``OSError`` raised while writing names the destination
(not the temporary file), and :func:`os_error_message` turns it into the one line the CLI
prints.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: what a user can do about the filesystem errors a run can hit (the CLI's one-line messages)
FS_ERROR_FIXES: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free some space or write somewhere else (--out)",
    errno.EDQUOT: "your disk quota is used up: free some space or write somewhere else (--out)",
    errno.EROFS: "the filesystem is read-only: write somewhere else (--out)",
    errno.EACCES: "permission denied: fix the folder's permissions or write somewhere else (--out)",
    errno.EPERM: "operation not permitted: fix the folder's permissions or write somewhere else (--out)",
    errno.ENOTDIR: "a part of this path is a file, not a folder: choose another path",
    errno.ENAMETOOLONG: "a name in this path is too long (at most 255 bytes each): choose a shorter path",
    errno.EEXIST: "a file is in the way of a folder: remove it or choose another path",
    errno.EISDIR: "a folder is in the way of a file: remove it or choose another path",
}


def os_error_message(e: OSError) -> str:
    """One line naming the path, the errno's meaning and the fix, e.g. ``'runs/x/metrics.csv':
    No space left on device (ENOSPC); the disk is full: ...``."""
    where = e.filename if e.filename is not None else "?"
    code = errno.errorcode.get(e.errno, str(e.errno)) if e.errno is not None else "?"
    meaning = e.strerror or (os.strerror(e.errno) if e.errno is not None else str(e))
    fix = FS_ERROR_FIXES.get(e.errno or 0)
    return f"{str(where)!r}: {meaning} ({code})" + (f"; {fix}" if fix else "")


def create_temp(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """An open ``(fd, path)`` of a new file in ``folder``, mode ``0o666`` less the umask.

    :func:`tempfile.mkstemp` would create it ``0600`` whatever the umask; ``os.open`` with
    ``O_EXCL`` lets the kernel apply the umask at the time of the call (no need to read it,
    which is not thread-safe).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = Path(folder) / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``.

    An ``OSError`` (a full or read-only disk, ...) leaves ``path`` as it was and is raised
    again with ``path`` as its ``filename``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temp(path.parent, f".{path.name}.", ".tmp")
        os.close(fd)
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and (e.filename is None or str(e.filename) == str(tmp)):
            # the mkdir of a parent keeps its own (more precise) filename
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), str(path)) from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, w)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
