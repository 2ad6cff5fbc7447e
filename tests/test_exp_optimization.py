"""The ``optimizers`` (course §2.8, exercise 2.4) and ``schedules`` (course §2.5) experiments:
``--quick`` writes its table and figure, and the numbers say what the course says."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import profond.experiments.optimization as opt_exp  # registers the two experiments
from tests.conftest import needs_fmnist, run_quick_experiment

CHANCE = 0.1  # ten Fashion-MNIST classes


@pytest.fixture(scope="module")
def optimizers_out(tmp_path_factory):
    return run_quick_experiment("optimizers", tmp_path_factory)


@pytest.fixture(scope="module")
def schedules_out(tmp_path_factory):
    return run_quick_experiment("schedules", tmp_path_factory)


def test_both_experiments_are_registered():
    from profond.registry import EXPERIMENTS

    assert {"optimizers", "schedules"} <= set(EXPERIMENTS.names())


# ------------------------------------------------------------------------------ optimizers
@pytest.mark.slow  # optimizers --quick on Fashion-MNIST, minutes of CI time; run with -m slow
@needs_fmnist
def test_optimizers_quick_writes_outputs(optimizers_out):
    table = pd.read_csv(optimizers_out / "table.csv")
    expected = {(o, lr) for o in opt_exp.OPTIMIZERS for lr in opt_exp.LR_GRID_QUICK}
    assert {(r.optimizer, r.lr) for r in table.itertuples()} == expected
    assert len(table) == len(expected)  # one row per (optimizer, lr), no duplicates
    assert set(table.columns) >= {"optimizer", "lr", "train_loss", "val_accuracy", "test_accuracy", "wall_s"}
    assert (optimizers_out / "optimizers.png").stat().st_size > 10_000
    assert "| optimizer | lr |" in (optimizers_out / "table.md").read_text()
    summary = json.loads((optimizers_out / "summary.json").read_text())
    assert summary["rows"] == len(expected) and summary["quick"] is True
    assert set(summary["best_lr"]) == set(opt_exp.OPTIMIZERS)


@needs_fmnist
def test_adam_beats_plain_sgd_at_small_lr(optimizers_out):
    """Course §2.8: Adam converges faster than SGD without momentum (clearest at lr 1e-3)."""
    t = pd.read_csv(optimizers_out / "table.csv").set_index(["optimizer", "lr"])
    assert t.loc[("Adam", 1e-3), "train_loss"] < t.loc[("SGD", 1e-3), "train_loss"] - 0.3
    assert t.loc[("AdamW", 1e-3), "train_loss"] < t.loc[("SGD", 1e-3), "train_loss"] - 0.3
    # momentum 0.9 is ~10x the effective step of plain SGD: it helps at the same small lr
    assert t.loc[("SGD+Momentum", 1e-3), "train_loss"] < t.loc[("SGD", 1e-3), "train_loss"]


@needs_fmnist
def test_every_run_beats_chance_at_good_lrs(optimizers_out):
    t = pd.read_csv(optimizers_out / "table.csv")
    good = t[t.lr <= 1e-2]  # 1e-1 is too large for the adaptive methods (still trains, less well)
    assert (good["val_accuracy"] > 2 * CHANCE).all(), good
    assert (good["test_accuracy"] > 2 * CHANCE).all(), good
    assert np.isfinite(t["train_loss"]).all()
    # each optimizer's best run is well above chance
    assert (t.groupby("optimizer")["val_accuracy"].max() > 0.6).all()


# ------------------------------------------------------------------------------ schedules
def test_schedule_curves_match_their_definitions():
    """LR curve endpoints per course §2.5 (runs the real schedulers, no training)."""
    spe, epochs, lr = 16, opt_exp._budget(True)["epochs"], 1e-3
    curves = opt_exp.schedule_curves(True, spe, base_lr=lr)
    assert list(curves) == opt_exp.SCHEDULE_NAMES
    total = spe * epochs
    for name, c in curves.items():
        assert len(c) == total, name
    c = np.array(curves["constant"])
    assert np.allclose(c, lr)
    # step (§2.5.1): piecewise constant, eta_0 then eta_0 * gamma after step_epochs
    c = np.array(curves["step"])
    values = np.unique(np.round(c / lr, 12))
    assert np.allclose(sorted(values), [0.1, 1.0])
    assert np.all(np.diff(c) <= 0) and np.count_nonzero(np.diff(c)) == 1
    assert c[0] == pytest.approx(lr) and c[-1] == pytest.approx(0.1 * lr)
    # cosine (§2.5.2): starts at eta_0, decreases monotonically, ends near 0
    c = np.array(curves["cosine"])
    assert c[0] == pytest.approx(lr) and c[-1] < 0.01 * lr and np.all(np.diff(c) <= 1e-15)
    # warmup-cosine (§2.5.3): rises linearly from ~0 to eta_0, then decays to near 0
    c = np.array(curves["warmup-cosine"])
    peak = int(np.argmax(c))
    assert c[0] < 0.2 * lr and c[peak] == pytest.approx(lr) and 0 < peak < total // 2
    assert np.allclose(np.diff(c[: peak + 1]), c[0])  # linear warm-up: constant increments
    assert c[-1] < 0.01 * lr
    # onecycle: starts low (max_lr / 25), peaks at max_lr after ~30 % of the steps, ends ~0
    c = np.array(curves["onecycle"])
    peak = int(np.argmax(c))
    assert c[0] == pytest.approx(lr / 25) and c[peak] == pytest.approx(lr, rel=1e-3)
    assert abs(peak - 0.3 * total) <= 2
    assert c[-1] == pytest.approx(lr / 25 / 1e4)


@needs_fmnist
def test_schedules_quick_writes_outputs_and_all_train(schedules_out):
    table = pd.read_csv(schedules_out / "table.csv")
    assert list(table["schedule"]) == opt_exp.SCHEDULE_NAMES
    assert (table["test_accuracy"] > 0.5).all(), table
    assert (table["val_accuracy"] > 0.5).all(), table
    assert (schedules_out / "schedules.png").stat().st_size > 10_000
    assert "| schedule |" in (schedules_out / "table.md").read_text()
    # the runs' final LR agrees with the schedule's definition
    final = table.set_index("schedule")["final_lr"]
    assert final["constant"] == pytest.approx(1e-3)
    assert final["step"] == pytest.approx(1e-3 * 0.1 ** 2)  # 2 epochs, /10 after each epoch
    assert final["cosine"] < 1e-6 and final["warmup-cosine"] < 1e-6 and final["onecycle"] < 1e-8
    curves = pd.read_csv(schedules_out / "lr_curves.csv")
    assert list(curves.columns) == ["iteration", *opt_exp.SCHEDULE_NAMES]
    spe = json.loads((schedules_out / "summary.json").read_text())["steps_per_epoch"]
    assert len(curves) == spe * 2
