"""Will it fit? Refusing, before any work, an output the user sized too big for this machine.

A command whose output grows with a user's number (``profond sample --n``, ``profond eval
--n``, ``profond generate --n --length``) estimates the bytes that output needs and calls
:func:`check_fits` first: a request above the limit is a :class:`~profond.errors.ProfondError`
(exit 2) saying the estimate, the limit and the fix, instead of an allocation that the
kernel answers by killing the process minutes later.

* memory: at most :data:`MEMORY_FRACTION` of the memory available now (``MemAvailable`` in
  ``/proc/meminfo``, which counts reclaimable page cache; ``sysconf`` elsewhere): the rest
  is left to the model, the libraries and the other processes;
* disk: at most the free space of the file system that will hold the file.

Where a figure is unknown (no ``/proc``, an exotic file system) that check is skipped: the
limits refuse what cannot work, they never block what might.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ProfondError

__all__ = ["MEMORY_FRACTION", "available_memory", "free_disk", "human_bytes", "check_fits", "check_count"]

#: a request may use at most this fraction of the memory available when it starts
MEMORY_FRACTION = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation without swapping, or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def free_disk(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system of ``path`` (or of its nearest existing parent: the
    folder may not be made yet), or None if unknown."""
    p = Path(path).absolute()
    for candidate in (p, *p.parents):
        if candidate.exists():
            try:
                return int(shutil.disk_usage(candidate).free)
            except OSError:
                return None
    return None


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1000, as disk and memory sizes are quoted)."""
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def check_fits(nbytes: float, what: str, fix: str, *, memory: bool = True,
               disk: str | os.PathLike | None = None) -> None:
    """Raise ProfondError if ``what`` (about ``nbytes`` bytes) would not fit in memory (when
    ``memory``) or on the disk holding ``disk`` (when given). ``fix`` ends the message: what
    the user can change, e.g. ``"lower --n"``."""
    if memory:
        avail = available_memory()
        if avail is not None and nbytes > MEMORY_FRACTION * avail:
            raise ProfondError(
                f"{what} needs about {human_bytes(nbytes)} of memory, more than "
                f"{MEMORY_FRACTION:.0%} of the {human_bytes(avail)} available (MemAvailable); {fix}."
            )
    if disk is not None:
        free = free_disk(disk)
        if free is not None and nbytes > free:
            raise ProfondError(
                f"{what} needs about {human_bytes(nbytes)} on disk, more than the {human_bytes(free)} "
                f"free on the file system of {str(disk)!r}; {fix}."
            )


def check_count(value: int, limit: int, what: str, fix: str) -> None:
    """Raise ProfondError if ``value`` (a user's count, named in ``what``) exceeds ``limit``."""
    if value > limit:
        raise ProfondError(f"{what} is {value:,}, more than the limit of {limit:,}; {fix}.")
