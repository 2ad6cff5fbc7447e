"""Course experiments: one module each, run by ``profond experiment NAME [--quick]``.

An experiment is a function ``fn(out: Path, quick: bool) -> ExperimentResult`` registered
in :data:`profond.registry.EXPERIMENTS`. It returns its table (a pandas DataFrame) and the
figures it wrote; :func:`run_experiment` writes ``table.csv``, ``table.md`` and
``summary.json`` next to the figures in the output folder and prints the table.
``--quick`` is the CI-sized version (seconds on 2 cores); the full mode makes the real
figure of the course.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..base.device import machine_info
from ..base.io import atomic_write_text
from ..errors import ProfondError
from ..registry import EXPERIMENTS

#: modules holding registered experiments (later issues add theirs here)
MODULES = ["separable", "theory_numeric", "optimization", "dynamics", "regularization", "capacity", "generative", "gan_theory", "gan_ablation", "rnn_memory", "rnn_ablation", "seq2seq_attention", "attention_theory", "attention_heads", "efficient_attention", "transformer_ablation", "head_analysis", "language_models", "diffusion", "flows", "likelihood", "learning_theory", "ntk", "landscape", "information", "sharpness", "lottery", "energy", "fairness", "privacy", "generalisation", "depth_width"]


@dataclass
class ExperimentResult:
    table: pd.DataFrame
    figures: list[Path] = field(default_factory=list)
    notes: str = ""
    extra: dict = field(default_factory=dict)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` intra-op threads (steadier timings on a shared machine; tiny
    problems also lose more to thread hand-off than they gain), then restore the count."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def verdict(ok: bool | None) -> str:
    """A claim of the course judged from the numbers: holds / does not hold / not tested."""
    return "not tested" if ok is None else ("holds" if ok else "does not hold")


def two_se(p: float, n: int) -> float:
    """Two binomial standard errors of an accuracy ``p`` measured on ``n`` examples."""
    return 2 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def run_training(out: Path, name: str, overrides: list[str], *, recipe: str | None = None,
                 callbacks: list[Any] | None = None) -> tuple[Any, float]:
    """One quiet CPU training run through the one loop, in ``out/runs/NAME``.

    Without ``recipe``, defaults shared by the course's ablations (an MLP, batch 128) come
    first; with one, the recipe is the base. ``overrides`` win either way (2 threads and
    seed 0 unless they say otherwise); ``callbacks`` go to the loop. Returns the
    :class:`~profond.train.RunResult` and the wall seconds of the run.
    """
    from ..config import resolve
    from ..train import train

    base = [] if recipe else ["model.name=mlp", "data.batch_size=128"]
    cfg = resolve(recipe=recipe, overrides=[
        *base, "train.quiet=true", "train.device=cpu",
        "train.threads=2", "train.seed=0", f"out={out / 'runs'}", f"name={name}", *overrides,
    ])
    t0 = time.perf_counter()
    res = train(cfg, callbacks=callbacks or ())
    return res, time.perf_counter() - t0


def optional_dataset(name: str) -> tuple[Any, str | None]:
    """Dataset ``name`` when its files load (found or downloaded), else ``None`` and the
    message saying why: full modes use MNIST or CIFAR-10 where a machine has them."""
    from ..data.vision import load_dataset
    from ..errors import ProfondError

    try:
        return load_dataset(name, progress=False), None
    except ProfondError as e:
        return None, f"{name} skipped: its files are not on this machine and cannot be downloaded ({e})"


def finite(v: Any) -> float:
    """``float(v)``, or NaN for None / inf (tables show NaN for a diverged run)."""
    v = float(v) if v is not None else math.nan
    return v if math.isfinite(v) else math.nan


def run_row(res: Any, wall: float) -> dict[str, float]:
    """The table columns every ablation reports for one run: final losses/accuracies and times."""
    final = res.summary["final"]
    return {
        "train_loss": round(finite(final.get("train_loss")), 4),
        "val_accuracy": round(finite(final.get("val_accuracy")), 4),
        "test_accuracy": round(finite(final.get("test_accuracy")), 4),
        "train_s": round(res.summary["train_time_s"], 2),
        "wall_s": round(wall, 2),
    }


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


#: marks a folder as made by ``profond experiment`` (its content: the experiment's name)
MARKER = ".profond-experiment"


def _claim_folder(out_dir: Path, name: str, default: bool = False) -> None:
    """Make ``out_dir`` ready for a (re-)run of experiment ``name``.

    Running an experiment again into its folder replaces the earlier result: the training
    runs it left under ``out_dir/runs`` (finished or interrupted) are removed first, since
    the loop refuses to overwrite a run folder. Only folders this function marked for the
    same experiment (either mode; or the default folder ``runs/experiments/NAME[-quick]``, which
    is the experiment's own) are cleared, and a folder is only marked when it is new or
    empty; a ``runs/`` subfolder anywhere else (``--out .`` in a project with its own
    training runs) is never deleted: that is an error that names the fix.
    """
    tag = name
    marker = out_dir / MARKER
    runs = out_dir / "runs"
    owner = marker.read_text().strip() if marker.is_file() else (tag if default else None)
    # a folder is claimed only when it is new, empty or already this experiment's
    claim = owner == tag or not out_dir.exists() or not any(out_dir.iterdir())
    if runs.exists():
        if owner != tag:
            made_by = f"`profond experiment {owner}`" if owner else "something other than `profond experiment`"
            raise ProfondError(
                f"--out {out_dir}: its runs/ subfolder was made by {made_by}, so it is left alone; "
                f"choose another --out (or delete {runs} yourself).")
        shutil.rmtree(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    if claim:
        atomic_write_text(marker, tag + "\n")


def run_experiment(name: str, *, quick: bool = False, out: str | Path | None = None) -> tuple[Path, ExperimentResult]:
    fn = EXPERIMENTS.get(name)
    out_dir = Path(out) if out else Path("runs") / "experiments" / f"{name}{'-quick' if quick else ''}"
    _claim_folder(out_dir, name, default=not out)
    t0 = time.perf_counter()
    result: ExperimentResult = fn(out_dir, quick)
    elapsed = time.perf_counter() - t0
    result.table.to_csv(out_dir / "table.csv", index=False)
    md = f"# {name}{' (quick)' if quick else ''}\n\n{to_markdown(result.table)}"
    if result.notes:
        md += f"\n{result.notes}\n"
    atomic_write_text(out_dir / "table.md", md)
    atomic_write_text(out_dir / "summary.json", json.dumps({
        "experiment": name, "quick": quick, "seconds": round(elapsed, 2),
        "command": f"profond experiment {name}" + (" --quick" if quick else "") + (f" --out {out}" if out else ""),
        "machine": machine_info(),
        "figures": [str(p) for p in result.figures], "rows": len(result.table), **result.extra,
    }, indent=2) + "\n")
    return out_dir, result


for _m in MODULES:
    importlib.import_module(f"{__name__}.{_m}")
