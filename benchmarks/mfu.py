"""Model FLOPs utilization (MFU) of profond's training step on this machine.

1. Peak: the best FLOP/s of large square matmuls (``2 N^3`` FLOPs each), fp32 and bf16,
   measured in this run with the same number of threads.
2. FLOPs per training sample: ``torch.utils.flop_counter.FlopCounterMode`` counts the
   matmul/conv FLOPs of one forward *and* backward on a batch (what autograd actually
   dispatches, so no "3x forward" guess), divided by the batch size. Elementwise work
   (BN, ReLU, the optimizer) is not counted, as usual for MFU.
3. Achieved: profond's training step (``Classifier.train_step`` inside the loop's
   autocast, plus the scheduler step, batches sliced by ``profond.data.Batches``) timed over
   ``--steps`` steps after a warm-up, in fp32 and in bf16.

MFU = achieved FLOP/s / peak FLOP/s of the same precision.

    python benchmarks/mfu.py                               # the fmnist-cnn-fast recipe's CNN
    python benchmarks/mfu.py --recipe fmnist-best --steps 50

Writes ``benchmarks/results/mfu.json`` and ``mfu.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from common import RESULTS_DIR, load_note, machine, md_table, write_json
from torch.utils.flop_counter import FlopCounterMode

from profond.config import resolve
from profond.registry import MODELS
from profond.train.loop import Trainer


def matmul_peak(n: int, dtype: torch.dtype, repeats: int) -> float:
    """Best FLOP/s of ``n x n @ n x n`` in ``dtype`` over ``repeats`` timed runs."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):  # warm-up (oneDNN picks and caches its kernel)
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_flops_per_sample(model_name: str, model_args: dict, batch: int) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per sample counted by FlopCounterMode."""
    model = MODELS.build(model_name, in_shape=(1, 28, 28), num_classes=10, **model_args)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    with FlopCounterMode(display=False) as fwd:
        loss = F.cross_entropy(model(x), y)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    f, b = fwd.get_total_flops(), bwd.get_total_flops()
    return f / batch, (f + b) / batch


def step_throughput(recipe: str, precision: str, channels_last: bool, threads: int,
                    steps: int, warmup: int) -> float:
    """Training samples/s of profond's step (batching + train_step + scheduler)."""
    out = tempfile.mkdtemp(prefix="profond-mfu-")
    try:
        cfg = resolve(recipe=recipe, overrides=[
            f"train.precision={precision}", f"train.channels_last={str(channels_last).lower()}",
            f"train.threads={threads}", "train.quiet=true", "data.augment=[]",
            f"out={out}", "name=mfu",
        ])
        trainer = Trainer(cfg)
        m, ctx = trainer.method, trainer.ctx
        m.train()
        batches = m.train_data.batches(0)
        n = 0
        for i in range(warmup + steps):
            if i == warmup:
                n, t0 = 0, time.perf_counter()
            batch = next(batches)
            with trainer.autocast():
                out_ = m.train_step(batch, ctx)
            for sched in trainer.schedulers.values():
                sched.step()
            float(out_["loss"])  # the loop reads the metrics every step
            n += batch[0].shape[0]
        return n / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="fmnist-cnn-fast", help="recipe whose model and batch size are used")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    print(f"{info['cpu']}, {args.threads} threads, {load_note(info['load_avg_1_5_15'])}", flush=True)

    cfg = resolve(recipe=args.recipe)
    model_name, model_args, batch = cfg.model.name, dict(cfg.model.args), cfg.data.batch_size
    fwd, train = train_flops_per_sample(model_name, model_args, batch)
    print(f"{model_name} {model_args}: {fwd / 1e6:.1f} MFLOP forward, {train / 1e6:.1f} MFLOP "
          f"forward+backward per sample (batch {batch})", flush=True)

    rows, results = [], []
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        peak = matmul_peak(args.matmul_n, dtype, args.repeats)
        sps = step_throughput(args.recipe, precision, cfg.train.channels_last, args.threads,
                              args.steps, args.warmup)
        achieved = sps * train
        mfu = achieved / peak
        print(f"{precision}: peak {peak / 1e9:.1f} GFLOP/s (matmul {args.matmul_n}), "
              f"{sps:,.0f} samples/s = {achieved / 1e9:.1f} GFLOP/s -> MFU {mfu:.1%}", flush=True)
        results.append({"precision": precision, "peak_gflops": round(peak / 1e9, 2),
                        "samples_per_s": round(sps, 1), "achieved_gflops": round(achieved / 1e9, 2),
                        "mfu": round(mfu, 4)})
        rows.append([precision, f"{peak / 1e9:.1f}", f"{sps:,.0f}", f"{achieved / 1e9:.1f}", f"{mfu:.1%}"])

    command = " ".join(["python benchmarks/mfu.py", *sys.argv[1:]])
    write_json(RESULTS_DIR / "mfu.json", {
        "recipe": args.recipe, "model": model_name, "model_args": model_args, "batch_size": batch,
        "channels_last": cfg.train.channels_last, "threads": args.threads,
        "matmul_n": args.matmul_n, "forward_flops_per_sample": fwd, "train_flops_per_sample": train,
        "results": results, "machine": info, "command": command,
    })
    (RESULTS_DIR / "mfu.md").write_text(
        f"# Model FLOPs utilization ({model_name} {model_args}, batch {batch}, "
        f"{args.threads} threads)\n\n"
        f"Training FLOPs per sample (FlopCounterMode, forward+backward): {train / 1e6:.1f} MFLOP "
        f"(forward {fwd / 1e6:.1f}). Peak = best {args.matmul_n}x{args.matmul_n} matmul.\n\n"
        + md_table(["precision", "peak GFLOP/s", "train samples/s", "achieved GFLOP/s", "MFU"], rows)
        + f"\n\n`{command}` on {info['cpu']}, {info['date']}, {load_note(info['load_avg_1_5_15'])}. "
        + ("The CPU has bf16 hardware (AVX512_BF16/AMX).\n" if info["bf16_in_hardware"] else
           "The CPU has no bf16 hardware (no AVX512_BF16/AMX): oneDNN emulates bf16, so its "
           "peak is below fp32's.\n")
    )
    print(f"wrote {RESULTS_DIR / 'mfu.json'} and {RESULTS_DIR / 'mfu.md'}")


if __name__ == "__main__":
    main()
