"""The ``information-plane`` experiment (issue 19) in quick mode: two 12-10-7-5-4-3 MLPs (tanh,
ReLU) trained on the digits through the one loop, every hidden layer recorded each epoch; the
table has one row per (activation, estimator, layer) with values inside their information
bounds, the curves cover every epoch, and the figure is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import profond.experiments.information as ix  # registers the experiment
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"
ESTIMATORS = [*(f"binning B={b}" for b in ix.BINS), f"KDE σ²={ix.NOISE_VAR:g}"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("information-plane", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "information-plane" in EXPERIMENTS.names()


def test_table_structure_and_bounds(out):
    table = pd.read_csv(out / "table.csv")
    s = json.loads((out / "summary.json").read_text())
    n = ix.QUICK.measured
    assert s["H_X"] <= math.log2(n) + 1e-9 and s["H_X"] > math.log2(n) - 0.1  # (nearly) distinct inputs
    assert s["H_Y"] == pytest.approx(math.log2(10), abs=0.01)
    assert len(table) == len(ix.ACTIVATIONS) * len(ESTIMATORS) * len(ix.WIDTHS)
    assert set(table["activation"]) == set(ix.ACTIVATIONS) and set(table["estimator"]) == set(ESTIMATORS)
    for (_act, _est), g in table.groupby(["activation", "estimator"]):
        assert list(g["layer"]) == list(range(1, len(ix.WIDTHS) + 1))
        assert list(g["width"]) == list(ix.WIDTHS)
    for col in ("max_I_XT", "final_I_XT"):
        assert ((table[col] >= -1e-9) & (table[col] <= s["H_X"] + 1e-6)).all(), table[col]
    assert (table["final_I_XT"] <= table["max_I_XT"] + 1e-12).all()
    assert (table["final_I_TY"] <= s["H_Y"] + 1e-6).all()
    assert table["epoch_of_max"].between(0, ix.QUICK.epochs).all()
    assert (table["compressed"] == (table["compression"] > ix.COMPRESSION_BITS)).all()
    # a 3-unit last layer cannot carry all of X: data processing, measured by binning at B = 30
    b30 = table[table["estimator"] == "binning B=30"]
    for act in ix.ACTIVATIONS:
        per_layer = b30[b30["activation"] == act].set_index("layer")["final_I_XT"]
        assert per_layer[6] < per_layer[1] - 1, per_layer
    # claims: one verdict per (activation, estimator), and the notes state the B-dependence
    assert set(s["claims"]) == {f"compression_{a}_{e}" for a in ix.ACTIVATIONS
                                for e in [*(f"binning{b}" for b in ix.BINS), "kde"]}
    assert set(s["claims"].values()) <= {"holds", "does not hold"}
    notes = (out / "table.md").read_text()
    for act in ix.ACTIVATIONS:
        per_b = {s["claims"][f"compression_{act}_binning{b}"] for b in ix.BINS}
        said = "depends on the number of bins B" if len(per_b) > 1 else "same for every B"
        assert f"compression phase appear for {act}?" in notes
        line = next(ln for ln in notes.splitlines() if f"appear for {act}?" in ln)
        assert said in line


def test_curves_cover_every_epoch(out):
    for act in ix.ACTIVATIONS:
        c = pd.read_csv(out / f"curves_{act}.csv")
        b = c[c["estimator"].str.startswith("binning")]
        # epoch 0 (before training) and after each epoch, for every layer and bin count
        assert sorted(b["epoch"].unique()) == list(range(ix.QUICK.epochs + 1))
        assert len(b) == (ix.QUICK.epochs + 1) * len(ix.WIDTHS) * len(ix.BINS)
        # binning: I(T;Y) <= min(H(Y), I(X;T)) at every point
        assert (b["I_TY"] <= b["I_XT"] + 1e-9).all() and (b["I_TY"] >= -1e-9).all()
        kde = c[c["estimator"].str.startswith("KDE")]
        assert kde["epoch"].max() == ix.QUICK.epochs and 0 in set(kde["epoch"])
        assert np.isfinite(c[["I_XT", "I_TY"]].to_numpy()).all()
        # training moved the representation: the last layer's binned I(X;T) changed
        last = b[(b["layer"] == 6) & (b["estimator"] == "binning B=30")].sort_values("epoch")["I_XT"]
        assert abs(last.iloc[-1] - last.iloc[0]) > 0.1


def test_figure_written(out):
    data = (out / "information_plane.png").read_bytes()
    assert data[:8] == PNG and len(data) > 20_000
    assert json.loads((out / "summary.json").read_text())["figures"][0].endswith("information_plane.png")
