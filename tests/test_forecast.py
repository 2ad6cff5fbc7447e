"""Time-series forecasting (profond.methods.forecast, exercise 5.3): a tiny real run on the
weekly CO2 series, its metrics recomputed by hand, the recursive / teacher-forced / direct
strategies, the forecast plot and the option checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from profond.config import resolve
from profond.errors import ConfigError
from profond.methods.forecast import PLOT_FILE
from profond.train import train
from profond.train.loop import load_run

pytest.importorskip("statsmodels")

BASE = ["model.name=rnn-forecaster", "data.name=co2", "method.name=forecaster", "model.hidden_size=16",
        "data.batch_size=32", "optim.lr=0.01", "train.epochs=2", "train.threads=1", "train.quiet=true",
        "train.device=cpu"]


def _cfg(out: Path, *extra: str):
    return resolve(overrides=[*BASE, f"out={out}", "name=run", *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.set_num_threads(1)
    return train(_cfg(tmp_path_factory.mktemp("fc")))


@pytest.fixture(scope="module")
def loaded(run):
    return load_run(run.run_dir, device="cpu")


def _final(run) -> dict:
    return run.summary["final"] if hasattr(run, "summary") else run["final"]


def test_tiny_run_beats_seasonal_naive_and_persistence(run):
    f = _final(run)
    # measured: test MASE 0.31 vs seasonal naive 1.35 and persistence 0.32 (2 epochs, 4 s)
    assert f["test_mase"] < 0.5 * f["test_naive_mase"]
    assert f["test_rmse"] < 0.5 * f["test_naive_rmse"]
    assert f["test_mase"] < 1.1 * f["test_persist_mase"]
    # teacher forcing (true values fed in) is a lower bound for the autoregressive 7 steps
    assert f["test_tf_mase_7"] < f["test_mase_7"] < f["test_naive_mase_7"]
    assert (Path(run.run_dir) / PLOT_FILE).stat().st_size > 1000


def test_metrics_recomputed_by_hand(loaded):
    method, trainer = loaded
    method.eval()
    d = method.data
    w = d.windows("test", input_len=30, horizon=1)
    model = method.raw_nets.get("model", method.nets["model"])
    with torch.no_grad():
        last = w.x[:, -1:, 0]
        pred = (model(w.x - last.unsqueeze(1))[:, :1] + last)[:, 0]
    true = d.denormalize(w.y[:, 0].double())
    p_units = d.denormalize(pred.double())
    rmse = float((p_units - true).pow(2).mean().sqrt())
    scale = d.mase_scale(normalized=False)
    mase = float((p_units - true).abs().mean()) / scale
    naive = d.denormalize(d.seasonal_naive(w)[:, 0].double())
    out = trainer.evaluate(method.test_data())
    assert out["rmse"] == pytest.approx(rmse, rel=1e-4)
    assert out["mase"] == pytest.approx(mase, rel=1e-4)
    assert out["naive_rmse"] == pytest.approx(float((naive - true).pow(2).mean().sqrt()), rel=1e-4)
    assert out["naive_mase"] == pytest.approx(float((naive - true).abs().mean()) / scale, rel=1e-4)
    assert torch.allclose(method.one_step(w.x), pred, atol=1e-6)


def test_recursive_is_model_recursive_and_teacher_forcing_is_one_step(loaded):
    method, _ = loaded
    method.eval()
    w = method.data.windows("test", input_len=30, horizon=7)
    x, y = w.x[:50], w.y[:50]
    model = method.raw_nets.get("model", method.nets["model"])
    last = x[:, -1:, 0]
    with torch.no_grad():
        expected = model.recursive(x - last.unsqueeze(1), 7) + last
    got = method.multi_step(x, 7, "recursive")
    assert got.shape == (50, 7)
    assert torch.allclose(got, expected, atol=1e-6)
    # teacher forcing, step h = one-step forecast from the true window ending before target h
    series = torch.from_numpy(method.data.normalized).float()
    t0 = w.target_index[:50]
    tf = method.teacher_forced(x, y)
    for h in (0, 3, 6):
        win = torch.stack([series[t + h - 30:t + h] for t in t0.tolist()]).unsqueeze(-1)
        assert torch.allclose(tf[:, h], method.one_step(win), atol=1e-5)
    # without centring the method is the plain model
    method.opts.center = False
    try:
        with torch.no_grad():
            assert torch.allclose(method.multi_step(x, 7), model.recursive(x, 7), atol=1e-6)
    finally:
        method.opts.center = True


def test_direct_strategy_runs(tmp_path):
    t = time.perf_counter()
    r = train(_cfg(tmp_path, "method.strategy=direct", "model.horizon=7", "train.epochs=1",
                   "method.plot_forecasts=0"))
    f = _final(r)
    assert {"test_rmse_7", "test_tf_rmse_7", "test_naive_rmse_7"} <= set(f)
    assert not (Path(r.run_dir) / PLOT_FILE).exists()
    assert time.perf_counter() - t < 15


@pytest.mark.parametrize("extra", [
    ["method.strategy=beam"],
    ["method.strategy=direct"],  # model.horizon=1 != eval_horizon=7
    ["method.input_len=0"],
    ["method.eval_horizon=0"],
    ["method.plot_forecasts=-1"],
    ["data.name=fortune-chars"],
])
def test_bad_options_raise_config_error(tmp_path, extra):
    with pytest.raises(ConfigError):
        train(_cfg(tmp_path, *extra))
