"""Helpers shared by the benchmark scripts: machine description and results files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy the machine was."""
    from profond.base.device import machine_info

    return machine_info()


def load_note(load: list[float] | tuple[float, ...]) -> str:
    """The 1-minute load average, to judge whether the CPU was shared.

    It decays slowly: just after a 2-thread run it is still near 2 from that run alone.
    """
    return f"1-min load average {load[0]:.2f}"


def provenance(part: dict[str, Any]) -> str:
    """One line under a results table: the command, the machine, the date and the load before and
    after (``part`` holds ``command``, ``quick``, ``threads``, ``load`` and ``machine`` as written by
    the benchmark scripts)."""
    m = part.get("machine", {})
    return (f"`{part.get('command', '')}`{' (quick)' if part.get('quick') else ''} on {m.get('cpu', '?')}, "
            f"{part.get('threads', '?')} threads, native bf16: {m.get('bf16_in_hardware', '?')}, "
            f"torch {m.get('torch', '?')}, {m.get('date', '')}, {part.get('load', '')} at the start, "
            f"{(m.get('load_avg_1_5_15') or ['?'])[0]} at the end.")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Timer:
    """``with Timer() as t: ...; t.s`` - wall-clock seconds."""

    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.s = time.perf_counter() - self.t0


def add_lane_args(ap: Any) -> None:
    """``--threads`` and ``--keep``, shared by the scripts that train recipes."""
    ap.add_argument("--threads", type=int, default=2, help="torch threads (1 to run two lanes side by side)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here")


def train_recipe(out: Path, recipe: str, overrides: list[str] | None = None, *, threads: int = 2,
                 name: str | None = None) -> tuple[Any, float]:
    """Train ``recipe`` through the one loop (quiet, CPU, fp32, seed 0, ``threads`` torch threads)
    into ``out/NAME``; ``overrides`` come last and win. Returns the run result and wall seconds."""
    from profond.config import resolve
    from profond.train import train

    cfg = resolve(recipe=recipe, overrides=["train.quiet=true", "train.device=cpu", f"train.threads={threads}",
                                            "train.precision=fp32", "train.seed=0", f"out={out}",
                                            f"name={name or recipe}", *(overrides or [])])
    with Timer() as t:
        res = train(cfg)
    return res, t.s


def record(json_path: Path, key: str, entry: Any, targets: Any) -> dict[str, Any]:
    """Merge ``entry`` under ``key`` into the results file (re-read first: parallel
    invocations merge), recompute ``targets(data)``, write it atomically; returns the data."""
    data = read_json(json_path, {})
    data[key] = entry
    data["targets"] = targets(data)
    write_json(json_path, data)
    return data
