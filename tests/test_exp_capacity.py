"""The ``width-depth`` (course §1.7, exercise 1.4) and ``dropout-wd`` (course §3.11)
experiments: ``--quick`` writes its tables and figure, one row per grid point, and the
parameter counts are those of the real models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import profond.experiments.capacity as cap_exp  # registers the two experiments
from profond.registry import MODELS
from tests.conftest import needs_fmnist, run_quick_experiment

CHANCE = 0.1  # ten Fashion-MNIST classes


@pytest.fixture(scope="module")
def width_depth_out(tmp_path_factory):
    return run_quick_experiment("width-depth", tmp_path_factory)


@pytest.fixture(scope="module")
def dropout_wd_out(tmp_path_factory):
    return run_quick_experiment("dropout-wd", tmp_path_factory)


def _real_params(widths: list[int], **kwargs) -> int:
    return sum(p.numel() for p in MODELS.build("mlp", widths=widths, **kwargs).parameters())


def test_both_experiments_are_registered():
    from profond.registry import EXPERIMENTS

    assert {"width-depth", "dropout-wd"} <= set(EXPERIMENTS.names())


def test_grids_are_the_course_ones():
    assert cap_exp.DEPTHS == [1, 2, 3, 4, 5, 6]  # exercise 1.4: 1 to 6 layers
    assert cap_exp.WIDTHS == [32, 64, 128, 256, 512]  # exercise 1.4: width 32 to 512
    assert cap_exp.DROPOUTS == [0.0, 0.1, 0.3, 0.5, 0.7]  # the §3.11 listing
    assert cap_exp.WEIGHT_DECAYS == [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
    assert set(cap_exp.DEPTHS_QUICK) <= set(cap_exp.DEPTHS)
    assert set(cap_exp.WIDTHS_QUICK) <= set(cap_exp.WIDTHS)
    assert cap_exp._budget(False)["epochs"] == 5 and cap_exp._budget(True)["epochs"] == 1


def test_param_count_matches_formula_and_course():
    """§1.2.2: sum of n_l (n_{l-1} + 1); the course's 784-256-128-10 net has 235,146."""
    assert _real_params([256, 128]) == 235_146
    for depth in cap_exp.DEPTHS:
        for width in cap_exp.WIDTHS:
            sizes = [784] + [width] * depth + [10]
            formula = sum(n * (m + 1) for m, n in zip(sizes[:-1], sizes[1:], strict=True))
            assert cap_exp.param_count(depth, width) == formula == _real_params([width] * depth)


# ------------------------------------------------------------------------------ width-depth
@needs_fmnist
def test_width_depth_quick_writes_outputs(width_depth_out):
    table = pd.read_csv(width_depth_out / "table.csv")
    expected = {(d, w) for d in cap_exp.DEPTHS_QUICK for w in cap_exp.WIDTHS_QUICK}
    assert {(r.depth, r.width) for r in table.itertuples()} == expected
    assert len(table) == len(expected)  # one row per grid point, no duplicates
    assert set(table.columns) >= {"depth", "width", "params", "val_accuracy", "test_accuracy", "wall_s"}
    assert (width_depth_out / "width_depth.png").stat().st_size > 10_000
    assert "| depth | width | params |" in (width_depth_out / "table.md").read_text()
    summary = json.loads((width_depth_out / "summary.json").read_text())
    assert summary["rows"] == len(expected) and summary["quick"] is True


@needs_fmnist
def test_width_depth_params_are_the_real_counts(width_depth_out):
    table = pd.read_csv(width_depth_out / "table.csv")
    for r in table.itertuples():
        assert r.params == _real_params([int(r.width)] * int(r.depth)), r
    # at fixed depth, wider nets have more parameters
    for _, g in table.groupby("depth"):
        g = g.sort_values("width")
        assert np.all(np.diff(g["params"].to_numpy()) > 0), g


@needs_fmnist
def test_width_depth_accuracies_beat_chance(width_depth_out):
    t = pd.read_csv(width_depth_out / "table.csv")
    assert (t["val_accuracy"] > 3 * CHANCE).all(), t
    assert (t["test_accuracy"] > 3 * CHANCE).all(), t
    assert np.isfinite(t["train_loss"]).all()


# ------------------------------------------------------------------------------ dropout-wd
@needs_fmnist
def test_dropout_wd_quick_writes_outputs(dropout_wd_out):
    table = pd.read_csv(dropout_wd_out / "table.csv")
    expected = {(d, w) for d in cap_exp.DROPOUTS_QUICK for w in cap_exp.WEIGHT_DECAYS_QUICK}
    assert {(r.dropout, r.weight_decay) for r in table.itertuples()} == expected
    assert len(table) == len(expected)
    assert (dropout_wd_out / "dropout_wd.png").stat().st_size > 10_000
    md = (dropout_wd_out / "table.md").read_text()
    assert "| dropout | weight_decay |" in md
    assert "| dropout | wd=0 | wd=0.01 |" in md  # the course's layout, appended
    # pivot: rows dropout, columns weight decay, cells = the long table's test accuracy
    pivot = pd.read_csv(dropout_wd_out / "pivot.csv", index_col=0)
    assert list(pivot.index) == cap_exp.DROPOUTS_QUICK
    assert [float(c) for c in pivot.columns] == cap_exp.WEIGHT_DECAYS_QUICK
    for r in table.itertuples():
        assert pivot.loc[r.dropout, str(r.weight_decay)] == pytest.approx(r.test_accuracy)
    summary = json.loads((dropout_wd_out / "summary.json").read_text())
    assert summary["rows"] == len(expected) and summary["widths"] == [256, 128]


@needs_fmnist
def test_dropout_wd_accuracies_beat_chance(dropout_wd_out):
    t = pd.read_csv(dropout_wd_out / "table.csv")
    assert (t["val_accuracy"] > 3 * CHANCE).all(), t
    assert (t["test_accuracy"] > 3 * CHANCE).all(), t
    # dropout is really applied: the runs with and without it differ
    by_dr = t.groupby("dropout")["train_loss"].mean()
    assert by_dr[0.5] != pytest.approx(by_dr[0.0])
