"""The ``vae-ablation`` (course table 9.1, exercise 9.4) and ``anomaly`` (one-class AE)
experiments: ``--quick`` writes its table and figures with finite numbers, and the threshold
search of ``anomaly`` is exact."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import profond.experiments.generative as gen_exp  # registers the two experiments
from tests.conftest import needs_fmnist, run_quick_experiment


@pytest.fixture(scope="module")
def vae_out(tmp_path_factory):
    return run_quick_experiment("vae-ablation", tmp_path_factory)


@pytest.fixture(scope="module")
def anomaly_out(tmp_path_factory):
    return run_quick_experiment("anomaly", tmp_path_factory)


def test_experiments_are_registered():
    from profond.registry import EXPERIMENTS

    assert {"vae-ablation", "anomaly"} <= set(EXPERIMENTS.names())


def test_table_9_1_is_the_course_table():
    rows = {c.label: c for c in gen_exp.TABLE_9_1}
    assert len(rows) == 13 and (rows["base"].course_recon, rows["base"].course_kl) == (82.3, 24.3)
    assert rows["Conv (CNN)"].course_recon == 73.5 and rows["β=10"].course_kl == 3.8
    assert rows["MLP (512)"].key == rows["base"].key  # one run for both rows
    assert len({c.key for c in gen_exp.TABLE_9_1}) == 12


def _macro_f1(s: np.ndarray, a: np.ndarray, t: float) -> float:
    """Macro F1 by its definition, for the brute force below (sklearn per call is slow)."""
    p = s > t
    f1s = []
    for pos, pred in ((a, p), (~a, ~p)):
        tp, fp, fn = (pos & pred).sum(), (~pos & pred).sum(), (pos & ~pred).sum()
        f1s.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(f1s))


def test_best_macro_f1_threshold_is_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(5, 80))
        a = rng.random(n) < 0.8
        s = np.round(rng.normal(size=n) + 1.5 * a, 1)  # ties on purpose
        t, f = gen_exp.best_macro_f1_threshold(s, a)
        u = np.sort(s)
        cands = np.concatenate([[u[0] - 1], (u[1:] + u[:-1]) / 2, [u[-1] + 1]])
        assert f == pytest.approx(max(_macro_f1(s, a, c) for c in cands))
        assert _macro_f1(s, a, t) == pytest.approx(f)
    assert gen_exp.macro_f1(s, a, t) == pytest.approx(f)  # the sklearn version agrees
    a = np.array([True] * 9 + [False])  # "everything is an anomaly" is not rewarded
    assert gen_exp.macro_f1(np.arange(10.0), a, -1.0) < 0.5


# ------------------------------------------------------------------------------ vae-ablation
@needs_fmnist
def test_vae_ablation_quick_table(vae_out):
    t = pd.read_csv(vae_out / "table.csv")
    assert list(t["config"]) == gen_exp.QUICK_ROWS
    for col in ("latent_dim", "beta", "arch", "recon", "kl", "elbo", "active_units", "fid", "params",
                "train_s", "course_recon", "course_kl"):
        assert col in t.columns, col
    num = t[["recon", "kl", "elbo", "fid", "params", "train_s", "course_recon", "course_kl"]].to_numpy(float)
    assert np.isfinite(num).all()
    assert np.allclose(t["elbo"], -(t["recon"] + t["kl"]), atol=0.05)  # ELBO = −(recon + KL), β = 1
    assert ((t["active_units"] >= 0) & (t["active_units"] <= t["latent_dim"])).all()
    assert (t["fid"] >= 0).all() and (t["kl"] > 0).all()
    rows = t.set_index("config")
    assert rows.loc["β=4", "kl"] < rows.loc["base", "kl"]  # β > 1 pushes q(z|x) towards the prior
    assert rows.loc["base", "course_recon"] == 82.3 and rows.loc["d=2", "latent_dim"] == 2
    for name in ("recon_vs_kl_beta.png", "latent_dim.png", "samples-mlp512.png", "samples-conv.png"):
        assert (vae_out / name).stat().st_size > 2000, name
    md = (vae_out / "table.md").read_text()
    assert "| config |" in md and "MNIST after 30 epochs" in md


# ------------------------------------------------------------------------------ anomaly
@needs_fmnist
def test_anomaly_quick_table(anomaly_out):
    t = pd.read_csv(anomaly_out / "table.csv", dtype={"class": str})
    assert list(t["class"]) == ["0", "1", "7", "mean"]
    per_class, mean = t.iloc[:-1], t.iloc[-1]
    for col in ("roc_auc", "val_f1", "test_f1", "test_precision", "test_recall", "test_f1_q95"):
        v = per_class[col].to_numpy(float)
        assert np.isfinite(v).all() and ((v >= 0) & (v <= 1)).all(), col
        assert mean[col] == pytest.approx(v.mean(), abs=1e-3), col
    assert (per_class["roc_auc"] > 0.5).mean() >= 2 / 3  # reconstruction error beats chance
    assert math.isfinite(per_class["threshold"].astype(float).sum())
    assert (per_class["train_images"] == 1000).all()  # one class only, the quick subset
    assert (anomaly_out / "roc.png").stat().st_size > 10_000
