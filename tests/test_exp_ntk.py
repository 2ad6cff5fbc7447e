"""The ``ntk-width`` experiment (issue 19, course §11.5, exercise 11.3) in quick mode: the relative
error of the empirical NTK of the exercise's two-layer ReLU net against the arc-cosine limit
decays like n^{-1/2} (fitted log-log slope in [-0.7, -0.3]), the claims hold and both figures
are written; ``ntk-lazy``: gradient descent fits a tiny regression at every width while the
relative changes of the weights (≈ n^{-1/2}) and of the NTK shrink with the width, and so does
the distance between the trained net and NTK kernel regression at initialisation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.ntk as nx  # registers the experiment
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("ntk-width", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "ntk-width" in EXPERIMENTS.names()


def test_error_decays_like_one_over_sqrt_width(out):
    table = pd.read_csv(out / "table.csv")
    assert list(table["width"]) == list(nx.WIDTHS)
    for v in ("a_fixed", "both"):
        err = table[f"rel_err_{v}"].to_numpy()
        assert np.all(np.diff(err) < 0), table  # monotone in n on these widths (4x steps, ~2x drop)
        slope, _ = nx.fit_slope(table["width"].to_numpy(float), err)
        assert -0.7 <= slope <= -0.3, (v, slope)
        # √n · error is O(1): between 1 and 4 at every width (its constant, not a drift)
        assert ((table[f"sqrt_n_x_err_{v}"] > 1) & (table[f"sqrt_n_x_err_{v}"] < 4)).all(), table
    s = json.loads((out / "summary.json").read_text())
    assert -0.7 <= s["slope_a_fixed"] <= -0.3 and -0.7 <= s["slope_both"] <= -0.3
    assert s["claims"] == {"ntk_error_slope_minus_half": "holds",
                           "ntk_error_slope_minus_half_both_layers": "holds",
                           "ntk_converges_to_analytic": "holds"}
    assert "holds" in (out / "table.md").read_text()


def test_figures_written(out):
    for name in ("ntk_vs_angle.png", "ntk_error_vs_width.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000


def test_helpers():
    theta, x = nx.unit_circle(5)
    assert torch.allclose(x.norm(dim=1), torch.ones(5, dtype=torch.float64))
    assert theta[0] == 0 and theta[-1] == pytest.approx(np.pi)
    w = np.array([10.0, 100.0, 1000.0])
    assert nx.fit_slope(w, 3 * w**-0.5)[0] == pytest.approx(-0.5)
    a = torch.eye(2, dtype=torch.float64)
    assert nx.relative_error(1.1 * a, a) == pytest.approx(0.1)


# ----------------------------------------------------------------------------------------
# ntk-lazy


@pytest.fixture(scope="module")
def lazy_out(tmp_path_factory):
    return run_quick_experiment("ntk-lazy", tmp_path_factory)


def test_lazy_training_fits_and_moves_less_with_width(lazy_out):
    table = pd.read_csv(lazy_out / "table.csv")
    assert list(table["width"]) == list(nx.WIDTHS)
    assert (table["max_loss_ratio"] < 0.01).all(), table  # GD with a width-independent step fits
    # both relative changes shrink with the width at every step of the grid
    assert np.all(np.diff(table["kernel_change"]) < 0) and np.all(np.diff(table["weight_change"]) < 0), table
    w_slope, _ = nx.fit_slope(table["width"].to_numpy(float), table["weight_change"].to_numpy())
    assert -0.7 <= w_slope <= -0.3, w_slope
    assert table["kernel_change"].iloc[-1] < 0.02 < table["kernel_change"].iloc[0]  # lazy only when wide
    s = json.loads((lazy_out / "summary.json").read_text())
    assert s["claims"] == {"every_width_fits": "holds", "weight_change_slope_minus_half": "holds",
                           "kernel_change_vanishes": "holds",
                           "trained_net_approaches_kernel_regression": "holds"}
    for name in ("ntk_lazy.png", "ntk_lazy_predictions.png"):
        data = (lazy_out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000


def test_trained_net_approaches_ntk_kernel_regression_with_width(lazy_out):
    table = pd.read_csv(lazy_out / "table.csv")
    d = table["pred_vs_kernel_regression"].to_numpy()
    # the narrow net is far from its linearisation, the widest within a few percent
    assert d[0] > 0.1 and d[-1] < 0.05 and d[-1] < d[0] / 4, table
    slope, _ = nx.fit_slope(table["width"].to_numpy(float), d)
    assert -0.8 <= slope <= -0.25, slope
    s = json.loads((lazy_out / "summary.json").read_text())
    assert s["slope_pred_vs_kernel_regression"] == pytest.approx(slope)
    # the loss is ~1e-4 of its start: the linearised model after the same steps is the t → ∞ one
    # up to a few percent of the distance, at every width
    lin_t = table["pred_vs_linearised_T"].to_numpy()
    assert np.allclose(lin_t, d, rtol=0.1), table


def test_train_lazy_without_steps_is_its_own_linearisation():
    """0 steps: the net is f0 and so is its linearised model after 0 steps; NTK kernel
    regression (t → ∞) is not f0 — it interpolates the targets."""
    r = nx.train_lazy(64, seed=0, steps=0, curves=True)
    assert r["pred_vs_linearised_T"] < 1e-12 and r["pred_vs_kernel_regression"] > 0.1
    assert r["f_T"].shape == r["f_kernel_regression"].shape == (nx.LAZY_N_TEST,)
    x = nx.lazy_test_inputs()
    assert torch.allclose(x.norm(dim=1), torch.ones(nx.LAZY_N_TEST, dtype=torch.float64))
    phi = torch.atan2(x[:, 1], x[:, 0])
    train_phi = torch.tensor(nx.unit_circle(nx.LAZY_N)[0])
    assert (phi - train_phi[:, None]).abs().min() > 1e-3  # no test input is a training input


def test_train_lazy_without_steps_changes_nothing():
    r = nx.train_lazy(64, seed=0, steps=0)
    assert r["kernel_change"] == 0 and r["weight_change"] == 0 and r["loss_T"] == r["loss_0"] > 0
