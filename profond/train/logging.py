"""What a run writes and shows: metrics.csv, TensorBoard events, console lines and a
rich progress bar (loss, metrics, samples/s, ETA). Only rank 0 logs."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.errors import MarkupError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..base.io import atomic_write_text


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3e}"
        return f"{v:.4f}"
    return str(v)


class MetricAccumulator:
    """Running means of the step metrics, per key.

    A metric a method logs on some steps only (e.g. a GAN's class-histogram monitor every
    25th step, or the generator's gradient norm every ``n_critic``-th step) is averaged over
    the steps that logged it. The loop keeps two: one per epoch (the ``train_*`` columns of
    metrics.csv, saved in checkpoints so that a resumed epoch averages exactly) and one per
    ``train.log_every`` window (TensorBoard).
    """

    def __init__(self, sums: dict[str, float] | None = None, counts: dict[str, int] | None = None):
        self.sums: dict[str, float] = dict(sums or {})
        self.counts: dict[str, int] = dict(counts or {})

    def add(self, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": v / max(self.counts.get(k, 1), 1) for k, v in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.counts = {}, {}

    def __bool__(self) -> bool:
        return bool(self.sums)


class MetricsCSV:
    """One row per evaluation (epoch): epoch, step, time, lr, train_*, val_*.

    The whole file is rewritten atomically at each row, so it is never half-written and
    new columns (a metric that appears later) are handled.
    """

    def __init__(self, path: Path, resume_until_step: int | None = None):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume_until_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_until_step]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in self.rows:
            w.writerow({k: r.get(k, "") for k in cols})
        atomic_write_text(self.path, buf.getvalue())


class TensorBoard:
    def __init__(self, logdir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.w = SummaryWriter(str(logdir), purge_step=purge_step)

    def scalars(self, metrics: dict[str, Any], step: int) -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                tag = k.replace("_", "/", 1) if k.startswith(("train_", "val_", "test_")) else k
                self.w.add_scalar(tag, v, step)

    def text(self, tag: str, text: str) -> None:
        self.w.add_text(tag, text)

    def close(self) -> None:
        self.w.flush()
        self.w.close()


class Console_:
    """Console output with an optional progress bar; silent when quiet.

    Messages are rich console markup (``[bold]...[/bold]``): user text in them (run folders,
    names, paths) must be passed through :func:`rich.markup.escape` by the caller, or
    ``runs/[bold]x`` would print as a bold ``runs/x``. A message that is not valid markup
    is printed as it is rather than stopping the run.
    """

    def __init__(self, quiet: bool = False, enabled: bool = True):
        self.quiet = quiet or not enabled
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.progress: Progress | None = None
        self.task = None
        self._t0 = time.perf_counter()
        self._samples = 0

    def print(self, msg: str) -> None:
        if not self.quiet:
            self.always(msg)

    def always(self, msg: str) -> None:
        """Print even in quiet mode (interruptions, failures)."""
        try:
            self.console.print(msg)
        except MarkupError:  # an unescaped '[/x]' in user text: a console line never ends a run
            self.console.print(msg, markup=False)

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0) -> None:
        self._t0 = time.perf_counter()
        self._samples = 0
        if self.quiet or not self.console.is_terminal:
            return
        self.progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=done, info="")

    def advance(self, n_samples: int, info: dict[str, Any] | None = None) -> None:
        self._samples += n_samples
        if self.progress is not None:
            text = " ".join(f"{k} {fmt(v)}" for k, v in (info or {}).items())
            text += f" {self.throughput():,.0f} samples/s"
            self.progress.update(self.task, advance=1, info=text)

    def throughput(self) -> float:
        return self._samples / max(time.perf_counter() - self._t0, 1e-9)

    def end_epoch(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def is_tty() -> bool:
    return sys.stderr.isatty()
