"""The CUDA check, for a machine with a GPU (issue 14): one script, one command.

    python benchmarks/cuda.py [--out DIR] [--recipes fmnist-cnn-fast fmnist-mlp ...] [--timeout S]

It runs, each step in its own process with a time limit, and writes
``benchmarks/results/cuda.json`` and ``cuda.md`` (the GPU, torch and CUDA versions, each
step's status, wall time and key numbers):

1. the test suite's CUDA-marked tests (``pytest -k cuda``: they skip without a GPU);
2. one epoch of every recipe on ``--device cuda`` with ``precision=auto`` (bf16 where the GPU
   has it) and with ``precision=fp16`` (autocast + GradScaler): test accuracy / loss and
   samples/s from summary.json;
3. ``train.compile=true`` on the CNN recipe: the same epoch, compile time included, against
   the eager run;
4. one-process NCCL DDP (``torchrun --nproc_per_node 1``) on the CNN recipe.

Without a GPU it says so and exits 0 (nothing to check). The results file is what the
closing note of a GPU session quotes; nothing here is run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CNN = "fmnist-cnn-fast"


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; its status, wall time and the tail of its output."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env={**os.environ, **(env or {})})
        status = "ok" if r.returncode == 0 else f"exit {r.returncode}"
        tail = (r.stdout + r.stderr)[-1500:]
    except subprocess.TimeoutExpired as e:
        status, tail = f"timeout after {timeout:.0f} s", str(e.stdout or "")[-1500:]
    return {"cmd": " ".join(cmd), "status": status, "wall_s": round(time.perf_counter() - t0, 1), "tail": tail}


def summary_of(run_dir: Path) -> dict[str, Any]:
    try:
        s = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    final = s.get("final", {})
    keep = {k: v for k, v in final.items() if k.startswith("test_")}
    return {**keep, "samples_per_s": s.get("samples_per_s"), "precision": s.get("precision"),
            "train_time_s": s.get("train_time_s"), "device_name": s.get("device_name")}


def train_cmd(recipe: str, out: Path, name: str, *sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "profond", "train", "--recipe", recipe, "--device", "cuda", "--epochs", "1",
           "--out", str(out), "--name", name, "-q"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


def main() -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/profond-cuda"), help="run folders")
    ap.add_argument("--recipes", nargs="*", default=None, help="default: every recipe")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per step")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here.")
        return 0
    from profond.config import recipe_names

    recipes = a.recipes or recipe_names()
    info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
            "bf16": torch.cuda.is_bf16_supported(), "date": time.strftime("%Y-%m-%d %H:%M")}
    steps: list[dict[str, Any]] = []
    steps.append({"step": "pytest -k cuda", **run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                                   "-k", "cuda", "tests"], a.timeout)})
    for recipe in recipes:
        for prec in ("auto", "fp16"):
            name = f"{recipe}-{prec}"
            r = run(train_cmd(recipe, a.out, name, f"train.precision={prec}"), a.timeout)
            steps.append({"step": f"{recipe} precision={prec}", **r, **summary_of(a.out / name)})
    r = run(train_cmd(CNN, a.out, f"{CNN}-compile", "train.compile=true"), a.timeout)
    steps.append({"step": f"{CNN} torch.compile", **r, **summary_of(a.out / f"{CNN}-compile")})
    ddp = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "profond", "train",
           "--recipe", CNN, "--device", "cuda", "--epochs", "1", "--out", str(a.out), "--name", f"{CNN}-ddp", "-q"]
    steps.append({"step": f"{CNN} NCCL DDP x1", **run(ddp, a.timeout), **summary_of(a.out / f"{CNN}-ddp")})

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cuda.json").write_text(json.dumps({"machine": info, "steps": steps}, indent=2) + "\n")
    cols = ["step", "status", "wall_s", "precision", "test_accuracy", "test_loss", "samples_per_s"]
    lines = [f"# CUDA check ({info['gpu']}, torch {info['torch']}, CUDA {info['cuda']}, {info['date']})", "",
             "Command: `python benchmarks/cuda.py`", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    for s in steps:
        lines.append("| " + " | ".join("" if s.get(c) is None else str(s.get(c)) for c in cols) + " |")
    (RESULTS / "cuda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(s["status"] == "ok" for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
