"""``transformer-flops`` (exercise 12.2): the forward-pass formula against the operator-level count, the
exercise's number, the A100 arithmetic, and the quick run's outputs."""

from __future__ import annotations

import pandas as pd
import pytest

from profond.experiments.energy import (
    A100_PEAK,
    A100_WATTS,
    a100_rows,
    counted_forward_flops,
    forward_flops,
)

from .conftest import run_quick_experiment


def test_formula_by_hand_and_the_exercise_number():
    # one layer, d = 2, n = 3, no head: 24·3·4 + 4·9·2 = 288 + 72
    assert forward_flops(1, 2, 3) == 360
    assert forward_flops(32, 4096, 2048) == 32 * (24 * 2048 * 4096**2 + 4 * 2048**2 * 4096) == 28_587_302_322_176
    assert forward_flops(1, 2, 3, vocab=5) == 360 + 2 * 3 * 2 * 5


@pytest.mark.parametrize("cfg", [(2, 40, 5, 20, 30), (1, 16, 1, 7, 11)])
def test_formula_equals_the_counter_on_unseen_shapes(cfg, one_thread):
    L, d, h, n, V = cfg
    counted, secs = counted_forward_flops(L, d, h, n, V)
    assert counted == forward_flops(L, d, n, V) and secs > 0


def test_a100_rows_are_power_times_flops_over_throughput():
    rows = {r["mfu"]: r for r in a100_rows(1e15)}
    assert rows[0.5]["seconds"] == pytest.approx(1e15 / (A100_PEAK * 0.5))
    assert rows[1.0]["energy_j"] == pytest.approx(A100_WATTS * 1e15 / A100_PEAK)
    assert rows[0.3]["co2_g_world"] == pytest.approx(rows[0.3]["energy_j"] / 3.6e6 * 475)


def test_quick_run(tmp_path_factory):
    out = run_quick_experiment("transformer-flops", tmp_path_factory)
    checks = pd.read_csv(out / "formula_checks.csv")
    assert checks["equal"].all() and len(checks) == 3
    table = pd.read_csv(out / "table.csv")
    assert (table["forward_flops"] == 28_587_302_322_176).all() and list(table["mfu"]) == [0.3, 0.5, 1.0]
    assert "**holds**" in (out / "table.md").read_text() and (out / "flops_check.png").stat().st_size > 5000
