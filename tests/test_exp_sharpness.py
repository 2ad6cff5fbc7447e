"""``sam-vs-sgd`` (exercise 11.6): the quick mode's table, claims and costs."""

from __future__ import annotations

import pandas as pd
import pytest

from .conftest import run_quick_experiment


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("sam-vs-sgd", tmp_path_factory)


def test_table_rows_costs_and_learning(out):
    t = pd.read_csv(out / "table.csv").set_index("optimizer")
    assert list(t.index) == ["sgd", "sgd-2x", "adam", "sam", "sam-scratch"]
    # SAM: two gradient passes per step, as many as SGD with twice the epochs
    assert t.loc["sam", "gradient_passes"] == 2 * t.loc["sgd", "gradient_passes"] == t.loc["sgd-2x", "gradient_passes"]
    assert t.loc["sam-scratch", "gradient_passes"] == t.loc["sam", "gradient_passes"]
    assert (t["test_accuracy"] > 0.8).all()  # 10 classes: chance is 0.1
    assert (t["sharpness"] > 0).all() and (t["hessian_trace"] > 0).all()  # near a minimum: positive curvature
    # the two bases follow the same rule: the same run up to float rounding
    assert abs(t.loc["sam", "train_loss"] - t.loc["sam-scratch", "train_loss"]) < 0.02
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5 and (out / "sam_vs_sgd.png").stat().st_size > 10_000


def test_claims_are_judged_from_the_table(out):
    notes = (out / "table.md").read_text()
    t = pd.read_csv(out / "table.csv").set_index("optimizer")
    flatter = "holds" if t.loc["sam", "sharpness"] < t.loc["sgd", "sharpness"] else "does not hold"
    assert f"vs SGD {t.loc['sgd', 'sharpness']:.3g} (Adam {t.loc['adam', 'sharpness']:.3g}): **{flatter}**" in notes
