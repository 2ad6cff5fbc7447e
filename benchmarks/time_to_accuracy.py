"""Time to accuracy: does a recipe reach its test accuracy within its wall-time budget?

Each seed is a fresh ``python -m profond train --recipe R --seed S`` subprocess, timed
from just before the process starts to its exit (imports, data loading, training, test
evaluation and writing the run folder all count). The test accuracy is read from the run's
``summary.json``. The medians over the seeds are compared with the targets.

    python benchmarks/time_to_accuracy.py --recipe fmnist-mlp --target-acc 0.905 --target-s 60
    python benchmarks/time_to_accuracy.py --all            # the three Fashion-MNIST recipes
    python benchmarks/time_to_accuracy.py --recipe fmnist-best --seeds 0

Results are merged per recipe into ``benchmarks/results/time_to_accuracy.json`` and the
whole table is rewritten to ``time_to_accuracy.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, Timer, load_note, machine, md_table, read_json, write_json

#: recipe -> (target test accuracy, target wall time in seconds)
TARGETS: dict[str, tuple[float, float]] = {
    "fmnist-mlp": (0.905, 60.0),
    "fmnist-cnn-fast": (0.930, 120.0),
    "fmnist-best": (0.940, 600.0),
}

JSON_PATH = RESULTS_DIR / "time_to_accuracy.json"
MD_PATH = RESULTS_DIR / "time_to_accuracy.md"


def run_seed(recipe: str, seed: int, out: Path, overrides: list[str]) -> dict[str, Any]:
    """Train ``recipe`` with ``seed`` in a fresh process; wall time and the summary's numbers."""
    name = f"{recipe}-seed{seed}"
    cmd = [sys.executable, "-m", "profond", "train", "--recipe", recipe, "--seed", str(seed),
           "--out", str(out), "--name", name, "-q"]
    for item in overrides:
        cmd += ["--set", item]
    load = os.getloadavg()[0]
    with Timer() as t:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    summary = json.loads((out / name / "summary.json").read_text())
    return {
        "seed": seed,
        "test_accuracy": summary["final"]["test_accuracy"],
        "process_wall_s": round(t.s, 2),
        "train_time_s": summary["train_time_s"],
        "samples_per_s": summary["samples_per_s"],
        "epochs": summary["epochs_completed"],
        "load_before": round(load, 2),
    }


def bench(recipe: str, target_acc: float, target_s: float, seeds: list[int],
          overrides: list[str], keep: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="profond-tta-") as tmp:
        out = keep or Path(tmp)
        runs = []
        for seed in seeds:
            r = run_seed(recipe, seed, out, overrides)
            print(f"  {recipe} seed {seed}: test acc {r['test_accuracy']:.4f}  "
                  f"wall {r['process_wall_s']:.1f}s  (train {r['train_time_s']:.1f}s, "
                  f"{r['samples_per_s']:,.0f} samples/s, load {r['load_before']})", flush=True)
            runs.append(r)
    acc = statistics.median(r["test_accuracy"] for r in runs)
    wall = statistics.median(r["process_wall_s"] for r in runs)
    return {
        "recipe": recipe,
        "overrides": overrides,
        "target_acc": target_acc,
        "target_s": target_s,
        "median_test_accuracy": acc,
        "median_wall_s": wall,
        "acc_met": acc >= target_acc,
        "time_met": wall <= target_s,
        "met": acc >= target_acc and wall <= target_s,
        "runs": runs,
        "machine": machine(),
        "command": " ".join(["python benchmarks/time_to_accuracy.py", *sys.argv[1:]]),
    }


def write_markdown(results: dict[str, Any]) -> None:
    rows = []
    for name in sorted(results):
        r = results[name]
        loads = [x["load_before"] for x in r["runs"]]
        rows.append([
            f"`{name}`" + (f" ({', '.join(r['overrides'])})" if r["overrides"] else ""),
            f"{r['median_test_accuracy']:.4f} (≥ {r['target_acc']:.3f})",
            f"{r['median_wall_s']:.1f} (≤ {r['target_s']:.0f})",
            "yes" if r["met"] else "**no**",
            " / ".join(f"{x['test_accuracy']:.4f}" for x in r["runs"]),
            " / ".join(f"{x['process_wall_s']:.1f}" for x in r["runs"]),
            f"{r['machine']['date'][:16]}, load {min(loads):.1f}-{max(loads):.1f}",
        ])
    header = ["recipe", "median test acc (target)", "median wall s (target)", "met",
              "acc per seed", "wall s per seed", "measured"]
    MD_PATH.parent.mkdir(parents=True, exist_ok=True)
    MD_PATH.write_text(
        "# Time to accuracy (Fashion-MNIST, wall time from process start to exit)\n\n"
        + md_table(header, rows) + "\n\n"
        "Written by `python benchmarks/time_to_accuracy.py`; the seeds' runs are fresh "
        "`python -m profond train --recipe R --seed S` processes. "
        "Load = 1-minute load average just before each run (the CPU may be shared).\n"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", help="recipe name (profond list recipes)")
    p.add_argument("--all", action="store_true", help=f"run {', '.join(TARGETS)} with their targets")
    p.add_argument("--target-acc", type=float, help="median test accuracy to reach (default: known target)")
    p.add_argument("--target-s", type=float, help="median wall seconds allowed (default: known target)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra --set section.key=value passed to every run")
    p.add_argument("--keep", type=Path, help="keep the run folders under this folder")
    args = p.parse_args(argv)
    if args.all == bool(args.recipe):
        p.error("give either --recipe NAME or --all")
    jobs = []
    for recipe in TARGETS if args.all else [args.recipe]:
        acc, sec = TARGETS.get(recipe, (None, None))
        acc = args.target_acc if args.target_acc is not None and not args.all else acc
        sec = args.target_s if args.target_s is not None and not args.all else sec
        if acc is None or sec is None:
            p.error(f"no known target for {recipe!r}: pass --target-acc and --target-s")
        jobs.append((recipe, acc, sec))

    results = read_json(JSON_PATH, {})
    for recipe, acc, sec in jobs:
        print(f"{recipe}: target {acc:.3f} test accuracy in {sec:.0f}s  ({load_note(os.getloadavg())})",
              flush=True)
        r = bench(recipe, acc, sec, args.seeds, args.overrides, args.keep)
        print(f"{recipe}: median test acc {r['median_test_accuracy']:.4f}, median wall "
              f"{r['median_wall_s']:.1f}s -> {'MET' if r['met'] else 'NOT MET'}", flush=True)
        results[recipe] = r
        write_json(JSON_PATH, results)
        write_markdown(results)
    print(f"wrote {JSON_PATH} and {MD_PATH}")


if __name__ == "__main__":
    main()
