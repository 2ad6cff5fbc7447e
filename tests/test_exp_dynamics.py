"""Training-dynamics experiments: double descent (§11.10), theorem 11.10 (GD → min-norm
interpolant) and gradient clipping (§2.6.2)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import profond.experiments.dynamics as dyn  # registers the experiments
from profond.experiments import run_experiment


def test_gd_from_zero_is_the_pinv_solution():
    t = dyn.implicit_bias_table(n=30, p=100, steps=1000)
    r = t.iloc[0]
    assert r["init"] == "w0 = 0"
    assert r["rel_err_vs_pinv"] < 1e-4
    assert r["residual_norm"] < 1e-8  # interpolates
    assert r["null_component_norm"] < 1e-8  # stays in Im(X^T)
    assert r["norm_w"] == pytest.approx(r["norm_pinv"], rel=1e-6)


def test_gd_from_nonzero_init_keeps_the_null_space_component():
    r = dyn.implicit_bias_table(n=30, p=100, steps=1000).iloc[1]
    assert r["null_component_of_w0"] > 1.0
    assert r["rel_err_vs_pinv_plus_null_w0"] < 1e-4  # X⁺y + P_null w0
    assert r["null_component_norm"] == pytest.approx(r["null_component_of_w0"], rel=1e-6)
    assert r["rel_err_vs_pinv"] > 1.0  # hence not the min-norm solution
    assert r["residual_norm"] < 1e-8 and r["norm_w"] > r["norm_pinv"]


def test_min_norm_random_features_peak_at_interpolation_threshold():
    data = dyn.course_data()
    n = data[0].shape[0]
    rf = dyn.random_features_curve(data, [40, n, 600], seeds=3).set_index("features")
    assert rf.loc[n, "test_mse"] > 5 * rf.loc[600, "test_mse"]
    assert rf.loc[n, "test_mse"] > 5 * rf.loc[40, "test_mse"]
    assert rf.loc[600, "train_mse"] < 1e-10  # over-parameterized: interpolates


def test_double_descent_quick_writes_outputs(tmp_path):
    out, res = run_experiment("double-descent", quick=True, out=tmp_path)
    for f in ("table.csv", "table.md", "summary.json", "double_descent.png", "implicit_bias.csv",
              "random_features.csv"):
        assert (out / f).is_file(), f
    table = pd.read_csv(out / "table.csv")
    assert list(table["width"]) == dyn.QUICK_WIDTHS
    # parameter count of the course's listing: 20w + w + w² + w + w + 1
    assert list(table["params"]) == [20 * w + w + w * w + w + w + 1 for w in dyn.QUICK_WIDTHS]
    assert table["train_loss"].iloc[-1] < 1e-2  # the widest network interpolates
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gd_rel_err_vs_pinv"] < 1e-4 and summary["gd_rel_err_nonzero_init"] < 1e-4
    assert summary["rf_peak_features"] == summary["n_train"] == 140


def test_clip_grad_norm_bounds_the_step():
    r = dyn.train_clipped(1.0, steps=30)
    assert len(r["losses"]) == 30 and all(map(torch.isfinite, map(torch.tensor, r["losses"])))
    assert r["losses"][-1] < r["losses"][0]
    assert r["grad_norms"][0] > 1e3  # the gradient really explodes at init


def test_gradient_clipping_quick(tmp_path):
    out, res = run_experiment("gradient-clipping", quick=True, out=tmp_path)
    assert (out / "gradient_clipping.png").is_file() and (out / "table.md").is_file()
    table = pd.read_csv(out / "table.csv").set_index("max_norm")
    none = table.loc["none"]
    assert none["diverged"] == "yes"
    assert not (none["final_loss"] < none["initial_loss"])  # nan/inf (or larger) without clipping
    clipped = table.drop(index="none")
    assert (clipped["diverged"] == "no").all()
    assert (clipped["final_loss"] < clipped["initial_loss"]).all()


@pytest.mark.slow
def test_double_descent_full_mlp_sweep(tmp_path):
    """Full §11.10 sweep (minutes): interpolation by large widths and a test-loss bump
    near the threshold that is higher than the test loss of the widest network."""
    _, res = run_experiment("double-descent", quick=False, out=tmp_path)
    t = res.table
    assert t["train_loss"].iloc[-1] < 1e-3
    n = res.extra["n_train"]
    near = t[(t["params"] >= n / 2) & (t["params"] <= 10 * n)]
    assert near["test_loss"].max() > t["test_loss"].iloc[-1]
