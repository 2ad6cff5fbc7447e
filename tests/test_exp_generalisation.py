"""The ``random-labels`` experiment (issue 19, Zhang et al. 2017) in quick mode: through the one
loop, an MLP and a CNN fit every corrupted training split (true labels, random labels, shuffled /
random pixels, Gaussian images) to the stop threshold; random labels take longer and test at
chance, true labels generalise, and the parameter count is the same for every row of a model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import profond.experiments.generalisation as gx  # registers the experiment
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("random-labels", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "random-labels" in EXPERIMENTS.names()


def test_every_net_fits_every_corruption(out):
    t = pd.read_csv(out / "table.csv")
    assert len(t) == 10 and set(t["corruption"]) == set(gx.CORRUPTIONS) and set(t["model"]) == {"mlp", "cnn"}
    assert t["fitted"].all() and (t["train_acc"] >= gx.FIT).all(), t
    assert (t["epochs_run"] == t["epochs_to_fit"]).all()  # the monitor stopped each run when fitted


def test_true_labels_generalise_random_ones_do_not(out):
    t = pd.read_csv(out / "table.csv").set_index(["model", "corruption"])
    for m in ("mlp", "cnn"):
        assert t.loc[(m, "none"), "test_acc"] > 0.9
        assert abs(t.loc[(m, "random-labels"), "test_acc"] - 0.1) < 0.07
        assert t.loc[(m, "random-labels"), "steps_to_fit"] > 2 * t.loc[(m, "none"), "steps_to_fit"]
        # the fixed permutation keeps the information: the permuted test set is learnt, the clean one not
        assert t.loc[(m, "shuffled-pixels"), "test_acc_permuted"] > 0.85
        assert t.loc[(m, "shuffled-pixels"), "test_acc"] < 0.4
        assert np.isnan(t.loc[(m, "none"), "test_acc_permuted"])
        # the capacity measure of the architecture cannot separate the rows
        assert t.xs(m, level="model")["params"].nunique() == 1


def test_claims_figure_and_notes(out):
    s = json.loads((out / "summary.json").read_text())
    assert s["claims"] == {"both_nets_fit_random_labels": "holds", "random_labels_take_longer_to_fit": "holds",
                           "random_labels_test_acc_at_chance": "holds"}
    data = (out / "random_labels_train_acc.png").read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    assert "**holds**" in (out / "table.md").read_text()
