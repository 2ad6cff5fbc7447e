"""Verified, atomic downloads.

:func:`fetch` streams a URL (``http://``, ``https://`` or ``file://``) into a temporary
file next to the destination, hashes it on the way, and renames it into place only when
the SHA-256 matches. An interrupted or corrupt download therefore never leaves a file
under the final name, and a later run never trusts a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Collection
from pathlib import Path

from ..base.io import create_temp
from ..errors import DatasetError

CHUNK = 1 << 20
TIMEOUT_S = 60


class DownloadError(DatasetError):
    """The file could not be fetched at all (network, HTTP or file-system error)."""


def _progress_bar(total: int | None, label: str):
    """A rich progress bar on stderr, or ``None`` (no TTY, or rich unavailable)."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
    except ImportError:  # pragma: no cover - rich is a dependency
        return None, None
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task(label, total=total)
    return progress, task


def fetch(url: str, dest: str | os.PathLike, sha256: str | Collection[str], progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and check its SHA-256; return ``dest``.

    ``sha256``: the expected hash, or the hashes of every known distribution of the file
    (the same data gzipped differently): the bytes must be exactly one of them.
    The data is streamed to a temporary file in ``dest``'s folder, then renamed
    atomically (``os.replace``). A hash mismatch deletes the temporary file and raises
    :class:`DatasetError` naming the URL and the hashes; a failed transfer raises
    :class:`DownloadError` (a DatasetError) and leaves nothing behind either.
    A progress bar is drawn on stderr when ``progress`` is true and stderr is a TTY.
    """
    dest = Path(dest)
    expected = [sha256.lower()] if isinstance(sha256, str) else [h.lower() for h in sha256]
    if not expected:
        raise ValueError("fetch needs at least one expected SHA-256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(dest.parent, f".{dest.name}.", ".part")  # mode 0666 less the umask
    digest = hashlib.sha256()
    bar, task = None, None
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
            except urllib.error.HTTPError as e:
                raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DownloadError(f"cannot download {url}: {reason}") from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if progress and sys.stderr.isatty():
                    bar, task = _progress_bar(total, dest.name)
                    if bar is not None:
                        bar.start()
                try:
                    while chunk := response.read(CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        if bar is not None:
                            bar.advance(task, len(chunk))
                except OSError as e:
                    raise DownloadError(f"download of {url} interrupted: {e}") from None
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got not in expected:
            raise DatasetError(
                f"SHA-256 mismatch for {url}: expected {' or '.join(expected)}, got {got}. "
                "The file was deleted; the server may be serving a different or corrupt file."
            )
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.stop()
    return dest


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
