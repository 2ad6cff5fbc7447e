"""Quick modes of the theory experiments (bias-variance eq. 3.1, theorem 3.8, §1.5 init)
write their table and figure, and the numbers say what the course says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import profond.experiments.theory_numeric as tn  # noqa: F401  (registers the experiments)
from profond.experiments import run_experiment


def _run(name: str, png: str, tmp_path) -> pd.DataFrame:
    out, result = run_experiment(name, quick=True, out=tmp_path)
    for f in ("table.csv", "table.md", "summary.json", png):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    table = pd.read_csv(out / "table.csv")
    pd.testing.assert_frame_equal(table, result.table, check_dtype=False, rtol=1e-6)
    return table


@pytest.fixture(scope="module")
def bias_variance(tmp_path_factory) -> pd.DataFrame:
    return _run("bias-variance", "bias_variance.png", tmp_path_factory.mktemp("bv")).set_index("degree")


def test_bias_variance_tradeoff(bias_variance):
    t = bias_variance
    assert list(t.index) == [1, 3, 5, 9, 15]
    # bias² falls from the rigid degree 1 to the flexible degrees (10x at least)
    assert all(t.loc[d, "bias2"] < 0.1 * t.loc[1, "bias2"] for d in (3, 5, 9))
    # variance grows with the degree, and is largest for degree 15
    assert np.all(np.diff(t.loc[[1, 3, 5, 9], "variance"].to_numpy()) > 0)
    assert t["variance"].idxmax() == 15
    # the best trade-off is an intermediate degree
    assert t["total_mc"].idxmin() in (3, 5)


def test_bias_variance_decomposition_eq_3_1(bias_variance):
    t = bias_variance
    decomposed = t["bias2"] + t["variance"] + tn.BV_SIGMA**2
    assert np.all(np.abs(t["total_mc"] - decomposed) / t["total_mc"] < 0.05)
    assert np.allclose(t["noise"], 0.09)


def test_early_stopping_matches_ridge(tmp_path):
    t = _run("early-stopping-l2", "early_stopping_l2.png", tmp_path)
    assert list(t["T"]) == [10, 100, 1000]
    assert np.allclose(t["lambda=1/(eta T)"], 1 / (t["eta"] * t["T"]))
    # the GD iterate follows eq. 3.27 exactly
    assert (t["gd_formula_error"] < 1e-9).all()
    # same scale of regularisation: weights within 30 % (measured 0.13-0.26, see notes)
    assert (t["rel_distance"] < 0.3).all()
    # shrinkage factors agree within a few percent where eta*s*T << 1 or >> 1 ...
    small = t["max_rel_shrink_gap_small"].dropna()
    large = t["max_rel_shrink_gap_large"].dropna()
    assert len(small) and (small < 0.05).all()
    assert len(large) and (large < 0.06).all()
    # ... and never by more than the max of (1 - e^-x) - x/(1+x), about 0.204
    assert (t["max_abs_shrink_gap"] < 0.21).all()


def test_shrinkage_formulas():
    s = np.geomspace(1e-4, 1e-2, 20)
    eta, steps = 0.1, 10
    gd, rd = tn.gd_shrinkage(s, eta, steps), tn.ridge_shrinkage(s, 1 / (eta * steps))
    # x = eta*s*T <= 0.01: both are x + O(x^2), relative gap about x/2 <= 0.5 %
    assert np.allclose(gd, rd, rtol=1e-2, atol=0)
    x, y, _, _ = tn.make_regression(n=60, p=10, s_min=1e-2, seed=1)
    assert np.allclose(tn.run_gd(x, y, 0.5, 20000), tn.ridge(x, y, 0.0), atol=1e-6)


def test_initialization_50_layers(tmp_path):
    t = _run("initialization", "initialization.png", tmp_path).set_index("init")
    assert {"var_L1", "var_L10", "var_L25", "var_L50", "ratio_50_1"} <= set(t.columns)
    # matching init for ReLU: the variance at layer 50 stays within 2x of layer 1
    assert 0.5 < t.loc["he + relu", "ratio_50_1"] < 2
    # Xavier + tanh is critical but tanh' < 1: slow ~1/(2 l) decay, not a collapse
    assert 0.5 < t.loc["xavier_normal + tanh", "var_L50"] * 2 * 50 < 2
    assert t.loc["xavier_normal + tanh", "ratio_50_1"] > 1e-2
    # Xavier with ReLU halves the variance at every layer: 2^-49 at layer 50
    assert 0.1 < t.loc["xavier_normal + relu", "ratio_50_1"] / 2.0**-49 < 10
    # naive std=0.01 vanishes, naive std=1 saturates (tanh) or explodes (ReLU)
    assert t.loc["naive std=0.01 + tanh", "ratio_50_1"] < 1e-6
    assert t.loc["naive std=1 + tanh", "var_L50"] > 0.9
    assert t.loc["naive std=1 + relu", "ratio_50_1"] > 1e6
