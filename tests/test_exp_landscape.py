"""The ``loss-landscape`` experiment (issue 19, course §11.8) in quick mode: the 1-D paths start
at the captured initialisation and end at the trained net (losses recomputed here with a plain
forward pass), the captured init is the one the loop's seed builds, the filter-normalised
directions have the solution's per-filter norms, the figures are written and every claim is
judged."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import profond.experiments.landscape as lx  # registers the experiment
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("loss-landscape", tmp_path_factory)


def _reopen(out, name):
    from profond.train import load_run

    method, _ = load_run(out / "runs" / name, device="cpu")
    method._build_loaders()
    return method, lx.tensors(method.train_data)


def test_registered():
    from profond.registry import EXPERIMENTS

    assert "loss-landscape" in EXPERIMENTS.names()


def test_table_figures_and_claims(out):
    table = pd.read_csv(out / "table.csv")
    assert list(zip(table["model"], table["seed"], strict=True)) == [
        ("plain", 0), ("plain", 1), ("residual", 0), ("residual", 1)]
    assert list(table["skip"]) == [False, False, True, True]
    # the nets learned something: far above chance (10 classes), far below the initial loss
    assert (table["test_accuracy"] > 0.8).all(), table
    assert (table["train_loss"] < 0.5 * table["init_loss"]).all(), table
    assert (table["sharpness"] > 0).all() and np.isfinite(table["barrier"]).all()
    for f in ("interpolation.png", "contour.png"):
        assert (out / f).read_bytes()[:8] == PNG
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["claims"]) == 3
    assert set(summary["claims"].values()) <= {"holds", "does not hold"}
    grid = pd.read_csv(out / "contour.csv")
    assert len(grid) == 2 * lx.QUICK.grid ** 2
    centre = grid[(grid["a"].abs() < 1e-9) & (grid["b"].abs() < 1e-9)].set_index("model")["train_loss"]
    t0 = table[table["seed"] == 0].set_index("model")["train_loss"]
    assert np.allclose(centre[t0.index], t0, atol=1e-4)  # the grid's centre is the solution


@pytest.mark.parametrize("name", ["plain-seed0", "residual-seed1"])
def test_path_ends_are_the_init_and_the_trained_net(out, name):
    kind, seed = name.split("-seed")
    curves = pd.read_csv(out / "interpolation.csv")
    path = curves[(curves["model"] == kind) & (curves["seed"] == int(seed)) & (curves["path"] == "init->solution")]
    at = path.set_index("alpha")["train_loss"]
    method, (x, y) = _reopen(out, name)
    net = method.nets["model"].eval()
    with torch.no_grad():
        trained = F.cross_entropy(net(x), y).item()
        net.load_state_dict(torch.load(out / f"init_{name}.pt"))
        init = F.cross_entropy(net(x), y).item()
    assert at[0.0] == pytest.approx(init, abs=1e-5)
    assert at[1.0] == pytest.approx(trained, abs=1e-5)
    assert init > 2.0 > 1.0 > trained  # ≈ log 10 at the init; training moved the weights
    # and the seed-0 -> seed-1 path starts at the seed-0 solution
    pair = curves[(curves["model"] == kind) & (curves["path"] == "seed0->seed1")].set_index("alpha")["train_loss"]
    if seed == "0":
        assert pair[0.0] == pytest.approx(trained, abs=1e-5)


def test_captured_init_is_the_seeded_build(out):
    """The callback's copy is the loop's own initialisation: the same seed rebuilds it exactly,
    and another seed does not."""
    from profond.registry import MODELS
    from profond.train.loop import seed_everything

    init = torch.load(out / "init_plain-seed1.pt")
    for seed, same in ((1, True), (0, False)):
        seed_everything(seed)
        net = MODELS.build("mlp", in_shape=(1, 8, 8), num_classes=10, widths=[lx.QUICK.mlp_width] * 6)
        equal = all(torch.equal(v, init[k]) for k, v in net.state_dict().items())
        assert equal is same


def test_filter_normalized_direction():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    params = {k: v.detach() * (1 + torch.rand(())) for k, v in net.named_parameters()}
    g = torch.Generator().manual_seed(3)
    d = lx.filter_normalized_direction(params, g)
    d2 = lx.filter_normalized_direction(params, g)
    for k, p in params.items():
        assert d[k].shape == p.shape
        if p.dim() > 1:  # conv kernel: 4 output channels; linear weight: 5 rows
            assert torch.allclose(lx.filter_norms(d[k]), lx.filter_norms(p), rtol=1e-5)
            assert len(lx.filter_norms(p)) == p.shape[0]
            assert not torch.allclose(d[k], d2[k])  # a fresh random direction each call
            assert not torch.allclose(d[k], p)
        else:  # biases and BatchNorm weight / bias
            assert torch.count_nonzero(d[k]) == 0


def test_interpolate_and_path_stats():
    a = {"w": torch.tensor([0.0, 2.0]), "bn.running_var": torch.tensor([1.0]),
         "bn.num_batches_tracked": torch.tensor(7)}
    b = {"w": torch.tensor([4.0, 2.0]), "bn.running_var": torch.tensor([9.0]),
         "bn.num_batches_tracked": torch.tensor(3)}
    mid = lx.interpolate(a, b, 0.25)
    assert torch.equal(mid["w"], torch.tensor([1.0, 2.0])) and mid["bn.running_var"].item() == 3.0
    assert mid["bn.num_batches_tracked"].item() == 7
    assert lx.interpolate(a, b, -0.25)["bn.running_var"].item() == 0.0  # -1 clamped
    alphas = np.linspace(-0.25, 1.25, 13)
    bump = [{"alpha": float(t), "train_loss": 1.0 + 2 * t * (1 - t)} for t in alphas]  # peak 1.5 at 0.5
    s = lx.path_stats(bump)
    assert s["barrier"] == pytest.approx(0.5) and s["loss_alpha05"] == pytest.approx(1.5)
    assert not s["monotone"] and s["start_loss"] == pytest.approx(1.0)
    down = [{"alpha": float(t), "train_loss": 2.0 - t} for t in alphas]
    s = lx.path_stats(down)
    assert s["monotone"] and s["max_rise"] == 0.0 and s["barrier"] == 0.0
