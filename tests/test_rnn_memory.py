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
    with pytest.raises(ValueError):
        rm.copy_task_batch(2, n, k, 5, min_delay=6)


def test_chance_level():
    sym, exact = rm.chance_level(8, 8)
    assert sym == 0.125 and exact == pytest.approx(8.0**-8)
    # a memoryless guesser (uniform random predictions) scores it
    gen = torch.Generator().manual_seed(1)
    x, y = rm.copy_task_batch(20000, 8, 4, 3, gen)
    guess = torch.randint(0, 8, y[-4:].shape, generator=gen)
    assert (guess == y[-4:]).float().mean().item() == pytest.approx(rm.chance_level(8, 4)[0], abs=0.01)


def test_copy_task_batch_mixed_delays():
    """Training batches with per-sequence delays: leading blanks keep one length, the
    delimiter at one step, and each sequence's symbols exactly d_b steps before it."""
    gen = torch.Generator().manual_seed(3)
    n, k, delay, batch = 8, 4, 12, 400
    blank, delim = n, n + 1
    x, y, d = rm.copy_task_batch(batch, n, k, delay, gen, min_delay=2, return_delays=True)
    assert x.shape == y.shape == (2 * k + delay, batch) and d.shape == (batch,)
    assert int(d.min()) == 2 and int(d.max()) == delay        # uniform over [2, 12]: both ends drawn
    assert len(torch.unique(d)) == delay - 1
    assert (x[k + delay - 1] == delim).all()                  # one delimiter step for the batch
    assert (y[: k + delay] == blank).all()
    for b in range(batch):
        start = delay - int(d[b])
        symbols = x[start:start + k, b]
        assert ((symbols >= 0) & (symbols < n)).all()
        assert torch.equal(y[k + delay:, b], symbols)         # targets = that sequence's symbols
        # the delimiter comes d_b steps after the last symbol (the delay of this sequence)
        assert (k + delay - 1) - (start + k - 1) == int(d[b])
        others = torch.cat([x[:start, b], x[start + k:k + delay - 1, b], x[k + delay:, b]])
        assert (others == blank).all()
    # fixed delay: min_delay = delay gives the plain layout and d_b = delay
    x2, _, d2 = rm.copy_task_batch(8, n, k, delay, gen, return_delays=True)
    assert (d2 == delay).all() and (x2[k:k + delay - 1] == blank).all()


def test_curriculum_schedule():
    seq, d = [1], 1
    while d < 100:
        d = rm.next_curriculum_delay(d, 100)
        seq.append(d)
    assert seq == [1, 2, 3, 4, 6, 9, 14, 21, 32, 48, 72, 100]
    assert rm.next_curriculum_delay(8, 10) == 10 and rm.next_curriculum_delay(10, 10) == 10


def test_gate_phase_means_and_interpretation():
    """Phase averages on synthetic gates with known values; the sentences follow them."""
    k, delay, units = 3, 6, 4
    length = 2 * k + delay
    value = {"symbols": 0.9, "waiting": 0.1, "delimiter": 0.5, "recall": 0.7}
    gates = {}
    for g, shift in (("f", 0.0), ("i", 0.05), ("o", -0.05)):
        v = np.zeros((length, 2, units))
        for p, sl in rm.phase_slices(k, delay).items():
            v[sl] = value[p] + shift
        gates[g] = v
    ph = rm.gate_phase_means(gates, k, delay)
    assert list(ph.index) == ["f", "i", "o"] and list(ph.columns) == [*rm.PHASES, "waiting_min"]
    assert ph.loc["f", "symbols"] == pytest.approx(0.9) and ph.loc["i", "waiting"] == pytest.approx(0.15)
    assert ph.loc["o", "recall"] == pytest.approx(0.65) and ph.loc["f", "waiting_min"] == pytest.approx(0.1)
    text = rm.interpret_gates(ph)
    assert "input gate 0.95 while the symbols are shown vs 0.15 while waiting" in text
    assert "writes when the symbols arrive" in text and "not uniformly near 1" in text
    assert "it does not drop at recall" in text and "opens more at recall" in text
    # an LSTM that keeps its cell: f ≈ 1 while waiting, then drops; i and o flat
    ph.loc["f", ["waiting", "waiting_min", "recall"]] = [0.97, 0.93, 0.6]
    ph.loc["i", "symbols"] = ph.loc["i", "waiting"]
    ph.loc["o", "recall"] = ph.loc["o", "waiting"]
    text = rm.interpret_gates(ph)
    assert "stays near 1 through the delay" in text and "drops at recall" in text
    assert "no clear write window" in text and "not markedly higher at recall" in text
    # delay 1: no waiting phase
    one = rm.gate_phase_means({g: np.ones((2 * k + 1, units)) for g in rm.GATES}, k, 1)
    assert one["waiting"].isna().all() and (one["symbols"] == 1).all()


def test_memory_length_quick(memory_length):
    out, t = memory_length
    for f in ("lstm_gates.png", "copy_accuracy.png", "table.md", "summary.json", "gate_phases.csv"):
        assert (out / f).stat().st_size > 0, f
    assert len(t) == 3 * 2 + 1 and set(t["model"]) == set(rm.KINDS) and set(t["delay_T"]) == {4, 8}
    # the plain procedure is kept: one fixed-delay row, trained at the test delay from step 0
    fixed = t[t["training"] == "fixed"]
    assert len(fixed) == 1 and fixed.iloc[0]["model"] == "rnn" and fixed.iloc[0]["delay_T"] == 4
    assert fixed.iloc[0]["max_train_delay"] == 4 and fixed.iloc[0]["step_reached_T"] == 0
    t = t[t["training"] == "curriculum"]
    assert len(t) == 3 * 2
    cols = ["symbol_accuracy", "exact_copy_rate", "final_loss", "steps", "train_s",
            "chance_symbol", "chance_exact", "max_train_delay"]
    assert set(cols) <= set(t.columns) and np.isfinite(t[cols].to_numpy()).all()
    assert t["symbol_accuracy"].between(0, 1).all() and t["exact_copy_rate"].between(0, 1).all()
    assert (t["exact_copy_rate"] <= t["symbol_accuracy"] + 1e-9).all()
    assert np.allclose(t["chance_symbol"], 1 / 8) and np.allclose(t["chance_exact"], 8.0**-3)
    assert (t["max_train_delay"] <= t["delay_T"]).all() and (t["max_train_delay"] >= 1).all()
    # the LSTM trained on mixed delays reaches the test delay and copies beyond chance there
    lstm = t[(t["model"] == "lstm") & (t["delay_T"] == 4)].iloc[0]
    assert lstm["max_train_delay"] == 4 and np.isfinite(lstm["step_reached_T"])
    assert lstm["symbol_accuracy"] > 3 * 0.125
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trace_gap"] < 1e-5  # our LSTM traced = the trained nn.LSTM
    ph = summary["gate_phase_means"]
    assert set(ph) == set(rm.GATES) and all(set(rm.PHASES) <= set(ph[g]) for g in rm.GATES)
    assert all(0 <= ph[g][p] <= 1 for g in rm.GATES for p in rm.PHASES)
    csv = pd.read_csv(out / "gate_phases.csv", index_col="gate")
    assert csv.loc["f", "waiting"] == pytest.approx(ph["f"]["waiting"], abs=1e-4)
