"""The ``fairness-impossibility`` experiment (exercise 12.1) in quick mode: it writes its table,
figures and claims; its exact population rates, its exact both-criteria solutions and its
tolerance optimiser agree with closed forms, with a brute-force grid and with sampled data
measured by profond.metrics.fairness."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import profond.experiments.fairness as fx  # registers the experiment
from profond.metrics import fairness as fm
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"
DIFF, EQUAL, UNINF, UNEQ = fx.SCENARIOS


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("fairness-impossibility", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "fairness-impossibility" in EXPERIMENTS.names()


def test_table_figures_and_claims(out):
    table = pd.read_csv(out / "table.csv").set_index("scenario")
    assert list(table.index) == [s.name for s in fx.SCENARIOS]
    # with different base rates and equally informative scores, no exact solution inside (0, 1)
    assert np.isnan(table.loc[DIFF.name, "exact_both_J"])
    assert table.loc[DIFF.name, "maxJ_eo_curve_dp_within_tol"] <= fx.TOL / 0.3 + 1e-9
    assert table.loc[EQUAL.name, "maxJ_dp_and_eo"] == pytest.approx(2 * norm.cdf(1) - 1, abs=1e-3)
    assert table.loc[UNEQ.name, "exact_both_J"] > 0.5
    for name in ("fairness_impossibility.png", "dp_gap_on_eo_curve.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    s = json.loads((out / "summary.json").read_text())
    assert s["claims"] == {
        "diagonal_identity_dp_gap_equals_dbase_times_J": "holds",
        "dp_and_eo_only_degenerate_with_different_base_rates": "holds",
        "equal_base_rates_is_an_exception": "holds",
        "uninformative_score_is_an_exception": "holds",
        "dp_and_equalized_odds_only_degenerate": "holds",
        "dp_and_eo_only_degenerate_with_unequal_score_quality": "does not hold",
        "finite_sample_gaps_inside_bootstrap_intervals": "holds",
    }
    tol = pd.read_csv(out / "tolerance.csv")
    j = tol[tol.scenario == DIFF.name].set_index("eps")["maxJ_dp_and_eo"].sort_index()
    assert j.is_monotonic_increasing and j.iloc[0] < 0.1 < j.iloc[-1]  # shrinks to degenerate with ε
    assert "does not hold" in (out / "table.md").read_text()


def test_closed_form_rates():
    r = fx.group_rates(0.3, 2.0, np.array([2.0, 0.0, -np.inf, np.inf]))
    assert r["tpr"][0] == pytest.approx(0.5) and r["fpr"][1] == pytest.approx(0.5)
    assert r["selection_rate"][2] == 1.0 and r["selection_rate"][3] == 0.0
    # PPV by Bayes at t = 1: 0.3 Φ(1) / (0.3 Φ(1) + 0.7 Φ(−1))
    p = fx.group_rates(0.3, 2.0, np.array(1.0))["ppv"]
    assert p == pytest.approx(0.3 * norm.cdf(1) / (0.3 * norm.cdf(1) + 0.7 * norm.cdf(-1)), rel=1e-12)
    t = np.array([-3.0, -0.5, 0.7, 4.0])
    back = fx._inverse_selection(0.6, 2.5, fx.group_rates(0.6, 2.5, t)["selection_rate"])
    np.testing.assert_allclose(back, t, atol=1e-9)


def test_exact_solution_with_unequal_score_quality_is_real():
    (root,) = fx.eo_curve_roots(UNEQ)
    assert root["dp_gap"] < 1e-10 and root["eo_gap"] < 1e-12 and root["youden"] > 0.5
    assert fx.eo_curve_roots(DIFF) == []
    # sampled data at those thresholds, measured independently: both gaps are small
    y, yhat, g = fx.sample(UNEQ, 200_000, seed=5, t_a=root["t_a"], t_b=root["t_b"])
    assert fm.demographic_parity_difference(y, yhat, g) < 0.006
    assert fm.equal_opportunity_difference(y, yhat, g) < 0.006
    # whereas the best common threshold of the equal-quality scenario keeps a DP gap of 0.3 · J
    y, yhat, g = fx.sample(DIFF, 200_000, seed=6, t_a=1.0, t_b=1.0)
    assert fm.demographic_parity_difference(y, yhat, g) == pytest.approx(0.3 * (2 * norm.cdf(1) - 1), abs=0.006)


@pytest.mark.parametrize("scenario", [DIFF, UNEQ])
def test_tolerance_optimiser_matches_brute_force(scenario):
    eps = 0.05
    best = fx.max_youden_within(scenario, eps, n_t=2001)
    t = np.linspace(-8.0, 10.0, 801)
    g = fx.exact_gaps(scenario, *np.meshgrid(t, t, indexing="xy"))
    ok = (g["demographic_parity_difference"] <= eps) & (g["equal_opportunity_difference"] <= eps)
    brute = g["youden"][ok].max()
    assert brute <= best["youden"] + 1e-3  # the optimiser is never beaten by the grid ...
    assert best["youden"] <= brute + 0.01  # ... and the grid comes close to it
    at = fx.exact_gaps(scenario, np.array(best["t_a"]), np.array(best["t_b"]))
    assert at["demographic_parity_difference"] <= eps + 1e-9 and at["equal_opportunity_difference"] <= eps + 1e-9


def test_dp_with_equalized_odds_shrinks_linearly():
    # different base rates: both within ε forces J = O(ε)
    for eps in (1e-2, 1e-3):
        j = fx.max_youden_within(DIFF, eps, n_t=2001, equalized_odds=True)["youden"]
        assert 0 < j <= 10 * eps, (eps, j)
