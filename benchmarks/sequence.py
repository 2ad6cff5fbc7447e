"""Sequence-model benchmarks (issue 6, course chapters 5-6).

Four parts, each its own targets, merged into ``benchmarks/results/sequence.{json,md}``:

* ``speed`` -- our LSTM/GRU layer (:class:`profond.nn.rnn.Recurrent`, the course's
  equations (5.9)-(5.14) / (5.16)-(5.19) written out step by step) against ``nn.LSTM`` /
  ``nn.GRU`` (fused oneDNN kernels on CPU, cuDNN on GPU) on the same weights
  (``copy_from_torch``), forward + backward, timed **interleaved in one run** (A, B, A, B...)
  so that machine load hits both alike; reported as the ratio ours / torch (median over
  ``--repeats``). No target: the ratio is what a from-scratch loop costs.
* ``translate`` -- the recipes ``numbers-fr-attention`` and ``numbers-fr-noattn``
  (French number words -> digits, §6.1-6.2, exercise 6.1) trained through the one loop; exact
  match on the 2,000 held-out numbers, overall and by input length (words).
  Target: attention >= 99% exact match.
* ``charlm`` -- the recipe ``fortune-char-lstm``: test bits per character against the
  unigram and bigram baselines (fitted on the training text), with its training time.
  Target: below the bigram baseline.
* ``copy`` -- the copy task of exercise 5.4 at delay T = 100 (``--delay``) for the vanilla
  RNN and the LSTM, trained by :func:`profond.experiments.rnn_memory.train_copy` with the
  experiment's full-mode settings; scores on 500 fresh sequences at exactly that delay.
  Target: the LSTM solves it (per-symbol accuracy >= 0.95) where the RNN fails (< 0.5).

    python benchmarks/sequence.py                           # everything
    python benchmarks/sequence.py --only speed --repeats 20
    python benchmarks/sequence.py --only translate charlm --threads 1

Every training run is fp32 on the CPU, seed 0, ``--threads`` torch threads (2 by default;
1 when lanes share the 2 cores -- the results record the load average).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS_DIR, add_lane_args, load_note, machine, md_table, record, train_recipe

JSON_PATH = RESULTS_DIR / "sequence.json"
MD_PATH = RESULTS_DIR / "sequence.md"
THREADS = 2


def detailed_test(run_dir: Path) -> dict[str, Any]:
    from profond.train.loop import load_run

    method, trainer = load_run(run_dir, checkpoint="best", device="cpu")
    return dict(trainer.evaluate(method.test_data(), detailed=True))


# ----------------------------------------------------------------------------------------
# speed


def _fwd_bwd(layer: torch.nn.Module, x: torch.Tensor) -> None:
    out = layer(x)[0]
    out.float().pow(2).mean().backward()


def bench_speed(repeats: int, batch: int = 32, steps: int = 100, d_x: int = 64, d_h: int = 128) -> list[dict[str, Any]]:
    """Median seconds per forward+backward of ours vs torch, interleaved, per kind."""
    from profond.nn.rnn import Recurrent, copy_from_torch

    rows = []
    for kind, cls in (("lstm", torch.nn.LSTM), ("gru", torch.nn.GRU)):
        torch.manual_seed(0)
        ref = cls(d_x, d_h, batch_first=True)
        ours = Recurrent(kind, d_x, d_h, batch_first=True)
        copy_from_torch(ours, ref)
        x = torch.randn(batch, steps, d_x)
        with torch.no_grad():
            gap = float((ours(x)[0] - ref(x)[0]).abs().max())
        for layer in (ref, ours):  # warm-up
            _fwd_bwd(layer, x)
        times: dict[str, list[float]] = {"torch": [], "ours": []}
        for _ in range(repeats):
            for name, layer in (("torch", ref), ("ours", ours)):
                layer.zero_grad(set_to_none=True)
                t0 = time.perf_counter()
                _fwd_bwd(layer, x)
                times[name].append(time.perf_counter() - t0)
        t_ref, t_ours = statistics.median(times["torch"]), statistics.median(times["ours"])
        rows.append({"kind": kind, "batch": batch, "T": steps, "d_x": d_x, "d_h": d_h, "repeats": repeats,
                     "torch_ms": round(1e3 * t_ref, 2), "ours_ms": round(1e3 * t_ours, 2),
                     "ratio_ours_over_torch": round(t_ours / t_ref, 2), "max_output_gap": gap})
        print(f"  {kind}: torch {1e3 * t_ref:.1f} ms, ours {1e3 * t_ours:.1f} ms, ratio {t_ours / t_ref:.2f}",
              flush=True)
    return rows


# ----------------------------------------------------------------------------------------
# translate / charlm


def bench_translate(out: Path) -> list[dict[str, Any]]:
    rows = []
    for recipe in ("numbers-fr-attention", "numbers-fr-noattn"):
        res, wall = train_recipe(out, recipe, threads=THREADS)
        test = detailed_test(res.run_dir)
        rows.append({"recipe": recipe, "test_exact_match": round(float(test["exact_match"]), 4),
                     "exact_match_by_length": {k: round(float(v), 4)
                                               for k, v in test.get("exact_match_by_length", {}).items()},
                     "count_by_length": test.get("count_by_length", {}),
                     "train_s": round(res.summary["train_time_s"], 1), "wall_s": round(wall, 1),
                     "status": res.summary.get("status")})
        print(f"  {recipe}: exact match {rows[-1]['test_exact_match']:.4f} ({wall:.0f} s)", flush=True)
    return rows


def bench_charlm(out: Path) -> dict[str, Any]:
    res, wall = train_recipe(out, "fortune-char-lstm", threads=THREADS)
    f = res.summary["final"]
    row = {"recipe": "fortune-char-lstm", "test_bpc": round(float(f["test_bpc"]), 4),
           "unigram_bpc": round(float(f["test_unigram_bpc"]), 4), "bigram_bpc": round(float(f["test_bigram_bpc"]), 4),
           "train_s": round(res.summary["train_time_s"], 1), "wall_s": round(wall, 1),
           "status": res.summary.get("status")}
    print(f"  char-LM: {row['test_bpc']} bpc vs bigram {row['bigram_bpc']} ({wall:.0f} s)", flush=True)
    return row


# ----------------------------------------------------------------------------------------
# copy


def bench_copy(delay: int) -> list[dict[str, Any]]:
    from profond.experiments.rnn_memory import copy_benchmark

    rows = copy_benchmark(delay=delay, kinds=("rnn", "lstm"))
    for r in rows:
        print(f"  copy T={delay} {r['model']}: symbol acc {r['symbol_accuracy']:.3f}, exact "
              f"{r['exact_copy_rate']:.3f} ({r['train_s']:.0f} s)", flush=True)
    return rows


# ----------------------------------------------------------------------------------------
# targets and tables


def targets(data: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    tr = {r["recipe"]: r for r in data.get("translate", {}).get("rows", [])}
    if "numbers-fr-attention" in tr:
        t["translation_attention_exact_match_>=_0.99"] = tr["numbers-fr-attention"]["test_exact_match"] >= 0.99
    if "charlm" in data:
        c = data["charlm"]["row"]
        t["charlm_bpc_below_bigram"] = c["test_bpc"] < c["bigram_bpc"]
    cp = {r["model"]: r for r in data.get("copy", {}).get("rows", [])}
    if "lstm" in cp and "rnn" in cp:
        t["copy_lstm_solves_(>=0.95)_rnn_fails_(<0.5)"] = (cp["lstm"]["symbol_accuracy"] >= 0.95
                                                           and cp["rnn"]["symbol_accuracy"] < 0.5)
    return t


def write_md(data: dict[str, Any]) -> None:
    lines = ["# Sequence-model benchmarks (issue 6)", "",
             "Written by `benchmarks/sequence.py`; every part records its command and the load average.", ""]
    if "speed" in data:
        s = data["speed"]
        lines += ["## Our recurrent layers vs torch (forward + backward, CPU)", "", f"`{s['command']}` ({s['load']}, "
                  f"{s['threads']} threads)", "",
                  md_table(["kind", "B x T x d_x -> d_h", "nn.* ms", "ours ms", "ours / torch", "max output gap"],
                           [[r["kind"], f"{r['batch']} x {r['T']} x {r['d_x']} -> {r['d_h']}", r["torch_ms"],
                             r["ours_ms"], r["ratio_ours_over_torch"], f"{r['max_output_gap']:.1e}"]
                            for r in s["rows"]]), ""]
    if "translate" in data:
        s = data["translate"]
        lengths = sorted({k for r in s["rows"] for k in r["exact_match_by_length"]}, key=int)
        lines += ["## French number words -> digits (held-out 2,000 numbers)", "", f"`{s['command']}` ({s['load']})", "",
                  md_table(["recipe", "exact match", *[f"{k} words" for k in lengths], "train s"],
                           [[r["recipe"], r["test_exact_match"],
                             *[r["exact_match_by_length"].get(k, "") for k in lengths], r["train_s"]]
                            for r in s["rows"]]),
                  "", "Held-out numbers per input length: " + ", ".join(
                      f"{k} words: {n}" for k, n in s["rows"][0]["count_by_length"].items()), ""]
    if "charlm" in data:
        s, r = data["charlm"], data["charlm"]["row"]
        lines += ["## Char-level LSTM language model (fortunes)", "", f"`{s['command']}` ({s['load']})", "",
                  md_table(["recipe", "test bpc", "unigram bpc", "bigram bpc", "train s"],
                           [[r["recipe"], r["test_bpc"], r["unigram_bpc"], r["bigram_bpc"], r["train_s"]]]), ""]
    if "copy" in data:
        s = data["copy"]
        lines += [f"## Copy task (exercise 5.4), delay T = {s['delay']}", "", f"`{s['command']}` ({s['load']})", "",
                  md_table(["model", "symbol accuracy", "exact copy", "chance / symbol", "steps", "train s"],
                           [[r["model"], round(r["symbol_accuracy"], 4), round(r["exact_copy_rate"], 4),
                             round(r.get("chance_symbol", float("nan")), 3), r["steps"], r["train_s"]]
                            for r in s["rows"]]), ""]
    lines += [f"Targets: {targets(data)}", ""]
    MD_PATH.write_text("\n".join(lines))


def main() -> None:
    parts = ["speed", "translate", "charlm", "copy"]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=parts, choices=parts)
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats of the speed part")
    ap.add_argument("--delay", type=int, default=100, help="copy-task delay T")
    add_lane_args(ap)
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    torch.set_num_threads(a.threads)
    cmd = "python benchmarks/sequence.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="profond-seq-") as tmp:
        out = a.keep or Path(tmp)
        for part in a.only:
            load = load_note(os.getloadavg())
            print(f"{part} ({load})", flush=True)
            entry: dict[str, Any] = {"command": cmd, "load": load, "threads": a.threads, "machine": machine()}
            if part == "speed":
                entry["rows"] = bench_speed(a.repeats)
            elif part == "translate":
                entry["rows"] = bench_translate(out)
            elif part == "charlm":
                entry["row"] = bench_charlm(out)
            else:
                entry.update(delay=a.delay, rows=bench_copy(a.delay))
            write_md(record(JSON_PATH, part, entry, targets))
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main()
