"""Chapter 5 memory experiments: gradient flow (exercise 5.2, bound eq. 5.7) and the copy
task (exercise 5.4). Quick modes run once per module; small unit checks of the pieces."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.rnn_memory as rm
from profond.nn.rnn import Recurrent
from tests.conftest import run_quick_experiment


@pytest.fixture(scope="module")
def gradient_flow(tmp_path_factory):
    out = run_quick_experiment("gradient-flow", tmp_path_factory)
    return out, pd.read_csv(out / "table.csv")


@pytest.fixture(scope="module")
def memory_length(tmp_path_factory):
    out = run_quick_experiment("memory-length", tmp_path_factory)
    return out, pd.read_csv(out / "table.csv")


def test_gradient_flow_table_and_figure(gradient_flow):
    out, t = gradient_flow
    assert (out / "gradient_flow.png").stat().st_size > 0
    assert len(t) == len(rm.KINDS) * len(rm.GF_INITS)
    assert set(t["model"]) == set(rm.KINDS)
    cols = [f"norm_lag{lag}" for lag in rm.GF_LAGS] + ["rate_per_step", "sigma_max_W_h"]
    assert set(cols) <= set(t.columns)
    assert np.isfinite(t[cols].to_numpy()).all() and (t[cols].to_numpy() > 0).all()
    # the norm decays with the lag for every model (untrained, random inputs)
    assert (t["norm_lag50"] < t["norm_lag10"]).all() and (t["norm_lag10"] < t["norm_lag1"]).all()
    # orthogonal W_hh has every singular value = gain = 1
    orth = t[t["init"] == "orthogonal g=1"]
    assert np.allclose(orth["sigma_max_W_h"], 1.0, atol=1e-5)
    # vanilla RNN: a smaller gain vanishes faster (exercise 5.2.4)
    rnn = t[t["model"] == "rnn"].set_index("init")
    assert rnn.loc["normal g=0.5", "rate_per_step"] < rnn.loc["orthogonal g=1", "rate_per_step"]


def test_gradient_flow_rnn_bound_eq_5_7(gradient_flow):
    out, t = gradient_flow
    rnn = t[t["model"] == "rnn"]
    # every sequence, every lag: measured / (σ_max γ)^(T-k) <= 1, and the tight bound too
    assert (rnn["max_ratio_to_bound"] <= 1 + 1e-9).all()
    assert (rnn["max_ratio_to_tight_bound"] <= 1 + 1e-9).all()
    assert np.allclose(rnn["bound_lag10"], rnn["bound_rate"] ** 10)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_ratio_to_bound"] <= 1 + 1e-9
    # only the RNN has the bound
    assert t.loc[t["model"] != "rnn", "bound_lag1"].isna().all()


def test_jacobian_norms_match_autograd_jacobian():
    """The batched-copy trick gives the same spectral norms as an explicit Jacobian, and
    the RNN bound check can fail: a too-small σ_max is caught."""
    torch.manual_seed(0)
    d_x, d_h, steps = 3, 5, 7
    x = torch.randn(steps, 2, d_x, dtype=torch.float64)
    k = 2  # Jacobian of h_T with respect to the state after step k (0-based)
    for kind in ("rnn", "lstm"):
        layer = Recurrent(kind, d_x, d_h, hh_init="normal", hh_gain=1.5).double()
        norms, h = rm.jacobian_norms(layer, x)
        assert norms.shape == (2, steps) and h.shape == (steps, 2, d_h)
        for b in range(2):
            xb = x[:, b:b + 1]
            first, st = layer(xb[: k + 1])
            st = tuple(s[0] for s in st) if kind == "lstm" else (st[0],)

            def tail(*s0, xb=xb, layer=layer, kind=kind):
                init = tuple(s.unsqueeze(0) for s in s0)
                out, _ = layer(xb[k + 1:], init if kind == "lstm" else init[0])
                return out[-1, 0]

            jac = torch.autograd.functional.jacobian(tail, tuple(s[0].unsqueeze(0) for s in st))
            full = torch.cat([j.reshape(d_h, d_h) for j in jac], dim=1)
            lag = steps - 1 - k
            assert norms[b, lag] == pytest.approx(float(torch.linalg.matrix_norm(full, ord=2)), rel=1e-8)
    layer = Recurrent("rnn", d_x, d_h, hh_init="normal", hh_gain=1.5).double()
    norms, h = rm.jacobian_norms(layer, x)
    sigma, bound, tight = rm.rnn_bounds(layer.cell(0).W_hh, h)
    assert (norms[:, 1:] <= bound[:, 1:] * (1 + 1e-9)).all()
    assert (norms[:, 1:] <= tight[:, 1:] * (1 + 1e-9)).all()
    _, wrong, _ = rm.rnn_bounds(0.3 * layer.cell(0).W_hh, h)  # σ_max too small: violated
    assert (norms[:, 1:] > wrong[:, 1:]).any()


def test_decay_rate_of_a_geometric_curve():
    curve = 3.0 * 0.8 ** np.arange(30)
    assert rm.decay_rate(curve, 29) == pytest.approx(0.8)


def test_copy_task_batch():
    gen = torch.Generator().manual_seed(0)
    n, k, delay, batch = 8, 5, 7, 16
    x, y = rm.copy_task_batch(batch, n, k, delay, gen)
    blank, delim = n, n + 1
    assert x.shape == y.shape == (2 * k + delay, batch)
    assert ((x[:k] >= 0) & (x[:k] < n)).all()
    assert torch.equal(y[k + delay:], x[:k])             # targets: the first k symbols ...
    assert (y[: k + delay] == blank).all()                # ... blanks elsewhere
    assert (x[k + delay - 1] == delim).all()              # delimiter right before recall
    assert (x[k:k + delay - 1] == blank).all() and (x[k + delay:] == blank).all()
    with pytest.raises(ValueError):
        rm.copy_task_batch(2, n, k, 0)


def test_chance_level():
    sym, exact = rm.chance_level(8, 8)
    assert sym == 0.125 and exact == pytest.approx(8.0**-8)
    # a memoryless guesser (uniform random predictions) scores it
    gen = torch.Generator().manual_seed(1)
    x, y = rm.copy_task_batch(20000, 8, 4, 3, gen)
    guess = torch.randint(0, 8, y[-4:].shape, generator=gen)
    assert (guess == y[-4:]).float().mean().item() == pytest.approx(rm.chance_level(8, 4)[0], abs=0.01)


def test_memory_length_quick(memory_length):
    out, t = memory_length
    for f in ("lstm_gates.png", "copy_accuracy.png", "table.md", "summary.json"):
        assert (out / f).stat().st_size > 0, f
    assert len(t) == 3 * 2 and set(t["model"]) == set(rm.KINDS) and set(t["delay_T"]) == {5, 10}
    cols = ["symbol_accuracy", "exact_copy_rate", "final_loss", "steps", "train_s",
            "chance_symbol", "chance_exact"]
    assert set(cols) <= set(t.columns) and np.isfinite(t[cols].to_numpy()).all()
    assert t["symbol_accuracy"].between(0, 1).all() and t["exact_copy_rate"].between(0, 1).all()
    assert (t["exact_copy_rate"] <= t["symbol_accuracy"] + 1e-9).all()
    assert np.allclose(t["chance_symbol"], 1 / 8) and np.allclose(t["chance_exact"], 8.0**-4)
    # something learns beyond chance on the shortest delay
    assert t.loc[t["delay_T"] == 5, "symbol_accuracy"].max() > 3 * 0.125
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trace_gap"] < 1e-5  # our LSTM traced = the trained nn.LSTM
