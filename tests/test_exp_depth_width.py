"""The ``depth-width`` experiment (issue 19, course §11.6.2, exercise 11.4): the tent map as an exact
depth-2 width-2 ReLU net, g∘k as k hidden layers of width 2 with 2^k pieces (counted on a grid),
the one-hidden-layer interpolant with 2^k units, and the quick run's table and judged claims."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.depth_width as dw  # registers the experiment
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"
GRID = np.linspace(0.0, 1.0, 2**12 + 1)


def net_values(net, x):
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float64)[:, None])[:, 0].numpy()


def test_tent_is_an_exact_width_2_net():
    net = dw.sawtooth_network(1)
    assert [m.weight.shape for m in net if isinstance(m, torch.nn.Linear)] == [(2, 1), (1, 2)]
    x = np.concatenate([GRID, np.random.default_rng(0).random(10_000)])
    # ReLU(2x) − 2 ReLU(2x − 1) against 2 min(x, 1 − x): bit for bit
    assert np.array_equal(net_values(net, x), 2 * np.minimum(x, 1 - x))


@pytest.mark.parametrize("k", range(1, 7))
def test_composition_has_2_to_the_k_pieces(k):
    deep = dw.sawtooth_network(k)
    assert sum(isinstance(m, torch.nn.ReLU) for m in deep) == k
    assert all(m.out_features == 2 for m in deep if isinstance(m, torch.nn.Linear) and m.out_features != 1)
    x = np.concatenate([GRID, np.random.default_rng(k).random(5_000)])
    assert np.array_equal(net_values(deep, x), dw.sawtooth(x, k))
    assert dw.count_pieces(GRID, net_values(deep, GRID)) == 2**k
    shallow = dw.shallow_sawtooth_network(k)
    assert shallow[0].out_features == 2**k
    assert np.abs(net_values(shallow, GRID) - dw.sawtooth(GRID, k)).max() < 1e-12
    assert dw.count_pieces(GRID, net_values(shallow, GRID)) == 2**k


def test_count_pieces_on_known_functions():
    x = np.linspace(0.0, 1.0, 1001)
    assert dw.count_pieces(x, 3 * x + 1) == 1
    # kinks between grid points (0.3004, 0.7)
    f = np.maximum(x - 0.3004, 0) - 2 * np.maximum(x - 0.7, 0)
    assert dw.count_pieces(x, f) == 3
    assert dw.count_pieces(x, np.abs(x - 0.5)) == 2


def test_parameter_count_and_readout():
    assert dw.n_params([2]) == 7 and dw.n_params([2, 2]) == 13 and dw.n_params([64]) == 193
    x = torch.linspace(0, 1, 101, dtype=torch.float64)[:, None]
    phi = torch.relu(x - 0.5)
    y = 3 * phi + 1
    assert torch.allclose(dw._readout(phi, y), y, atol=1e-9)
    g = torch.Generator().manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(dw.perturbed_construction(3, 0.0, g).parameters(),
                                                  dw.sawtooth_network(3)[:-1].parameters(), strict=True))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("depth-width", tmp_path_factory)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "depth-width" in EXPERIMENTS.names()


def test_table_and_claims(out):
    t = pd.read_csv(out / "table.csv")
    assert set(t["k"]) == set(dw.QUICK.ks) and len(t) == 7 * len(dw.QUICK.ks)
    shallow = t[t["kind"] == "shallow"]
    assert (shallow["params"] == 3 * shallow["width"] + 1).all()
    # fewer than 2^k − 1 units cannot represent g∘k: far from it (the variance of g∘k is 1/12)
    small = shallow[shallow["units"] < 2 ** shallow["k"] - 1]
    assert len(small) == 2 and (small["mse_floor"] > 0.02).all(), small
    # four times 2^k units, trained: g∘k to 1e-6 with all its pieces
    big = shallow[shallow["width"] == 4 * 2 ** shallow["k"]]
    assert (big["mse_floor"] < 1e-6).all() and (big["pieces_fit"] >= 2 ** big["k"]).all(), big
    s = json.loads((out / "summary.json").read_text())
    assert s["claims"]["g_k_has_2k_pieces_and_deep_width2_is_exact"] == "holds"
    assert s["claims"]["shallow_below_2k_units_fail"] == "holds"
    assert set(s["claims"]) == {"g_k_has_2k_pieces_and_deep_width2_is_exact", "shallow_below_2k_units_fail",
                                "trained_deep_narrow_fit_from_random_start", "perturbed_construction_trains_back"}
    assert [r["pieces_deep"] for r in s["exact"]] == [2**k for k in range(1, dw.QUICK.max_k_exact + 1)]
    data = (out / "depth_width_fits.png").read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    assert "**holds**" in (out / "table.md").read_text()
