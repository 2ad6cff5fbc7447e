"""The chapter-11 experiments of profond.experiments.learning_theory in quick mode:
``vc-shattering`` (exercise 11.1) reads off VC = 3 with counts equal to Cover's, and for
one-hidden-layer ReLU nets a lower bound growing with the width (3 for one unit),
``rademacher`` (exercise 11.2) stays under eq. 11.17 with slope −1/2, ``implicit-bias``
(exercise 11.5) lands on X⁺y and peaks at p = n, ``scaling-law-fit`` (exercise 11.7) fits the
course's four points."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.learning_theory as lt  # registers the experiments
from profond.experiments.dynamics import gradient_descent_lstsq
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"
NAMES = ("vc-shattering", "rademacher", "implicit-bias", "scaling-law-fit")


def summary(out):
    return json.loads((out / "summary.json").read_text())


def png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000


@pytest.fixture(scope="module")
def vc(tmp_path_factory):
    return run_quick_experiment("vc-shattering", tmp_path_factory)


@pytest.fixture(scope="module")
def rad(tmp_path_factory):
    return run_quick_experiment("rademacher", tmp_path_factory)


@pytest.fixture(scope="module")
def ib(tmp_path_factory):
    return run_quick_experiment("implicit-bias", tmp_path_factory)


@pytest.fixture(scope="module")
def sl(tmp_path_factory):
    return run_quick_experiment("scaling-law-fit", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert set(NAMES) <= set(EXPERIMENTS.names())


def test_vc_shattering(vc):
    t = pd.read_csv(vc / "table.csv")
    assert list(t["n_points"]) == [1, 2, 3, 4, 5]
    assert list(t["frac_shattered"]) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert (t["labelings_min"] == t["cover_count"]).all() and (t["labelings_max"] == t["cover_count"]).all()
    assert list(t["cover_count"]) == [2, 4, 8, 14, 22]
    s = summary(vc)
    assert s["vc_dimension"] == 3 and s["xor_labelings"] == 14 and s["collinear_labelings"] == 6
    assert set(s["claims"].values()) == {"holds"}
    png(vc / "vc_shattering.png")


def test_vc_shattering_relu_networks(vc):
    """Theorem 11.6's count for one-hidden-layer ReLU nets of widths 1-3 on R² (quick mode)."""
    relu = pd.read_csv(vc / "relu_vc.csv")
    assert list(relu["width"]) == [1, 2, 3] and list(relu["n_params"]) == [5, 9, 13]
    v = relu["vc_lower_bound"].to_numpy()
    assert v[0] == 3  # one unit: half-planes and constants, VC dimension exactly 3
    assert np.all(np.diff(v) >= 0) and v[-1] >= 5  # two or three units shatter 5+ points
    assert (v <= relu["W_log2_W"]).all() and (v >= relu["n_params"] / 4).all()
    rows = pd.read_csv(vc / "relu_shattering.csv")
    one = rows[rows["width"] == 1].set_index("n_points")
    assert list(one.index) == [3, 4]  # the search stops at the first size no set is shattered
    assert one.loc[3, "frac_sets_shattered"] == 1.0 and one.loc[4, "frac_sets_shattered"] == 0.0
    # one unit realises exactly the affine dichotomies: Cover's 14 of 16 on every 4-point set
    assert one.loc[4, "labelings_frac_min"] == one.loc[4, "labelings_frac_mean"] == 14 / 16
    # every width was searched up to one past its largest shattered size
    for k, g in rows.groupby("width"):
        assert g["n_points"].max() == v[k - 1] + 1 and g["frac_sets_shattered"].iloc[-1] == 0.0
    s = summary(vc)
    assert s["relu_vc_lower_bound"] == {"1": 3, "2": int(v[1]), "3": int(v[2])}
    png(vc / "relu_vc.png")


def test_spread_point_sets_keeps_the_best_spread():
    rng = np.random.default_rng(0)
    sets = lt.spread_point_sets(rng, 3, 6, draws=10)
    assert sets.shape == (3, 6, 2)

    def min_dist(p):
        d = np.linalg.norm(p[:, None] - p[None], axis=-1)
        return d[~np.eye(len(p), dtype=bool)].min()

    rng = np.random.default_rng(0)
    cand = rng.standard_normal((30, 6, 2))
    best = sorted((min_dist(c) for c in cand), reverse=True)[:3]
    assert [min_dist(p) for p in sets] == pytest.approx(best)


def test_rademacher(rad):
    t = pd.read_csv(rad / "table.csv")
    assert sorted(set(t["m"])) == list(lt.RAD_M) and sorted(set(t["B"])) == list(lt.RAD_B)
    assert (t["rademacher_mc"] <= t["bound_11_17"]).all()
    assert (t["bound_over_mc"] < 1.2).all()  # tight in d = 10 (the claim allows up to 2)
    ex = t.dropna(subset=["exact"])
    assert list(ex["m"]) == [10, 10]
    assert ((ex["rademacher_mc"] - ex["exact"]).abs() < 4 * ex["mc_se"]).all()
    # R̂ is linear in B: the B = 5 rows are 5x the B = 1 rows (same data, same signs)
    b1, b5 = t[t["B"] == 1.0]["rademacher_mc"].to_numpy(), t[t["B"] == 5.0]["rademacher_mc"].to_numpy()
    assert np.allclose(b5, 5 * b1)
    s = summary(rad)
    assert all(abs(v + 0.5) < 0.1 for v in s["slopes"].values()), s["slopes"]
    assert set(s["claims"].values()) == {"holds"}
    png(rad / "rademacher.png")


def test_implicit_bias(ib):
    t = pd.read_csv(ib / "table.csv")
    zero, rand = t.iloc[0], t.iloc[1]
    assert zero["rel_err_vs_pinv"] < 1e-6 and zero["null_component_norm"] < 1e-10
    assert rand["rel_err_vs_pinv_plus_null_w0"] < 1e-6
    # from w0 the limit is X⁺y + P_null w0: its distance to X⁺y is the null-space part of w0
    assert rand["rel_err_vs_pinv"] * rand["norm_pinv"] == pytest.approx(rand["null_component_of_w0"], rel=1e-6)
    assert zero["norm_w"] == pytest.approx(zero["norm_pinv"], rel=1e-9) and rand["norm_w"] > zero["norm_w"]
    risk = pd.read_csv(ib / "min_norm_risk.csv")
    assert abs(summary(ib)["peak_p"] - 40) <= 4
    assert risk["test_mse_median"].max() > 10 * risk["test_mse_median"].iloc[0]
    assert set(summary(ib)["claims"].values()) == {"holds"}
    png(ib / "min_norm_risk.png")


def test_gd_helper_is_exact_on_a_tiny_problem():
    X = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([3.0, 4.0], dtype=torch.float64)
    w = gradient_descent_lstsq(X, y, torch.tensor([0.0, 0.0, 5.0], dtype=torch.float64), 500)
    assert torch.allclose(w, torch.tensor([3.0, 2.0, 5.0], dtype=torch.float64), atol=1e-12)


def test_scaling_law_fit(sl):
    s = summary(sl)
    # log-log slope of (1e6..1e9, 3.2/2.8/2.5/2.3): ≈ 0.048, well below eq. 7.16's 0.076
    assert s["alpha"] == pytest.approx(0.0479, abs=5e-4) and 0.002 < s["se_alpha"] < 0.006
    assert 1.7 < s["band"][0] < s["extrapolated_loss"] < s["band"][1] < 1.95
    assert s["extrapolated_loss"] == pytest.approx(s["c"] * 1e11 ** -s["alpha"], rel=1e-9)
    assert s["claims"] == {"alpha_matches_eq_7_16": "does not hold"}
    t = pd.read_csv(sl / "table.csv")
    assert list(t["N"]) == [*lt.EX_11_7_N, lt.N_EXTRAPOLATE]
    assert (t["local_alpha"].dropna().diff().dropna() < 0).all()  # the data bend (L∞ > 0)
    assert "Limits" in (sl / "table.md").read_text()
    png(sl / "scaling_law_fit.png")
