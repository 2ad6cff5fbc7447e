"""The ``flow-toy`` experiment (issue 18) in quick mode: a RealNVP on 2-D points trained through
the one loop on each toy density (moons, rings, checkerboard) writes its table and one figure per
density, beats the best Gaussian's test NLL and has a density that integrates to 1; the
``flow-2d`` method behind it samples deterministically and refuses a non-vector model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.flows as fx  # registers the experiment
from profond.errors import ConfigError
from profond.methods.flow import toy_points
from tests.conftest import digits_cfg, run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("flow-toy", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "flow-toy" in EXPERIMENTS.names()


def test_table_figures_and_claims(out):
    table = pd.read_csv(out / "table.csv")
    assert list(table["density"]) == list(fx.DENSITIES)
    assert np.isfinite(table["test_nll"]).all()
    # exact likelihood: the flow beats the best single Gaussian on every density, by a margin
    assert (table["test_nll"] < table["gauss_nll"] - 0.2).all(), table
    assert ((table["integral"] - 1).abs() < 0.02).all(), table
    for d in fx.DENSITIES:
        data = (out / f"flow_{d}.png").read_bytes()
        assert data[:8] == PNG and len(data) > 5000
    s = json.loads((out / "summary.json").read_text())
    assert s["claims"] == {"flow_beats_gaussian": "holds", "density_integrates_to_1": "holds"}
    assert "holds" in (out / "table.md").read_text()


def test_samples_are_seeded_and_follow_the_data(out):
    from profond.train import load_run

    method, _ = load_run(out / "runs" / "flow-checkerboard", device="cpu")
    s = method.sample_points(2000, seed=1)
    assert s.shape == (2000, 2) and torch.equal(s, method.sample_points(2000, seed=1))
    # checkerboard: the data sit on the dark squares only; samples land there far more than the half
    # a density blind to the board would put there
    def on_dark(p):
        col = torch.floor((p[:, 0] + 4) / 2)
        row = torch.floor((p[:, 1] + 4) / 2)
        inside = (p.abs() < 4).all(1)
        return (inside & ((row - col) % 2 == 0)).float().mean().item()
    assert on_dark(toy_points("checkerboard", 2000, 5)) == 1.0
    assert on_dark(s) > 0.6, on_dark(s)


def test_gaussian_nll_is_that_of_the_fitted_gaussian():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 2)) * [1.0, 2.0]
    # differential entropy of N(0, diag(1, 4)): log(2πe · 2)
    assert fx.gaussian_nll(x, x) == pytest.approx(np.log(2 * np.pi * np.e * 2.0), abs=0.01)


def test_flow_2d_refuses_an_image_model(tmp_path):
    from profond.train import train

    with pytest.raises(ConfigError, match=r"model\.name=realnvp-2d"):
        train(digits_cfg(tmp_path, "method.name=flow-2d", "model.name=realnvp", "train.epochs=1"))
