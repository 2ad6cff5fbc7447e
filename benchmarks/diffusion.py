"""Diffusion benchmarks (issue 17, course ch. 10): sampling and training throughput of the
``fmnist-ddpm`` U-Net, and the quality of DDIM-50 against DDPM-1000.

1. **Sampling** (course §10.6, remark 10.7; §10.10): images/s of each sampler on the recipe's
   U-Net (base 32, 28x28, random weights: the speed of a call does not depend on them) at
   ``--batch`` images. A sampler's cost is its number of network calls (NFE) times the cost of
   one call, so the time per call is measured by running each sampler of
   :mod:`profond.methods.samplers` for ``--calls`` real steps (DDPM on the respaced process,
   DDIM, Euler / Heun flow integration; Heun's few steps make ``2S − 1`` calls) and dividing by
   the calls it made; images/s = batch / (time per call × NFE of the full sampler): DDPM S = T,
   DDIM S = 50 and 20, Euler 20, Heun 20 (39 calls). The conditional net of ``fmnist-ddpm-cfg``
   with classifier-free guidance (def. 10.8, eq. 10.22) makes two network passes per call (the
   label and ∅, one concatenated batch), so its NFE per image doubles. Rows are timed
   interleaved, ``--repeats`` times, median.
2. **Training** (eq. 10.16): the U-Net trained on random [-1, 1] images, batch ``--train-batch``
   (the recipe's 128), Adam, the recipe's gradient clipping, the simple ε-loss computed by the
   family's own :meth:`~profond.methods.diffusion.DiffusionMethod.losses`; fp32, and bf16
   autocast where the CPU has native bf16 (``--bf16`` forces it). ms/step, images/s, and MFU =
   matmul/conv FLOPs of one step (``FlopCounterMode``, forward + backward) × steps/s ÷ the best
   FLOP/s of large square matmuls measured in this run with the same threads and dtype.
3. **Quality** (``--fid RUN_DIR[,RUN_DIR...]``, trained runs): FID (shipped Fashion-MNIST
   features, ``--n`` samples against the 10,000 test images, as ``profond eval`` computes it) of
   DDPM with all T steps and of DDIM-50 on the same model from the same seeds. Targets:
   DDIM-50 FID ≤ 1.1 × DDPM-1000 FID (each run), and the best diffusion FID against the best
   GAN of ``benchmarks/results/gan.json`` (cGAN and DCGAN; the numbers of gan.md when that file
   is missing). Without ``--fid`` the quality targets are None ("not measured").

    python benchmarks/diffusion.py                              # speed parts (minutes)
    python benchmarks/diffusion.py --only quality --fid runs/fmnist-ddpm-X,runs/fmnist-ddpm-cfg-Y
    python benchmarks/diffusion.py --quick --out /tmp/bench     # tiny net, seconds

Writes ``OUT/diffusion.json`` and ``diffusion.md`` (``--out``, default ``benchmarks/results``),
merged per part, each part with its command, load average and machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import RESULTS_DIR, load_note, machine, md_table, provenance, read_json, write_json
from mfu import matmul_peak
from torch.utils.flop_counter import FlopCounterMode

from profond.base.device import cpu_has_native_bf16
from profond.config import resolve
from profond.methods.diffusion import DiffusionMethod, DiffusionOptions
from profond.methods.noise import NoiseSchedule
from profond.methods.samplers import sample_ddim, sample_ddpm, sample_flow
from profond.registry import MODELS, load_all

RECIPE, CFG_RECIPE = "fmnist-ddpm", "fmnist-ddpm-cfg"
#: (label, sampler, steps of the full sampler; None = T)
SAMPLERS: tuple[tuple[str, str, int | None], ...] = (
    ("DDPM S=T", "ddpm", None), ("DDIM S=50", "ddim", 50), ("DDIM S=20", "ddim", 20),
    ("Euler 20", "euler", 20), ("Heun 20", "heun", 20))
#: the quality target: DDIM-50 FID within this factor of DDPM-1000's
DDIM_FID_FACTOR = 1.1
#: benchmarks/results/gan.md (5 epochs, features 32, 10,000 samples), used when gan.json is missing
GAN_FID_FALLBACK = {"cgan": 12.83, "dcgan": 16.7}
PARTS = ("sampling", "train", "quality")


def nfe(sampler: str, steps: int) -> int:
    """Network calls of one sampler run (without guidance): S, or 2S − 1 for Heun."""
    return 2 * steps - 1 if sampler == "heun" else steps


@dataclass
class Family:
    """What :meth:`DiffusionMethod.losses` and :meth:`DiffusionMethod.denoiser` read of a method
    (its options, schedule and classes), so the benchmark runs the family's own code on a
    bare net without loading a dataset."""

    opts: DiffusionOptions
    schedule: NoiseSchedule
    conditional: bool
    num_classes: int = 10

    def losses(self, net: Any, x0: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return DiffusionMethod.losses(self, net, x0, y)  # type: ignore[arg-type]

    def denoiser(self, net: Any, labels: torch.Tensor | None, w: float) -> Any:
        return DiffusionMethod.denoiser(self, net, labels, w)  # type: ignore[arg-type]


def build(recipe: str, a: argparse.Namespace) -> tuple[torch.nn.Module, Family, dict[str, Any]]:
    """The recipe's U-Net (``--quick``: base 8 on 8x8) in eval mode, its family, its model args."""
    load_all()
    cfg = resolve(recipe=recipe)
    args = dict(cfg.model.args)
    if a.quick:
        args.update(base=8, groups=4)  # GroupNorm needs >= 2 channels per group
    torch.manual_seed(0)
    net = MODELS.build(cfg.model.name, in_shape=a.shape, num_classes=10, **args)
    opts = DiffusionOptions(**cfg.method.args)
    fam = Family(opts, NoiseSchedule(opts.schedule, opts.timesteps), bool(getattr(net, "num_classes", 0)))
    return net.eval(), fam, args


def run_sampler(fam: Family, f: Any, sampler: str, steps: int, shape: tuple[int, ...]) -> int:
    """Run ``sampler`` for ``steps`` steps on the denoiser ``f``; returns its calls of ``f``."""
    g = torch.Generator().manual_seed(0)
    o = fam.opts
    if sampler == "ddpm":
        res = sample_ddpm(f, fam.schedule, shape, generator=g, steps=steps, prediction=o.prediction)
    elif sampler == "ddim":
        res = sample_ddim(f, fam.schedule, shape, generator=g, steps=steps, prediction=o.prediction)
    else:
        res = sample_flow(f, shape, generator=g, steps=steps, method=sampler, time_scale=o.timesteps - 1)
    return res.nfe


def bench_sampling(a: argparse.Namespace) -> dict[str, Any]:
    """Time per network call of every (net, sampler) row, interleaved, and the images/s it implies."""
    nets, model_args = [], {}
    for recipe in (RECIPE, CFG_RECIPE):
        net, fam, model_args[recipe] = build(recipe, a)
        w = fam.opts.guidance if fam.conditional else 0.0
        labels = torch.arange(a.batch) % fam.num_classes if fam.conditional else None
        nets.append((recipe, fam, w, fam.denoiser(net, labels, w)))
    shape = (a.batch, *a.shape)
    rows, jobs = [], []  # jobs[k]: what row k runs
    for recipe, fam, w, f in nets:
        run_sampler(fam, f, "ddim", 1, shape)  # warm-up (allocator, oneDNN kernels)
        for label, sampler, steps in SAMPLERS:
            full = fam.schedule.T if steps is None else steps
            rows.append({"recipe": recipe, "sampler": label, "method": sampler, "steps": full,
                         "guidance": w if fam.conditional else None,
                         "nfe_per_image": nfe(sampler, full) * (2 if w > 0 else 1),
                         "net_batch_per_call": a.batch * (2 if w > 0 else 1)})
            jobs.append((fam, f, sampler))
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(a.repeats):  # interleaved: a change of load hits every row alike
        for row, ts, (fam, f, sampler) in zip(rows, times, jobs, strict=True):
            t0 = time.perf_counter()
            calls = run_sampler(fam, f, sampler, a.calls, shape)
            ts.append((time.perf_counter() - t0) / calls)
            row["timed_calls"] = calls
    ddpm = {}
    for row, ts in zip(rows, times, strict=True):
        s_call = statistics.median(ts)
        calls_per_image = row["nfe_per_image"] // (2 if row["guidance"] else 1)  # guided calls are one 2x batch
        row["ms_per_call"] = round(1e3 * s_call, 2)
        row["images_per_s"] = round(a.batch / (s_call * calls_per_image), 4)
        row["s_per_image"] = round(s_call * calls_per_image / a.batch, 4)
        if row["method"] == "ddpm":
            ddpm[row["recipe"]] = row["images_per_s"]
        row["speedup_vs_ddpm"] = round(row["images_per_s"] / ddpm[row["recipe"]], 2)
        print(f"  {row['recipe']} {row['sampler']}{' w=' + str(row['guidance']) if row['guidance'] else ''}: "
              f"NFE {row['nfe_per_image']}, {row['ms_per_call']} ms/call (batch {row['net_batch_per_call']}) "
              f"-> {row['images_per_s']} images/s", flush=True)
    return {"batch": a.batch, "image_shape": list(a.shape), "repeats": a.repeats, "calls_per_timing": a.calls,
            "model_args": model_args, "rows": rows}


def train_step(net: torch.nn.Module, fam: Family, opt: torch.optim.Optimizer, x0: torch.Tensor,
               precision: str, clip: float | None) -> None:
    """One Adam step on the simple ε-loss (eq. 10.16) of the batch ``x0`` on [-1, 1]."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        loss = fam.losses(net, x0, None).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()


def bench_train(a: argparse.Namespace) -> dict[str, Any]:
    precisions = ["fp32"] + (["bf16"] if cpu_has_native_bf16() or a.bf16 else [])
    clip = resolve(recipe=RECIPE).train.clip_grad_norm
    x0 = torch.rand(a.train_batch, *a.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    rows = []
    for precision in precisions:
        peak = matmul_peak(a.matmul_n, torch.float32 if precision == "fp32" else torch.bfloat16, 5)
        net, fam, args = build(RECIPE, a)
        net.train()
        with FlopCounterMode(display=False) as counter, \
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            fam.losses(net, x0, None).mean().backward()
        flops = float(counter.get_total_flops())
        net.zero_grad(set_to_none=True)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(a.warmup):
            train_step(net, fam, opt, x0, precision, clip)
        t0 = time.perf_counter()
        for _ in range(a.steps):
            train_step(net, fam, opt, x0, precision, clip)
        s = (time.perf_counter() - t0) / a.steps
        row = {"precision": precision, "batch": a.train_batch, "steps": a.steps, "step_ms": round(1e3 * s, 1),
               "images_per_s": round(a.train_batch / s, 2), "gflop_per_step": round(flops / 1e9, 3),
               "achieved_gflops": round(flops / s / 1e9, 2), "peak_gflops": round(peak / 1e9, 2),
               "mfu": round(flops / s / peak, 4),
               "params": sum(p.numel() for p in net.parameters())}
        print(f"  train {precision}: {row['step_ms']} ms/step, {row['images_per_s']} images/s, "
              f"{row['gflop_per_step']} GFLOP/step, MFU {row['mfu']:.1%}", flush=True)
        rows.append(row)
    return {"recipe": RECIPE, "image_shape": list(a.shape), "clip_grad_norm": clip, "optimizer": "adam 1e-3",
            "model_args": args, "rows": rows}


def gan_reference(results: Path) -> dict[str, Any]:
    """The cGAN and DCGAN FIDs of ``results/gan.json``, else those of gan.md written here."""
    gans = read_json(results / "gan.json", {}).get("gans", {})
    found = {k: gans[k]["fid"] for k in GAN_FID_FALLBACK if k in gans and "fid" in gans[k]}
    if len(found) == len(GAN_FID_FALLBACK):
        return {"fid": found, "source": _shown(results / "gan.json")}
    return {"fid": dict(GAN_FID_FALLBACK), "source": "constants of benchmarks/results/gan.md (gan.json missing)"}


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (no machine paths in results)."""
    try:
        return str(path.resolve().relative_to(RESULTS_DIR.parents[1]))
    except ValueError:
        return str(path)


def bench_quality(a: argparse.Namespace) -> dict[str, Any]:
    from profond.cli.evaluate import sample_batches
    from profond.methods.capabilities import SamplerRequest
    from profond.metrics.generative import evaluate_samples
    from profond.train import load_run

    rows = []
    for run_dir in a.fid:
        method, _ = load_run(run_dir, device="cpu")
        real, _ = method.test_images()
        T = method.schedule.T
        for sampler, steps in (("ddpm", T), ("ddim", 50)):
            used = method.use_sampler(SamplerRequest(sampler=sampler, steps=steps, eta=0.0 if sampler == "ddim"
                                                     else None))
            t0 = time.perf_counter()
            fake = sample_batches(method, a.n, seed=a.seed, batch_size=a.fid_batch)
            gen = evaluate_samples(fake, real, features="fmnist", n_fake=a.n)
            row = {"run": str(run_dir), "sampler": f"{sampler.upper()}-{steps}", "steps": steps,
                   "nfe_per_image": used["nfe_per_image"], "guidance": used["guidance"], "n": a.n,
                   "seed": a.seed, "fid": round(gen["fid"], 2), "kid_mean": round(gen["kid_mean"], 4),
                   "precision": round(gen["precision"], 3), "recall": round(gen["recall"], 3),
                   "wall_s": round(time.perf_counter() - t0, 1)}
            print(f"  {run_dir} {row['sampler']}: FID {row['fid']} ({row['wall_s']} s)", flush=True)
            rows.append(row)
    return {"measured": True, "features": "fmnist", "rows": rows, "gan": gan_reference(a.gan_results)}


def targets(data: dict[str, Any]) -> dict[str, Any]:
    q = data.get("quality") or {}
    if not q.get("measured"):
        return {"ddim50_fid_within_1.1x_ddpm": None, "best_diffusion_fid_le_best_gan_fid": None}
    by_run: dict[str, dict[str, float]] = {}
    for r in q["rows"]:
        by_run.setdefault(r["run"], {})[r["sampler"].split("-")[0]] = r["fid"]
    within = {run: bool(f["DDIM"] <= DDIM_FID_FACTOR * f["DDPM"]) for run, f in by_run.items()
              if "DDIM" in f and "DDPM" in f}
    gan = min(q["gan"]["fid"], key=q["gan"]["fid"].get)
    best = min(q["rows"], key=lambda r: r["fid"])
    return {"ddim50_fid_within_1.1x_ddpm": within or None,
            "best_diffusion_fid_le_best_gan_fid": bool(best["fid"] <= q["gan"]["fid"][gan]),
            "best_diffusion": f"{best['run']} {best['sampler']}", "best_diffusion_fid": best["fid"],
            "best_gan": gan, "best_gan_fid": q["gan"]["fid"][gan]}


def write_md(data: dict[str, Any], path: Path) -> None:
    parts = ["# Diffusion (benchmarks/diffusion.py)\n"]
    if s := data.get("sampling"):
        parts.append(
            f"## Sampling throughput, batch {s['batch']}, images {'x'.join(map(str, s['image_shape']))}\n\n"
            f"Random-weight U-Nets ({', '.join(f'{r}: {v}' for r, v in s['model_args'].items())}); time per "
            f"network call from {s['calls_per_timing']}-step runs of each sampler (median of {s['repeats']}); "
            "images/s = batch / (time per call × calls per image). With guidance a call is one pass on 2x the "
            "batch (label and ∅), counted as 2 NFE per image.\n\n"
            + md_table(["recipe", "sampler", "guidance w", "NFE / image", "net batch", "ms / call", "images/s",
                        "s / image", "vs DDPM"],
                       [[r["recipe"], r["sampler"], r["guidance"] or "-", r["nfe_per_image"], r["net_batch_per_call"],
                         r["ms_per_call"], r["images_per_s"], r["s_per_image"], f"{r['speedup_vs_ddpm']}x"]
                        for r in s["rows"]])
            + f"\n\n{provenance(s)}\n")
    if tr := data.get("train"):
        parts.append(
            f"## Training step ({tr['recipe']} U-Net, {tr['optimizer']}, clip {tr['clip_grad_norm']}, ε-loss "
            "eq. 10.16)\n\n"
            + md_table(["precision", "batch", "ms/step", "images/s", "GFLOP/step", "achieved GFLOP/s",
                        "peak GFLOP/s", "MFU"],
                       [[r["precision"], r["batch"], r["step_ms"], r["images_per_s"], r["gflop_per_step"],
                         r["achieved_gflops"], r["peak_gflops"], f"{r['mfu']:.1%}"] for r in tr["rows"]])
            + f"\n\n{provenance(tr)}\n")
    q = data.get("quality") or {}
    if q.get("measured"):
        g = q["gan"]
        parts.append(
            "## Quality: DDPM (all T steps) vs DDIM-50, same model and seeds\n\n"
            + md_table(["run", "sampler", "NFE / image", "guidance", "n", "FID", "KID", "precision", "recall",
                        "wall s"],
                       [[r["run"], r["sampler"], r["nfe_per_image"], r["guidance"], r["n"], r["fid"], r["kid_mean"],
                         r["precision"], r["recall"], r["wall_s"]] for r in q["rows"]])
            + f"\n\nGAN reference FIDs ({g['source']}): "
            + ", ".join(f"{k} {v}" for k, v in g["fid"].items())
            + ". FID is biased up at small n: compare at the same number of samples (gan.py uses 10,000).\n\n"
            + f"{provenance(q)}\n")
    else:
        parts.append("## Quality\n\nNot measured (run with `--fid RUN_DIR[,RUN_DIR...]` on trained runs).\n")
    parts.append(f"Targets: {targets(data)}\n")
    path.write_text("\n".join(parts))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="base-8 net (4 groups) on 8x8, 2-3 calls per sampler, no FID")
    ap.add_argument("--only", default="sampling,train,quality", help="comma-separated parts: " + ",".join(PARTS))
    ap.add_argument("--batch", type=int, default=100, help="images per sampler call")
    ap.add_argument("--calls", type=int, default=3, help="sampler steps per timing (Heun: 2S - 1 calls)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--matmul-n", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 2; --quick: 1)")
    ap.add_argument("--bf16", action="store_true", help="time bf16 even without native bf16")
    ap.add_argument("--fid", default=None, metavar="RUN_DIR[,RUN_DIR...]", help="trained runs for the quality part")
    ap.add_argument("--n", type=int, default=2000, help="samples per FID")
    ap.add_argument("--seed", type=int, default=0, help="seed of the FID samples (the same for both samplers)")
    ap.add_argument("--fid-batch", type=int, default=500)
    ap.add_argument("--gan-results", type=Path, default=RESULTS_DIR, help="folder holding gan.json")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of diffusion.json / diffusion.md")
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    if unknown := only - set(PARTS):
        ap.error(f"--only {','.join(sorted(unknown))}: use parts of {','.join(PARTS)}")
    a.shape = (1, 28, 28)
    if a.quick:
        a.shape, a.batch, a.calls, a.repeats, a.train_batch, a.steps, a.warmup, a.matmul_n = \
            (1, 8, 8), 8, 2, 1, 16, 2, 1, 256
        a.fid = None
    a.threads = a.threads or (1 if a.quick else 2)  # quick runs share the CPU with others (tests)
    a.fid = [Path(p) for p in a.fid.split(",") if p] if a.fid else None
    for run in a.fid or []:
        if not (run / "config.yaml").is_file():  # say so before minutes of timing
            ap.error(f"--fid {run}: not a run folder (no config.yaml); pass folders made by `profond train`")
    torch.set_num_threads(a.threads)
    json_path, md_path = a.out / "diffusion.json", a.out / "diffusion.md"
    command = "python benchmarks/diffusion.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = read_json(json_path, {})
    for part, fn in (("sampling", bench_sampling), ("train", bench_train), ("quality", bench_quality)):
        if part not in only:
            continue
        if part == "quality" and not a.fid:
            if not (data.get("quality") or {}).get("measured"):  # keep an earlier measurement
                data["quality"] = {"measured": False, "note": "not measured (no --fid RUN_DIR)"}
            continue
        load = load_note(os.getloadavg())
        print(f"{part} ({load})", flush=True)
        entry = fn(a)
        entry.update(command=command, quick=a.quick, threads=a.threads, load=load, machine=machine())
        data = read_json(json_path, {})  # re-read: parallel invocations merge per part
        data[part] = entry
        data["targets"] = targets(data)
        write_json(json_path, data)
    data.setdefault("quality", {"measured": False, "note": "not measured (no --fid RUN_DIR)"})
    data["targets"] = targets(data)
    write_json(json_path, data)
    write_md(data, md_path)
    print(f"-> {json_path}, {md_path}")
    return data


if __name__ == "__main__":
    main()
