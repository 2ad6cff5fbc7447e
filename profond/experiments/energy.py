"""FLOPs and energy of a Transformer forward pass (issue 20, course §12.8, exercise 12.2):
``transformer-flops``.

Exercise 12.2 asks for the FLOPs of one forward pass of a Transformer with L = 32 layers,
d = 4096, h = 32 heads and a sequence of n = 2048 tokens, and its energy on an A100.

**The count** (one multiply-add = 2 FLOPs; matrix products only, as the counter below):
per layer, the Q, K, V and output projections cost ``4 · 2nd²``; the scores ``QKᵀ`` and the
weighted sum ``AV`` cost ``2 · 2n²d`` (dense, every head together: h splits d, it does not
change the count); the MLP of width ``4d`` costs ``2 · 2n·d·4d = 16nd²``. So

    F_layer = 24 n d² + 4 n² d,        F = L · F_layer  (+ 2 n d V for the output head, vocabulary V)

which for the exercise's sizes is ``32 · (24·2048·4096² + 4·2048²·4096) ≈ 2.86 · 10¹³`` FLOPs
without the head. The formula is checked against the operator-level count of
:func:`profond.train.cost.count_flops` (the formulas of :mod:`torch.utils.flop_counter`)
on profond's ``gpt`` (GPT-2 layout, MLP 4d, tied head) for several small (L, d, n, V): the two
must be equal, not close. A training step costs about three forward passes (backward = two).

**The energy** on an A100 (SXM, 400 W board power; 312 TFLOP/s dense bf16/fp16 tensor-core
peak, the figure of NVIDIA's data sheet): ``t = F / (peak · MFU)`` and ``E = P · t``, for the
model-FLOPs utilisation (MFU) a real run reaches (0.3-0.5 for large-model training is the
range published for Megatron / PaLM; 1 is the unreachable bound), at the board power (an upper
bound for the GPU alone; the host and cooling add the data centre's PUE, e.g. 1.1-1.5). The
CO₂ follows at a grid intensity (``GRIDS``). The table says these are assumptions, not
measurements.

**Measured here**: the same forward pass at small sizes on this machine's CPU, timed, with its
achieved FLOP/s and the energy the run's power model gives (:mod:`profond.train.cost`).

Budgets: ``--quick`` checks the formula on 3 small configurations and times one; full on 6 and
times three. Pure arithmetic plus seconds of CPU time in both.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..registry import EXPERIMENTS, MODELS  # noqa: E402
from ..train.cost import CPU_WATTS_PER_THREAD, JOULES_PER_KWH, count_flops  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, verdict  # noqa: E402

#: exercise 12.2's Transformer
EXERCISE = {"L": 32, "d": 4096, "h": 32, "n": 2048}
#: NVIDIA A100 SXM: dense bf16/fp16 tensor-core peak (FLOP/s) and board power (W), data sheet
A100_PEAK, A100_WATTS = 312e12, 400.0
MFUS = (0.3, 0.5, 1.0)
#: gCO₂e/kWh: world average (the runs' default) and France's low-carbon grid
GRIDS = {"world": 475.0, "france": 50.0}
#: small (L, d, heads, n, V) the formula is checked on
CHECKS_QUICK = [(1, 32, 2, 16, 50), (2, 64, 4, 32, 64), (3, 48, 3, 24, 100)]
CHECKS_FULL = [*CHECKS_QUICK, (4, 128, 4, 64, 128), (6, 96, 6, 128, 256), (2, 256, 8, 256, 512)]


def forward_flops(L: int, d: int, n: int, vocab: int = 0) -> int:
    """Matrix-multiply FLOPs of one forward pass (see the module docstring)."""
    per_layer = 8 * n * d * d + 4 * n * n * d + 16 * n * d * d  # projections, attention, MLP (4d)
    return L * per_layer + 2 * n * d * vocab  # + the output head


def counted_forward_flops(L: int, d: int, heads: int, n: int, vocab: int) -> tuple[int, float]:
    """The operator-level FLOP count (:func:`~profond.train.cost.count_flops`) of profond's ``gpt`` forward pass on one sequence of ``n``
    tokens, and the best of 3 timings of that pass (seconds)."""
    net = MODELS.build("gpt", vocab_size=vocab, d_model=d, num_heads=heads, num_layers=L, max_len=n).eval()
    idx = torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, flops = count_flops(lambda: net(idx))
        net(idx)  # warm-up
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            net(idx)
            best = min(best, time.perf_counter() - t0)
    return flops, best


def a100_rows(flops: float) -> list[dict[str, float]]:
    """Time, energy and CO₂ of ``flops`` on an A100 at each assumed MFU."""
    rows = []
    for mfu in MFUS:
        t = flops / (A100_PEAK * mfu)
        joules = A100_WATTS * t
        rows.append({"mfu": mfu, "seconds": t, "energy_j": joules, "energy_wh": joules / 3600,
                     **{f"co2_g_{k}": joules / JOULES_PER_KWH * g for k, g in GRIDS.items()}})
    return rows


@EXPERIMENTS.register("transformer-flops", help="FLOPs of a Transformer forward pass, checked against "
                                                "the operator count, and its A100 energy (exercise 12.2; issue 20)")
def transformer_flops(out: Path, quick: bool) -> ExperimentResult:
    checks = CHECKS_QUICK if quick else CHECKS_FULL
    rows = []
    with num_threads(1):
        for L, d, h, n, V in checks:
            counted, secs = counted_forward_flops(L, d, h, n, V)
            formula = forward_flops(L, d, n, V)
            rows.append({"L": L, "d": d, "heads": h, "n": n, "vocab": V, "formula_flops": formula,
                         "counted_flops": counted, "equal": counted == formula, "cpu_forward_s": secs,
                         "cpu_gflops_per_s": counted / secs / 1e9,
                         "cpu_energy_j_power_model": CPU_WATTS_PER_THREAD * secs})
    checks_t = pd.DataFrame(rows)
    checks_t.to_csv(out / "formula_checks.csv", index=False)

    ex = EXERCISE
    total = forward_flops(ex["L"], ex["d"], ex["n"])
    attention_share = ex["L"] * 4 * ex["n"] ** 2 * ex["d"] / total
    a100 = pd.DataFrame(a100_rows(total))
    a100.insert(0, "forward_flops", total)
    table = a100.round({"seconds": 4, "energy_j": 2, "energy_wh": 4, "co2_g_world": 4, "co2_g_france": 5})

    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(checks_t["formula_flops"], checks_t["counted_flops"], "o", label="profond gpt (operator count)")
    lim = [checks_t["formula_flops"].min() / 2, checks_t["formula_flops"].max() * 2]
    ax.loglog(lim, lim, "k--", lw=0.8, label="formula 24nd² + 4n²d per layer (+ 2ndV)")
    ax.set_xlabel("formula FLOPs")
    ax.set_ylabel("counted FLOPs")
    ax.set_title("Forward-pass FLOPs (exercise 12.2)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    figs = [save_figure(fig, out / "flops_check.png")]

    exact = bool(checks_t["equal"].all())
    claims = {"the formula equals the operator-level count on profond's gpt": verdict(exact)}
    mid = a100.set_index("mfu").loc[0.5]
    notes = "\n".join([
        f"Exercise 12.2: L={ex['L']}, d={ex['d']}, h={ex['h']}, n={ex['n']}: "
        f"F = L·(24nd² + 4n²d) = {total:.4g} FLOPs per forward pass (attention scores {attention_share:.1%} of it; "
        "the output head adds 2ndV, e.g. V = 50,257 adds "
        f"{2 * ex['n'] * ex['d'] * 50257:.3g}).",
        f"- formula vs the operator-level count (torch.utils.flop_counter's formulas) on {len(checks)} small gpt configurations: **{claims[next(iter(claims))]}** "
        "(formula_checks.csv)",
        f"- A100 (assumed: {A100_PEAK / 1e12:.0f} TFLOP/s peak, {A100_WATTS:.0f} W board power): at MFU 0.5, "
        f"{mid['seconds'] * 1e3:.0f} ms and {mid['energy_j']:.0f} J ({mid['energy_wh']:.3f} Wh) per forward pass; "
        f"{mid['co2_g_world']:.3g} g CO₂e at {GRIDS['world']:.0f} g/kWh. These are assumptions (MFU, power, no PUE), "
        "not measurements.",
        f"- this CPU: {checks_t['cpu_gflops_per_s'].max():.1f} GFLOP/s at best on the small forward passes (1 thread).",
    ])
    return ExperimentResult(table=table, figures=figs, notes=notes, extra={"claims": claims})


__all__ = ["transformer_flops", "forward_flops", "a100_rows", "EXERCISE"]
