"""GAN theory of course ch. 8: theorem 8.4 (optimal D), theorem 8.5 (C(G) = -log 4 + 2 JSD),
exercise 8.2 (JSD vs W1 on Diracs) and exercise 8.5 / the bilinear game (simultaneous play)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wasserstein_distance

import profond.experiments.gan_theory as gt  # registers the experiments
from tests.conftest import run_quick_experiment

LOG2 = math.log(2.0)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    return {name: run_quick_experiment(name, tmp_path_factory)
            for name in ("gan-optimal-d", "gan-jsd", "gan-dynamics")}


def test_quick_experiments_write_table_and_figures(quick_runs):
    figures = {"gan-optimal-d": ["optimal_discriminator.png"], "gan-jsd": ["gan_jsd.png"],
               "gan-dynamics": ["gan_dynamics.png"]}
    for name, out in quick_runs.items():
        for f in ("table.csv", "table.md", "summary.json", *figures[name]):
            assert (out / f).is_file() and (out / f).stat().st_size > 0, (name, f)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["quick"] and summary["rows"] > 0


def test_optimal_d_is_the_sigmoid_of_exercise_8_1():
    # p_data = N(3,1), p_g = N(0,1): log-ratio = 3x - 4.5, so D* = sigmoid(3x - 4.5), 1/2 at x = 1.5
    x = np.linspace(-5, 8, 101)
    np.testing.assert_allclose(gt.optimal_d(x, 3, 1, 0, 1), 1 / (1 + np.exp(-(3 * x - 4.5))), rtol=1e-12)
    assert gt.optimal_d(np.array([1.5]), 3, 1, 0, 1)[0] == pytest.approx(0.5)


def test_trained_discriminator_matches_d_star_on_the_bulk(quick_runs):
    t = pd.read_csv(quick_runs["gan-optimal-d"] / "table.csv")
    assert t["max_abs_err_bulk"].max() < 0.06  # measured 0.017 (200 Adam steps, lr 1e-2, batch 256)
    assert t["D_hat(1.5)"].iloc[0] == pytest.approx(0.5, abs=0.03)


def test_c_of_g_equals_minus_log4_plus_2_jsd():
    t = gt.jsd_identity_table(60, seed=1)
    assert t["abs_diff"].max() < 1e-10
    assert t["C(G)>=random"].all()  # D* maximises V(., G)
    assert t.loc[0, "C(G)=V(D*,G)"] == pytest.approx(-math.log(4), abs=1e-12)  # p_g = p_data
    assert (t["C(G)=V(D*,G)"].iloc[1:] > -math.log(4)).all()
    assert np.isfinite(t["C(G)=V(D*,G)"]).all()  # disjoint atoms handled (0 log 0 = 0)


def test_gan_jsd_quick_table(quick_runs):
    t = pd.read_csv(quick_runs["gan-jsd"] / "table.csv").set_index("check")["value"]
    frac = "th. 8.5: random D never beats D* (fraction)"
    assert t[frac] == 1.0
    assert t.drop(index=frac).abs().max() < 1e-10
    dirac = pd.read_csv(quick_runs["gan-jsd"] / "dirac_jsd_w1.csv")
    assert (dirac["theta"] == 0).sum() == 1


def test_jsd_of_diracs_is_flat_while_w1_is_linear():
    for theta in (-3.0, -0.01, 1e-6, 0.5, 7.0):
        assert gt.dirac_jsd(theta) == pytest.approx(LOG2, abs=1e-15)
        assert wasserstein_distance([0.0], [theta]) == pytest.approx(abs(theta))
    assert gt.dirac_jsd(0.0) == 0.0
    # smoothed Diracs: JSD grows towards log 2 as the width shrinks, and is 0 at θ = 0
    assert gt.gaussian_jsd(0.0, 0.1) == pytest.approx(0.0, abs=1e-10)
    vals = [gt.gaussian_jsd(0.5, s) for s in (1.0, 0.3, 0.1, 0.03)]
    assert all(a < b for a, b in zip(vals, vals[1:], strict=False)) and vals[-1] == pytest.approx(LOG2, abs=1e-6)


def test_bilinear_game_simultaneous_diverges_alternating_orbits_extragradient_converges():
    eta, steps = 0.1, 300
    d = {m: np.hypot(*gt.bilinear_run((1.0, 0.0), eta, steps, m).T) for m in gt.BILINEAR_MODES}
    assert d["simultaneous"][-1] >= 0.9 * d["simultaneous"][0]
    np.testing.assert_allclose(d["simultaneous"], (1 + eta**2) ** (np.arange(steps + 1) / 2), rtol=1e-10)
    assert 0.8 < d["alternating"].min() and d["alternating"].max() < 1.25  # bounded, never converges
    assert d["alternating"][-1] > 0.8
    assert d["extragradient"][-1] < 0.3 * d["extragradient"][0]  # × sqrt(1 - η² + η⁴) per step


def test_exercise_8_5_gaussian_game(quick_runs):
    """Reading documented in the module: D = sigmoid(ax² + bx + c). The Jacobian at (0, 1) has
    eigenvalues with negative real part, so simultaneous GD converges for η < η* and does
    not for η > η* (distance to (0, 1) does not shrink)."""
    eigs = np.linalg.eigvals(gt.GaussianGame(64).jacobian())
    assert eigs.real.max() < -0.1
    summary = json.loads((quick_runs["gan-dynamics"] / "summary.json").read_text())
    assert 1.0 < summary["eta_star"] < 2.0
    t = pd.read_csv(quick_runs["gan-dynamics"] / "table.csv")
    g = t[t["game"] == "ex8.5 gaussian"].set_index(["update", "eta"])
    assert g.loc[("simultaneous", 0.2), "final/initial"] < 1e-3  # η = 0.2 < η*: converges
    assert g.loc[("simultaneous", 2.0), "max/initial"] > 3  # η = 2 > η*: does not converge
    # the η > η* orbit is chaotic, so test robust statistics rather than the last point:
    with gt.one_thread():
        d = gt.dist_mu_sigma(gt.GaussianGame(128).run((0.5, 1.5, 0.0, 0.0, 0.0), 2.0, 200))
    assert np.median(d[100:]) >= 0.9 * d[0]  # measured 4.4 vs 0.71
    assert d[100:].min() > 0.1 * d[0]  # never comes close to (0, 1) (measured min 0.43)
    b = t[t["game"] == "bilinear xy"].set_index(["update", "eta"])
    assert (b.xs("simultaneous")["final/initial"] > 2).all()
