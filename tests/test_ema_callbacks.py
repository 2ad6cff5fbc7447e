"""EMA of weights, callbacks and early stopping (course §3.8)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from profond.base.checkpoint import resolve_mode
from profond.config import EarlyStopConfig
from profond.contract import Callback
from profond.errors import CheckpointError, ConfigError
from profond.train.callbacks import EarlyStopping
from profond.train.ema import EMA


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


# -- EMA ----------------------------------------------------------------------------------------
def test_ema_closed_form():
    net = _net()
    w0 = net[0].weight.detach().clone().double()
    ema = EMA(net, decay=0.9)
    values = [0.5, -1.0, 2.0, 3.0]
    expected = w0
    for v in values:
        with torch.no_grad():
            net[0].weight.fill_(v)
            net[1].running_mean.fill_(v)
        ema.update(net)
        expected = 0.9 * expected + 0.1 * v
    sd = ema.state_dict()
    assert torch.allclose(sd["0.weight"].double(), expected, atol=1e-6)
    # closed form: d^n w0 + (1-d) sum_k d^(n-1-k) v_k
    n = len(values)
    closed = 0.9**n * w0 + sum(0.1 * 0.9 ** (n - 1 - k) * v for k, v in enumerate(values))
    assert torch.allclose(sd["0.weight"].double(), closed, atol=1e-6)
    # buffers are copied, not averaged
    assert torch.equal(sd["1.running_mean"], torch.full((2,), 3.0))
    assert sd["1.num_batches_tracked"].dtype == torch.int64


def test_ema_swap_restores_exactly():
    net = _net()
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    ema.update(net)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.swapped(net):
        for k, v in net.state_dict().items():
            assert torch.equal(v, ema.state_dict()[k])
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(RuntimeError), ema.swapped(net):  # restored even on error
        raise RuntimeError("boom")
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_ema_state_and_copy_to():
    net = _net()
    ema = EMA(net, decay=0.99)
    other = EMA(_net(), decay=0.99)
    with torch.no_grad():
        net[0].weight.mul_(3)
    ema.update(net)
    other.load_state_dict({k: v.clone() for k, v in ema.state_dict().items()})
    target = _net()
    other.copy_to(target)
    assert all(torch.equal(a, b) for a, b in zip(target.state_dict().values(), ema.state_dict().values(), strict=True))
    with pytest.raises(CheckpointError):
        other.load_state_dict({"0.weight": torch.zeros(2, 3)})
    with pytest.raises(ConfigError):
        EMA(net, decay=1.5)


def test_ema_keeps_dtype():
    net = _net().to(torch.bfloat16)
    ema = EMA(net, decay=0.9)
    ema.update(net)
    assert ema.state_dict()["0.weight"].dtype == torch.bfloat16


# -- callbacks ----------------------------------------------------------------------------------
def test_resolve_mode():
    assert resolve_mode("val_accuracy", "auto") == "max"
    assert resolve_mode("val_psnr", "auto") == "max"
    assert resolve_mode("val_loss", "auto") == "min"
    assert resolve_mode("val_loss", "max") == "max"
    with pytest.raises(ConfigError):
        resolve_mode("val_loss", "up")


def test_base_callback_is_noop():
    cb, loop = Callback(), SimpleNamespace(should_stop=False)
    cb.on_train_start(loop)
    cb.on_step_end(loop, 1, {"loss": 1.0})
    cb.on_eval_end(loop, 0, {"val_loss": 1.0})
    cb.on_train_end(loop)
    assert loop.should_stop is False


def _run(es, values, key="val_loss"):
    loop = SimpleNamespace(should_stop=False)
    for epoch, v in enumerate(values):
        es.on_eval_end(loop, epoch, {key: v, "train_loss": 0.0})
        if loop.should_stop:
            break
    return loop


def test_early_stopping_patience_min():
    es = EarlyStopping(EarlyStopConfig(patience=2, monitor="val_loss"))
    loop = _run(es, [1.0, 0.8, 0.85, 0.79, 0.9, 0.95, 0.1])
    assert loop.should_stop and es.stopped_epoch == 5
    assert es.best_value == 0.79 and es.best_epoch == 3


def test_early_stopping_max_and_min_delta():
    es = EarlyStopping(EarlyStopConfig(patience=2, monitor="val_accuracy", min_delta=0.01))
    assert es.mode == "max"
    loop = _run(es, [0.5, 0.505, 0.509, 0.6], key="val_accuracy")  # +0.005, +0.009: not improvements
    assert loop.should_stop and es.stopped_epoch == 2 and es.best_value == 0.5


def test_early_stopping_resume_and_errors():
    cfg = EarlyStopConfig(patience=3)
    es = EarlyStopping(cfg)
    _run(es, [1.0, 1.1, 1.2])
    es2 = EarlyStopping(cfg)
    es2.load_state_dict(json.loads(json.dumps(es.state_dict())))
    loop = SimpleNamespace(should_stop=False)
    es2.on_eval_end(loop, 3, {"val_loss": 1.05})
    assert loop.should_stop and es2.stopped_epoch == 3
    with pytest.raises(ConfigError, match="val_acc.*val_loss"):
        EarlyStopping(EarlyStopConfig(patience=1, monitor="val_acc")).on_eval_end(
            loop, 0, {"val_loss": 1.0, "train_loss": 1.0})
    # an epoch without evaluation (no val_* metric) is skipped, not an error
    EarlyStopping(EarlyStopConfig(patience=1)).on_eval_end(loop, 0, {"train_loss": 1.0})
    with pytest.raises(ConfigError):
        EarlyStopping(EarlyStopConfig(patience=0))
    disabled = EarlyStopping(EarlyStopConfig(patience=None))
    assert not _run(disabled, [1.0, 2.0, 3.0, 4.0]).should_stop
