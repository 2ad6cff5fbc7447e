"""Checkpoints: safetensors + JSON, exact resume, atomicity, corruption, pruning."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

from profond.base.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from profond.config import OptimConfig, SchedConfig
from profond.errors import CheckpointError
from profond.train.optim import build_optimizer
from profond.train.schedules import build_scheduler

OPTIMS = {
    "sgd": OptimConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "rmsprop": OptimConfig(name="rmsprop", lr=1e-3, momentum=0.5),
    "adam": OptimConfig(name="adam", lr=1e-2),
    "adamw": OptimConfig(name="adamw", lr=1e-2, weight_decay=0.1),
}
SCHED = SchedConfig(name="warmup-cosine", warmup_epochs=1, min_lr=1e-5)
DATA = [(torch.randn(8, 4, generator=torch.Generator().manual_seed(i)),
         torch.randn(8, 2, generator=torch.Generator().manual_seed(100 + i))) for i in range(10)]


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _setup(opt_name: str, seed: int):
    net = _net(seed)
    opt = build_optimizer(OPTIMS[opt_name], net.parameters())
    sched = build_scheduler(SCHED, opt, steps_per_epoch=4, epochs=3)
    return net, opt, sched


def _train(net, opt, sched, batches):
    for x, y in batches:
        opt.zero_grad()
        nn.functional.mse_loss(net(x), y).backward()
        opt.step()
        sched.step()


def _save(tmp_path, net, opt, sched, **kw):
    return save_checkpoint(tmp_path / "ck", nets={"model": net}, optimizers={"model": opt},
                           schedulers={"model": sched}, extra_state=kw.get("extra"),
                           meta=kw.get("meta", {"loop": {"epoch": 1, "batch": 2}}))


@pytest.mark.parametrize("opt_name", list(OPTIMS))
def test_exact_resume(tmp_path, opt_name):
    net, opt, sched = _setup(opt_name, seed=0)
    _train(net, opt, sched, DATA[:5])
    path = _save(tmp_path, net, opt, sched, extra={"ema.w": torch.arange(3.0)})

    net2, opt2, sched2 = _setup(opt_name, seed=1)  # different init: everything must come from disk
    meta = load_checkpoint(path, nets={"model": net2}, optimizers={"model": opt2}, schedulers={"model": sched2})
    assert meta["loop"] == {"epoch": 1, "batch": 2}
    assert torch.equal(meta["extra_state"]["ema.w"], torch.arange(3.0))

    _train(net, opt, sched, DATA[5:])
    _train(net2, opt2, sched2, DATA[5:])
    for (k, a), b in zip(net.state_dict().items(), net2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    if opt_name.startswith("adam"):
        step = opt2.state[next(iter(net2.parameters()))]["step"]
        assert torch.is_tensor(step) and step.dtype == torch.float32 and step.shape == ()
        assert isinstance(opt2.param_groups[0]["betas"], tuple)


def test_layout_and_meta(tmp_path):
    net, opt, sched = _setup("adam", seed=0)
    _train(net, opt, sched, DATA[:2])
    path = _save(tmp_path, net, opt, sched, meta={"step": 2, "loop": {"epoch": 0, "batch": 2}})
    assert sorted(p.name for p in path.iterdir()) == [
        "extra.safetensors", "meta.json", "model.safetensors", "optim.safetensors"]
    doc = json.loads((path / "meta.json").read_text())
    assert doc["step"] == 2 and doc["epoch"] == 0 and doc["batch_in_epoch"] == 2
    assert doc["nets"] == ["model"] and set(doc["files"]) == {
        "model.safetensors", "optim.safetensors", "extra.safetensors"}
    assert doc["schedulers"]["model"]["last_epoch"] == 2
    assert doc["versions"]["torch"] == torch.__version__
    from safetensors import safe_open

    with safe_open(str(path / "optim.safetensors"), "pt") as f:
        assert "model.state.0.exp_avg" in f.keys() and "model.state.0.step" in f.keys()
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert "model.0.weight" in f.keys() and "model.1.running_mean" in f.keys()


def test_rng_round_trip():
    tensors, meta = rng_state()
    meta = json.loads(json.dumps(meta))
    a = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    set_rng_state(tensors, meta)
    b = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_rng_through_checkpoint(tmp_path):
    net, opt, sched = _setup("sgd", seed=0)
    t, m = rng_state()
    path = _save(tmp_path, net, opt, sched, extra={f"rng.{k}": v for k, v in t.items()},
                 meta={"loop": {"rng": m}})
    expected = torch.randn(4)
    meta = load_checkpoint(path, nets={}, optimizers={}, schedulers={})
    extra = meta["extra_state"]
    set_rng_state({k[4:]: v for k, v in extra.items() if k.startswith("rng.")}, meta["loop"]["rng"])
    assert torch.equal(torch.randn(4), expected)


def test_corrupt_files_raise(tmp_path):
    net, opt, sched = _setup("adam", seed=0)
    path = _save(tmp_path, net, opt, sched)
    fresh = dict(nets={"model": _net(1)}, optimizers={}, schedulers={})

    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*truncated"):
        load_checkpoint(path, **fresh)

    # a pickle in disguise is rejected, never unpickled
    (path / "model.safetensors").write_bytes(pickle.dumps({"model.0.weight": torch.zeros(8, 4)}))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path, **fresh)

    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path, **fresh)


def test_mismatched_names_and_shapes(tmp_path):
    net, opt, sched = _setup("adam", seed=0)
    _train(net, opt, sched, DATA[:1])
    path = _save(tmp_path, net, opt, sched)
    with pytest.raises(CheckpointError, match="no net named 'G'"):
        load_checkpoint(path, nets={"G": _net(0)}, optimizers={}, schedulers={})
    wide = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path, nets={"model": wide}, optimizers={}, schedulers={})
    other = torch.optim.Adam(wide.parameters())
    with pytest.raises(CheckpointError, match="optimizer 'model'.*shape"):
        load_checkpoint(path, nets={}, optimizers={"model": other}, schedulers={})
    fewer = torch.optim.Adam(wide[0].parameters())
    with pytest.raises(CheckpointError, match="parameter groups"):
        load_checkpoint(path, nets={}, optimizers={"model": fewer}, schedulers={})


def _mgr_save(mgr, step, net, opt, sched, metrics=None):
    return mgr.save(step, nets={"model": net}, optimizers={"model": opt}, schedulers={"model": sched},
                    extra_state=None, meta={"note": step}, metrics=metrics)


def test_manager_latest_prune_best(tmp_path):
    net, opt, sched = _setup("sgd", seed=0)
    mgr = CheckpointManager(tmp_path, keep_last=2, monitor="val_loss", mode="min")
    assert mgr.latest() is None and mgr.best() is None
    losses = {1: 0.9, 2: 0.5, 3: 0.7, 4: 0.8}
    for step, loss in losses.items():
        _mgr_save(mgr, step, net, opt, sched, metrics={"val_loss": loss})
    ck = tmp_path / "checkpoints"
    assert sorted(p.name for p in ck.glob("step_*")) == ["step_00000003", "step_00000004"]
    assert json.loads((ck / "latest.json").read_text()) == {"path": "step_00000004", "step": 4}
    assert mgr.latest() == ck / "step_00000004"
    best = mgr.best()
    assert best == ck / "best"
    meta = load_checkpoint(best, nets={"model": _net(3)}, optimizers={}, schedulers={})
    assert meta["note"] == 2 and meta["metrics"] == {"val_loss": 0.5}  # step 2, pruned from the last 2


def test_manager_ignores_tmp_and_broken_pointer(tmp_path):
    net, opt, sched = _setup("sgd", seed=0)
    mgr = CheckpointManager(tmp_path, keep_last=3)
    _mgr_save(mgr, 5, net, opt, sched)
    ck = tmp_path / "checkpoints"
    # a crash mid-save leaves a temp folder (no meta.json) -- and an incomplete step folder
    crash = ck / ".tmp-step_00000006-abcd"
    crash.mkdir()
    (crash / "model.safetensors").write_bytes(b"partial")
    (ck / "step_00000007").mkdir()
    assert mgr.latest() == ck / "step_00000005"
    # latest.json pointing at a vanished folder: fall back to the newest complete one
    (ck / "latest.json").write_text(json.dumps({"path": "step_00000009", "step": 9}))
    assert mgr.latest() == ck / "step_00000005"
    (ck / "latest.json").write_text("{not json")
    assert mgr.latest() == ck / "step_00000005"
    _mgr_save(mgr, 8, net, opt, sched)  # the next save cleans leftovers
    assert not crash.exists()
    assert mgr.latest() == ck / "step_00000008"


def test_resave_same_step_replaces(tmp_path):
    net, opt, sched = _setup("sgd", seed=0)
    mgr = CheckpointManager(tmp_path)
    _mgr_save(mgr, 1, net, opt, sched)
    path = _mgr_save(mgr, 1, net, opt, sched)
    assert load_checkpoint(path, nets={}, optimizers={}, schedulers={})["step"] == 1
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")] == []
