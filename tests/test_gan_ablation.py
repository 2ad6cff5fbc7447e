"""The ``gan-ablation`` experiment (course table 8.1, §8.9, remark 8.11): the rows are the
course's, each row really trains its own configuration, ``--quick`` writes a finite table and
its figures, a diverged run is recorded instead of raised, and the remark-8.11 verdicts follow
the numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import profond.experiments.gan_ablation as ga  # registers the experiment
from tests.conftest import needs_fmnist, run_quick_experiment

COLUMNS = ["config", "latent_dim", "lr_G", "lr_D", "n_critic", "loss", "batch", "fid", "kid_mean", "kid_std",
           "class_entropy", "missing_classes", "params", "train_s", "course_fid", "diverged", "status", "run"]


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    return run_quick_experiment("gan-ablation", tmp_path_factory)


def test_registered():
    from profond.experiments import MODULES
    from profond.registry import EXPERIMENTS

    assert "gan-ablation" in EXPERIMENTS.names() and "gan_ablation" in MODULES


def test_table_8_1_is_the_course_table():
    rows = {c.label: c for c in ga.TABLE_8_1}
    assert len(ga.TABLE_8_1) == len(rows) == 10
    assert [c.course_fid for c in ga.TABLE_8_1] == [28.3, 35.1, 30.2, 27.8, 32.5, 41.7, 25.9, 28.3, 26.7, 23.4]
    assert [c.latent_dim for c in ga.TABLE_8_1] == [100, 32, 64, 256, 100, 100, 100, 100, 100, 100]
    assert [(c.lr_g, c.lr_d) for c in ga.TABLE_8_1[4:7]] == [(5e-4, 2e-4), (2e-4, 5e-4), (1e-4, 4e-4)]
    assert rows[ga.NC1].key == rows[ga.BASE].key  # one run, two rows
    assert len({c.key for c in ga.TABLE_8_1}) == 9 == len({c.run_name for c in ga.TABLE_8_1})
    assert rows[ga.NC3].n_critic == 3 and rows[ga.NC3].loss == "non-saturating"
    w = rows[ga.NC5]
    assert (w.n_critic, w.loss, w.gp_weight, w.d_norm, w.lr_g, w.lr_d) == (5, "wasserstein", 10.0, "layer", 1e-4, 1e-4)


@pytest.mark.parametrize("budget", [ga.QUICK, ga.FULL], ids=["quick", "full"])
def test_overrides_resolve_to_the_row(budget, tmp_path):
    """Each row's overrides give a valid config with its latent dim, per-optimizer LRs, n_critic
    and loss, and every row of a mode has the same budget (epochs, widths, data)."""
    from profond.config import resolve
    from profond.train.optim import optimizer_cfg_for

    budgets = set()
    for c in ga.TABLE_8_1:
        cfg = resolve(overrides=[*ga.gan_overrides(c, budget), f"out={tmp_path}"])
        m, meth = cfg.model.args, cfg.method.args
        assert cfg.model.name == "dcgan" and cfg.method.name == "gan"
        assert m["latent_dim"] == c.latent_dim and m["d_norm"] == c.d_norm
        assert m["features_g"] == m["features_d"] == budget.features
        assert (meth["n_critic"], meth["loss"], meth["gp_weight"]) == (c.n_critic, c.loss, c.gp_weight)
        g, d = optimizer_cfg_for(cfg.optim, "G", known="DG"), optimizer_cfg_for(cfg.optim, "D", known="DG")
        assert (g.lr, d.lr) == pytest.approx((c.lr_g, c.lr_d), rel=1e-12)
        assert g.betas == d.betas == [0.5, 0.9 if c.gp_weight else 0.999] and g.name == d.name == "adam"
        assert cfg.data.batch_size == c.batch_size and cfg.data.name == "fashion-mnist"
        budgets.add((cfg.train.epochs, cfg.data.subset, cfg.data.val_size, cfg.train.threads))
    assert budgets == {(budget.epochs, budget.subset, budget.val_size, budget.threads)}


def _course_table() -> pd.DataFrame:
    return pd.DataFrame({"config": [c.label for c in ga.TABLE_8_1], "fid": [c.course_fid for c in ga.TABLE_8_1]})


def test_remark_8_11_verdicts():
    course = ga.remark_8_11(_course_table())
    assert [v.claim for v in course] == ["latent", "ttur", "wgan-gp"]
    assert [v.supported for v in course] == [True, True, True]  # the course's numbers support its remark
    assert "41.7" in course[1].evidence and "worse" in course[1].evidence  # LR D alone: worse in the course

    t = _course_table().set_index("config")
    t.loc[ga.Z32, "fid"] = 20.0       # small latent best: claim 1 fails
    t.loc[ga.TTUR, "fid"] = 30.0      # TTUR worse than the base (28.3): claim 2 fails
    t.loc[ga.NC3, "fid"] = 10.0       # n_critic = 3 beats WGAN-GP: claim 3 fails
    assert [v.supported for v in ga.remark_8_11(t.reset_index())] == [False, False, False]

    t = _course_table().set_index("config")
    t.loc[ga.Z32, "fid"] = 90.0       # d = 32 much worse than the others, and
    t.loc[ga.Z256, "fid"] = 10.0      # the latent rows hold both extremes: not a "moderate" impact
    v = ga.remark_8_11(t.reset_index())[0]
    assert v.supported is False and "is the worst" in v.evidence and ">=" in v.evidence
    t.loc[ga.LR_D_UP, "fid"] = 200.0  # a larger spread elsewhere makes it moderate again
    t.loc[ga.TTUR, "fid"] = 1.0
    assert ga.remark_8_11(t.reset_index())[0].supported is True

    t = _course_table().set_index("config")
    t.loc[ga.NC5, "fid"] = math.nan   # a diverged WGAN-GP run decides nothing
    t.loc[ga.Z64, "fid"] = math.nan
    v = ga.remark_8_11(t.reset_index())
    assert (v[0].supported, v[1].supported, v[2].supported) == (None, True, None)
    assert "undecided" in ga.verdict_text(v) and "NOT supported" not in ga.verdict_text(v)


def test_a_diverged_run_is_recorded_not_raised(tmp_path, monkeypatch):
    """TrainingDiverged (as the loop raises it, after writing summary.json) gives a NaN row."""
    from profond.errors import TrainingDiverged

    c = ga.TABLE_8_1[5]

    def fake_run(out, name, overrides):
        d = out / "runs" / name
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({
            "status": "diverged", "steps": 37, "train_time_s": 1.5,
            "parameters": {"G": {"total": 10}, "D": {"total": 5}}}))
        raise TrainingDiverged("GAN collapse: the discriminator wins outright")

    monkeypatch.setattr(ga, "run_training", fake_run)
    r = ga.train_and_score(tmp_path, c, ga.QUICK, net=None, f_real=None)
    assert r["diverged"] is True and math.isnan(r["fid"]) and math.isnan(r["kid_mean"])
    assert r["status"].startswith("diverged at step 37") and "collapse" in r["status"]
    assert (r["params"], r["steps"], r["train_s"], r["samples"]) == (15, 37, 1.5, None)


# ------------------------------------------------------------------------------ quick run
@pytest.mark.slow  # table 8.1's quick runs, minutes of CI time; run with -m slow
@needs_fmnist
def test_quick_table(quick_out):
    t = pd.read_csv(quick_out / "table.csv")
    assert list(t["config"]) == [c.label for c in ga.TABLE_8_1]
    for col in COLUMNS:
        assert col in t.columns, col
    assert list(t["course_fid"]) == [c.course_fid for c in ga.TABLE_8_1]
    assert list(t["latent_dim"]) == [c.latent_dim for c in ga.TABLE_8_1]
    assert list(t["n_critic"]) == [c.n_critic for c in ga.TABLE_8_1]
    assert not t["diverged"].any() and (t["status"] == "completed").all()
    num = t[["fid", "kid_mean", "kid_std", "class_entropy", "params", "train_s"]].to_numpy(float)
    assert np.isfinite(num).all()
    assert (t["fid"] > 0).all() and (t["kid_std"] >= 0).all() and (t["params"] > 0).all()
    assert t["class_entropy"].between(0, 1).all() and t["missing_classes"].between(0, 10).all()
    rows = t.set_index("config")
    assert rows.loc[ga.BASE, "run"] == rows.loc[ga.NC1, "run"]
    assert rows.loc[ga.BASE, "fid"] == rows.loc[ga.NC1, "fid"]
    assert t["run"].nunique() == 9
    # the latent dim changes the generator's input layer: the parameter counts differ
    assert rows.loc[ga.Z32, "params"] < rows.loc[ga.BASE, "params"] < rows.loc[ga.Z256, "params"]
    assert "wasserstein" in rows.loc[ga.NC5, "loss"] and rows.loc[ga.NC5, "batch"] == 64
    # equal epochs: n_critic changes the G updates, not the D steps (same data, same batch)
    assert rows.loc[ga.NC3, "steps"] == rows.loc[ga.BASE, "steps"]


@pytest.mark.slow  # table 8.1's quick runs, minutes of CI time; run with -m slow
@needs_fmnist
def test_quick_runs_trained_their_configs(quick_out):
    """The resolved config.yaml and summary.json of each run folder hold the row's settings."""
    import yaml

    from profond.config import RunConfig
    from profond.train.optim import optimizer_cfg_for

    t = pd.read_csv(quick_out / "table.csv").set_index("config")
    for c in ga.TABLE_8_1:
        run = quick_out / "runs" / t.loc[c.label, "run"]
        raw = yaml.safe_load((run / "config.yaml").read_text())
        cfg = RunConfig.from_dict(raw)
        assert raw["model"]["latent_dim"] == c.latent_dim and raw["method"]["n_critic"] == c.n_critic
        assert raw["method"]["loss"] == c.loss and raw["model"]["d_norm"] == c.d_norm
        assert optimizer_cfg_for(cfg.optim, "G").lr == pytest.approx(c.lr_g)
        assert optimizer_cfg_for(cfg.optim, "D").lr == pytest.approx(c.lr_d)
        s = json.loads((run / "summary.json").read_text())
        assert s["status"] == "completed" and s["n_critic"] == c.n_critic and s["loss"] == c.loss
        assert s["parameters"]["G"]["total"] + s["parameters"]["D"]["total"] == t.loc[c.label, "params"]


@pytest.mark.slow  # table 8.1's quick runs, minutes of CI time; run with -m slow
@needs_fmnist
def test_quick_outputs(quick_out):
    for name in ("fid_bars.png", "fid_vs_latent.png", "samples.png"):
        data = (quick_out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    s = json.loads((quick_out / "summary.json").read_text())
    assert s["experiment"] == "gan-ablation" and s["quick"] is True and s["rows"] == 10 and s["runs"] == 9
    assert s["fid_samples"] == ga.QUICK.n_fid and s["feature_net"] == "fmnist"
    t = pd.read_csv(quick_out / "table.csv")
    # the verdicts in the notes are the ones the measured table gives
    expected = [v.supported for v in ga.remark_8_11(t)]
    assert [v["supported"] for v in s["remark_8_11"]["measured"]] == expected
    assert [v["supported"] for v in s["remark_8_11"]["course"]] == [True, True, True]
    assert "class entropy d=32" in s["remark_8_11"]["measured"][0]["evidence"]
    assert "entropy" not in s["remark_8_11"]["course"][0]["evidence"]  # the course printed none
    md = (quick_out / "table.md").read_text()
    assert "| config |" in md and "Remark 8.11 on the measured FIDs" in md
    assert f"{ga.QUICK.n_fid} samples" in md and "feature net" in md and "widths 8" in md
