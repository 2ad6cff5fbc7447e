"""Attention implementations side by side (issue 15, course §6.7, §6.12, exercise 6.5).

For n = 128 ... 16,384 (``--max-n``), one head, batch 1, d = 64, non-causal:

* ``naive``  -- softmax(QKᵀ/√d)V with the n x n matrix (``profond.nn.attention.scaled_dot_product``,
  eq. 6.9; plain torch if that is missing);
* ``sdpa``   -- ``torch.nn.functional.scaled_dot_product_attention`` (the reference);
* ``tiled``  -- :func:`profond.nn.attention.tiled.tiled_attention`, exact, online softmax by blocks;
* ``linear`` -- :func:`profond.nn.attention.linear.linear_attention`, φ = ELU + 1 (eq. 6.21), O(n·d²);
* ``local``  -- :func:`profond.nn.attention.local.local_attention`, window ``--window``, O(n·w·d).

Each is timed in forward (no autograd) and forward + backward, **interleaved in one run**
(every repeat runs all impls in turn, so machine load hits them alike; median over the
repeats); ratios are to SDPA. Peak memory is measured in a fresh subprocess per (impl, mode,
n) for n >= ``--memory-min-n``: growth of the peak RSS (VmHWM, reset after setup; ``ru_maxrss``
where that is impossible) over the RSS after imports, a small warm-up and the inputs.
Errors: tiled vs SDPA (output, and gradients in forward + backward), local vs SDPA with
``attn_mask=local_mask(...)``, linear vs its explicit O(n²) form (n <= 4,096).
fp32 always, bf16 too where the CPU has it (``cpu_has_native_bf16``; ``--bf16`` forces it).

    python benchmarks/attention.py                    # n up to 16,384
    python benchmarks/attention.py --quick            # n <= 1,024, 3 repeats
    python benchmarks/attention.py --max-n 2048 --no-memory

Targets: tiled exact to 1e-5 (fp32); tiled peak memory <= 1/8 of naive at n >= 8,192;
tiled time <= 2 x SDPA at n = 4,096 (fp32).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import RESULTS_DIR, load_note, machine, md_table, record

JSON_PATH = RESULTS_DIR / "attention.json"
MD_PATH = RESULTS_DIR / "attention.md"
ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("naive", "sdpa", "tiled", "linear", "local")
MODES = ("fwd", "fwdbwd")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
D_HEAD = 64
ERR_MAX_N = 4096  # the O(n²) references of linear / local beyond this cost more than the benchmark


def _naive():
    try:
        from profond.nn.attention.core import scaled_dot_product

        return scaled_dot_product
    except ImportError:  # before the package exists: the same formula in plain torch
        return lambda q, k, v: torch.softmax((q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5, dim=-1) @ v  # (6.9)


def make_fn(impl: str, window: int, block: int):
    """The attention function ``(q, k, v) -> out`` of one impl."""
    if impl == "naive":
        return _naive()
    if impl == "sdpa":
        return F.scaled_dot_product_attention
    if impl == "tiled":
        from profond.nn.attention.tiled import tiled_attention

        return lambda q, k, v: tiled_attention(q, k, v, block_size=block)
    if impl == "linear":
        from profond.nn.attention.linear import linear_attention

        return linear_attention
    if impl == "local":
        from profond.nn.attention.local import local_attention

        return lambda q, k, v: local_attention(q, k, v, window)
    raise ValueError(impl)


def inputs(n: int, dtype: torch.dtype, grad: bool, heads: int = 1, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, heads, n, D_HEAD, generator=g).to(dtype).requires_grad_(grad) for _ in range(3)]


def run_once(fn, qkv: list[torch.Tensor], mode: str) -> torch.Tensor:
    if mode == "fwd":
        with torch.no_grad():
            return fn(*qkv)
    for t in qkv:
        t.grad = None
    out = fn(*qkv)
    out.float().sum().backward()
    return out


def naive_fits(n: int, dtype: torch.dtype) -> bool:
    """The naive forward + backward holds about 5 n x n matrices: skip it where RAM is short."""
    need = 5 * n * n * torch.finfo(dtype).bits // 8
    avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return need < 0.6 * avail


# ----------------------------------------------------------------------------------------
# peak memory (one subprocess per measure)


def _status_kib(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def child(impl: str, mode: str, n: int, dtype_name: str, window: int, block: int, threads: int) -> None:
    """Print the peak RSS growth (MiB) of one run, over the RSS after imports, warm-up, inputs.

    ``ru_maxrss`` alone would start at the *parent's* RSS (Linux carries the high-water mark
    over exec), so the peak is reset first (``/proc/self/clear_refs``) and read as VmHWM."""
    torch.set_num_threads(threads)
    fn = make_fn(impl, window, block)
    dtype = DTYPES[dtype_name]
    run_once(fn, inputs(min(n, 256), dtype, mode == "fwdbwd"), mode)  # warm-up: lazy initialisations
    qkv = inputs(n, dtype, mode == "fwdbwd")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # high-water mark := current RSS
        base, how = _status_kib("VmRSS"), "VmHWM"
        peak = lambda: _status_kib("VmHWM")  # noqa: E731
    except OSError:
        base, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    run_once(fn, qkv, mode)
    print(json.dumps({"peak_mib": round((peak() - base) / 1024, 1), "how": how}))  # KiB -> MiB


def peak_mib(impl: str, mode: str, n: int, dtype_name: str, a: argparse.Namespace) -> float | None:
    cmd = [sys.executable, __file__, "--child", impl, mode, str(n), dtype_name, "--window", str(a.window),
           "--block", str(a.block), "--threads", str(a.threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900, check=True)
        return float(json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as e:
        print(f"    peak memory of {impl} {mode} n={n} failed: {e}", flush=True)
        return None


# ----------------------------------------------------------------------------------------
# time and errors


def max_errors(n: int, dtype: torch.dtype, a: argparse.Namespace) -> dict[str, float]:
    """Worst absolute gaps: tiled vs SDPA (output and gradients), local vs masked SDPA, linear vs
    its explicit form (the last two only up to ERR_MAX_N)."""
    from profond.nn.attention.linear import linear_attention, linear_attention_explicit
    from profond.nn.attention.local import local_attention, local_mask
    from profond.nn.attention.tiled import tiled_attention

    def gaps(f, ref) -> float:
        qkv = inputs(n, dtype, True, seed=1)
        out = f(*qkv)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
        got = [out.detach(), *torch.autograd.grad(out, qkv, g)]
        rout = ref(*qkv)
        want = [rout.detach(), *torch.autograd.grad(rout, qkv, g)]
        return max(float((x.float() - y.float()).abs().max()) for x, y in zip(got, want, strict=True))

    err = {"tiled_vs_sdpa": gaps(lambda q, k, v: tiled_attention(q, k, v, block_size=a.block),
                                 F.scaled_dot_product_attention)}
    if n <= ERR_MAX_N:
        mask = local_mask(n, n, a.window)
        err["local_vs_masked_sdpa"] = gaps(lambda q, k, v: local_attention(q, k, v, a.window),
                                           lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        err["linear_vs_explicit"] = gaps(linear_attention, linear_attention_explicit)
    return {key: float(f"{v:.3g}") for key, v in err.items()}


def bench_n(n: int, dtype_name: str, a: argparse.Namespace) -> list[dict[str, Any]]:
    dtype = DTYPES[dtype_name]
    impls = [i for i in a.impls if i != "naive" or naive_fits(n, dtype)]
    fns = {i: make_fn(i, a.window, a.block) for i in impls}
    repeats = a.repeats if n <= 2048 else max(2, min(a.repeats, 3))
    rows = []
    for mode in MODES:
        qkv = inputs(n, dtype, mode == "fwdbwd")
        for fn in fns.values():  # warm-up
            run_once(fn, qkv, mode)
        times: dict[str, list[float]] = {i: [] for i in impls}
        for _ in range(repeats):
            for i, fn in fns.items():
                t0 = time.perf_counter()
                run_once(fn, qkv, mode)
                times[i].append(time.perf_counter() - t0)
        med = {i: statistics.median(t) for i, t in times.items()}
        for i in a.impls:
            row: dict[str, Any] = {"n": n, "impl": i, "mode": mode, "repeats": repeats}
            if i not in med:
                row["skipped"] = "naive n x n matrices would not fit in RAM"
            else:
                row["ms"] = round(1e3 * med[i], 3)
                if "sdpa" in med:
                    row["time_over_sdpa"] = round(med[i] / med["sdpa"], 2)
            rows.append(row)
    if a.memory and n >= a.memory_min_n:
        for row in rows:
            if "skipped" not in row:
                row["peak_mib"] = peak_mib(row["impl"], row["mode"], n, dtype_name, a)
        for mode in MODES:
            naive = next((r.get("peak_mib") for r in rows if r["impl"] == "naive" and r["mode"] == mode), None)
            for r in rows:
                if r["mode"] == mode and naive and r.get("peak_mib") is not None:
                    r["peak_over_naive"] = round(r["peak_mib"] / naive, 4)
    err = max_errors(n, dtype, a)
    rows.append({"n": n, "impl": "errors", "mode": "fwdbwd", **err})
    summary = ", ".join(f"{r['impl']} {r['mode']} {r.get('ms', '-')} ms" + (f" {r['peak_mib']} MiB"
                        if r.get("peak_mib") is not None else "") for r in rows if r["impl"] != "errors")
    print(f"  {dtype_name} n={n}: {summary}; errors {err}", flush=True)
    return rows


# ----------------------------------------------------------------------------------------
# targets and tables


def targets(data: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    rows = data.get("fp32", {}).get("rows", [])
    if not rows:
        return t
    errs = [r["tiled_vs_sdpa"] for r in rows if r["impl"] == "errors"]
    t["tiled_exact_to_1e-5_fp32"] = bool(errs) and max(errs) <= 1e-5
    by = {(r["n"], r["impl"], r["mode"]): r for r in rows}
    mem = [(by[k]["peak_mib"], by[(k[0], "naive", k[2])]["peak_mib"]) for k in by
           if k[1] == "tiled" and k[0] >= 8192 and by[k].get("peak_mib") is not None
           and by.get((k[0], "naive", k[2]), {}).get("peak_mib")]
    t["tiled_peak_memory_<=_naive/8_at_n>=8192"] = all(p * 8 <= q for p, q in mem) if mem else "not measured"
    for mode in MODES:
        r = by.get((4096, "tiled", mode), {})
        t[f"tiled_{mode}_time_<=_2x_sdpa_at_n=4096"] = (r["time_over_sdpa"] <= 2.0 if "time_over_sdpa" in r
                                                        else "not measured")
    return t


def write_md(data: dict[str, Any]) -> None:
    lines = ["# Attention implementations (issue 15)", "",
             "Written by `benchmarks/attention.py`: one head, batch 1, d = 64, non-causal; time = median ms "
             "(x SDPA), interleaved in one run; peak = RSS growth in a fresh process (MiB, x naive).", ""]
    for dt in DTYPES:
        if dt not in data:
            continue
        s = data[dt]
        m = s["machine"]
        lines += [f"## {dt}", "", f"`{s['command']}` ({s['load']}, {s['threads']} threads, window {s['window']}, "
                  f"block {s['block']}; {m['cpu']}, torch {m['torch']}, bf16 in hardware: {m['bf16_in_hardware']})", ""]
        rows = s["rows"]
        ns = sorted({r["n"] for r in rows})
        impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
        by = {(r["n"], r["impl"], r["mode"]): r for r in rows}

        def cell(r: dict[str, Any] | None, key: str, ratio: str) -> str:
            if not r or r.get(key) is None:
                return "-" if not r or "skipped" not in r else "skipped"
            return f"{r[key]:g}" + (f" ({r[ratio]:g}x)" if r.get(ratio) is not None else "")

        for mode, title in (("fwd", "forward"), ("fwdbwd", "forward + backward")):
            lines += [f"### {title}: time ms (x SDPA)", "",
                      md_table(["n", *impls], [[n, *[cell(by.get((n, i, mode)), "ms", "time_over_sdpa")
                                                      for i in impls]] for n in ns]), ""]
            if any("peak_mib" in r for r in rows):
                lines += [f"### {title}: peak memory MiB (x naive)", "",
                          md_table(["n", *impls], [[n, *[cell(by.get((n, i, mode)), "peak_mib", "peak_over_naive")
                                                          for i in impls]] for n in ns]), ""]
        errs = [by[(n, "errors", "fwdbwd")] for n in ns if (n, "errors", "fwdbwd") in by]
        keys = ["tiled_vs_sdpa", "local_vs_masked_sdpa", "linear_vs_explicit"]
        lines += ["### max absolute error (output and gradients)", "",
                  md_table(["n", *keys], [[e["n"], *[e.get(k, "-") for k in keys]] for e in errs]), ""]
    lines += [f"Targets: {targets(data)}", ""]
    MD_PATH.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-n", type=int, default=16384)
    ap.add_argument("--min-n", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="n <= 1,024 and 3 repeats")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats (at most 3 beyond n = 2,048)")
    ap.add_argument("--impls", nargs="*", default=list(IMPLS), choices=IMPLS)
    ap.add_argument("--window", type=int, default=128, help="local attention window w")
    ap.add_argument("--block", type=int, default=128, help="tiled attention key block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-min-n", type=int, default=1024,
                    help="measure peak memory from this n on (below, the matrices hide in the allocator's slack)")
    ap.add_argument("--bf16", action="store_true", help="bf16 too, even without bf16 hardware")
    ap.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of attention.{json,md}")
    ap.add_argument("--child", nargs=4, metavar=("IMPL", "MODE", "N", "DTYPE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        impl, mode, n, dt = a.child
        child(impl, mode, int(n), dt, a.window, a.block, a.threads)
        return
    global JSON_PATH, MD_PATH
    JSON_PATH, MD_PATH = a.results / "attention.json", a.results / "attention.md"
    if a.quick:
        a.max_n, a.repeats = min(a.max_n, 1024), min(a.repeats, 3)
    if "sdpa" not in a.impls:
        a.impls = ["sdpa", *a.impls]  # the reference of every ratio
    from profond.base.device import cpu_has_native_bf16

    dtypes = ["fp32"] + (["bf16"] if a.bf16 or cpu_has_native_bf16() else [])
    if "bf16" not in dtypes:
        print("bf16 skipped: this CPU has no native bf16 (pass --bf16 to force it)", flush=True)
    ns = [n for n in (2 ** p for p in range(7, 15)) if a.min_n <= n <= a.max_n]
    cmd = "python benchmarks/attention.py " + " ".join(sys.argv[1:])
    for dt in dtypes:
        load = load_note(os.getloadavg())
        print(f"{dt} ({load})", flush=True)
        entry: dict[str, Any] = {"command": cmd, "load": load, "threads": a.threads, "machine": machine(),
                                 "d_head": D_HEAD, "heads": 1, "batch": 1, "causal": False, "window": a.window,
                                 "block": a.block, "rows": []}
        t0 = time.perf_counter()
        for n in ns:
            entry["rows"] += bench_n(n, dt, a)
        entry["wall_s"] = round(time.perf_counter() - t0, 1)
        write_md(record(JSON_PATH, dt, entry, targets))
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main()
