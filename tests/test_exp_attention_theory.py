"""Quick modes of the attention theory experiments (theorem 6.3 / exercise 6.2, theorem 6.7 /
exercise 7.1): their tables, figures and verdicts, and the helpers they are built on."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.attention_theory as at
from profond.experiments import run_experiment
from profond.registry import EXPERIMENTS


def _run(name: str, pngs: tuple[str, ...], tmp_path):
    out, result = run_experiment(name, quick=True, out=tmp_path)
    for f in ("table.csv", "table.md", "summary.json", *pngs):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
        if f.endswith(".png"):
            assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(out / "table.csv")
    pd.testing.assert_frame_equal(table, result.table, check_dtype=False, rtol=1e-6)
    return out, result


def test_registered():
    assert {"attention-scaling", "attention-complexity"} <= set(EXPERIMENTS.names())


@pytest.fixture(scope="module")
def scaling(tmp_path_factory):
    return _run("attention-scaling", ("score_histograms.png", "softmax_entropy.png", "softmax_jacobian.png"),
                tmp_path_factory.mktemp("scaling"))


def test_scaling_theorem_6_3(scaling):
    _, r = scaling
    t = r.table.set_index("d_k")
    assert list(t.index) == [16, 64, 256, 1024]
    assert {"mean", "var", "var/d_k", "entropy", "entropy_scaled", "jac_norm", "jac_norm_scaled"} <= set(t.columns)
    assert 0.9 <= r.extra["var_slope"] <= 1.1  # Var(q·k) ∝ d_k (6.11)
    assert np.allclose(t["var/d_k"], 1.0, atol=0.1)
    assert r.extra["variance_prop_dk"] and r.extra["mean_zero"] and r.extra["scaled_var_one"]
    assert "(6.11) holds" in r.notes and "(6.12) holds" in r.notes


def test_scaling_saturation_and_gradient(scaling):
    _, r = scaling
    t = r.table.set_index("d_k")
    curve = np.array(r.extra["entropy_curve"]["entropy"])
    assert np.all(np.diff(curve) <= 1e-12) and curve[-1] < 0.05 * math.log(at.SCALING_KEYS)
    # unscaled scores saturate more and more; scaled ones keep the same entropy and gradient
    assert np.all(np.diff(t["entropy"]) < 0) and np.ptp(t["entropy_scaled"]) < 0.1
    assert np.all(np.diff(t["jac_norm"]) < 0) and t.loc[1024, "jac_norm"] < 0.5 * t.loc[1024, "jac_norm_scaled"]
    assert r.extra["jac_slope"] < -0.25 and abs(r.extra["jac_slope_scaled"]) < 0.05
    assert r.extra["grad_vanishes_unscaled"] and r.extra["grad_kept_scaled"]
    assert "gradient vanishes' holds" in r.notes


def test_softmax_jacobian_is_exact():
    z = torch.randn(3, 7, dtype=torch.float64) * 3
    ours = at.softmax_jacobian(z)
    for i in range(3):
        ref = torch.autograd.functional.jacobian(lambda x: torch.softmax(x, -1), z[i])
        torch.testing.assert_close(ours[i], ref, rtol=1e-12, atol=1e-12)
    # saturation: a near one-hot softmax has a near-zero Jacobian
    assert at.jacobian_norm(torch.tensor([[100.0, 0.0, 0.0]], dtype=torch.float64)).item() < 1e-40
    u = at.jacobian_norm(torch.zeros(1, 4, dtype=torch.float64)).item()
    assert u == pytest.approx(math.sqrt(4 * (3 / 16) ** 2 + 12 / 16**2))  # ‖diag(1/4) − 11ᵀ/16‖_F
    assert at.softmax_entropy(torch.zeros(1, 8)).item() == pytest.approx(math.log(8))


def test_scaling_checks_can_fail():
    t = pd.DataFrame({"d_k": [16, 64, 256, 1024], "mean": [0.0] * 4, "var": [16.0, 32.0, 64.0, 128.0],
                      "jac_norm": [0.2] * 4, "jac_norm_scaled": [0.2, 0.1, 0.05, 0.025]})
    t["var/d_k"] = t["var"] / t["d_k"]
    c = at.scaling_checks(t, np.array([2.0, 2.5, 1.0]), 8, 10_000)
    assert c["var_slope"] == pytest.approx(0.5)
    assert not (c["variance_prop_dk"] or c["entropy_decreasing"] or c["grad_vanishes_unscaled"]
                or c["grad_kept_scaled"] or c["saturates"])


@pytest.fixture(scope="module")
def complexity(tmp_path_factory):
    return _run("attention-complexity", ("attention_complexity.png",), tmp_path_factory.mktemp("complexity"))


def test_complexity_theorem_6_7(complexity):
    out, r = complexity
    t = r.table.set_index("impl")
    assert list(t.index) == ["exact", "sdpa", "linear", "local", "rnn"], r.extra.get("missing")
    assert {"flops_exp_n", "flops_exp_d", "time_exp_n", "time_exp_d", "flops/leading", "flops_verdict",
            "time_exp_n_large", "time_verdict_n"} <= set(t.columns)
    for name in ("exact", "sdpa"):  # O(n²d)
        assert t.loc[name, "flops_exp_n"] == pytest.approx(2.0, abs=0.05)
        assert t.loc[name, "flops_exp_d"] == pytest.approx(1.0, abs=0.05)
        assert t.loc[name, "flops/leading"] == pytest.approx(1.0, abs=1e-9)  # exactly 4n²d
    for name in ("linear", "rnn"):  # O(nd²)
        assert t.loc[name, "flops_exp_n"] == pytest.approx(1.0, abs=0.05)
        assert t.loc[name, "flops_exp_d"] == pytest.approx(2.0, abs=0.05)
    assert t.loc["local", "flops_exp_n"] == pytest.approx(1.0, abs=0.1)  # fixed window: O(nwd)
    assert t.loc["local", "flops_exp_d"] == pytest.approx(1.0, abs=0.05)
    assert 1.0 <= t.loc["local", "flops/leading"] < 2.0  # blocks reach a few more keys than the 2w − 1
    assert (t["flops_verdict"] == "holds").all()
    assert np.isfinite(t[["time_exp_n", "time_exp_d"]].to_numpy()).all()
    # remark 6.8: attention and RNN cost the same FLOPs at n = d
    assert r.extra["crossover_n_flops"] == pytest.approx(r.extra["d_fixed"], rel=0.05)
    meas = pd.read_csv(out / "measurements.csv")
    assert set(meas["impl"]) == set(t.index) and (meas["flops"] > 0).all() and (meas["time_ms"] > 0).all()
    assert "n = d: holds" in r.notes


def test_loglog_slope_and_crossover():
    n = np.array([1.0, 2.0, 4.0, 8.0])
    assert at.loglog_slope(n, 3 * n**2) == pytest.approx(2.0)
    assert at.crossover(n, n**2, 4 * n) == pytest.approx(4.0)
    assert math.isnan(at.crossover(n, n, 2 * n))
