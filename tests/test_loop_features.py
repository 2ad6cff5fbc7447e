"""Loop features that a run switches on by config: label smoothing, Mixup/CutMix, clipping,
channels_last, precision checks, TensorBoard scalars, per-group learning rates."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from profond.errors import ConfigError
from profond.train import train
from tests.conftest import tiny_cfg


def smoothed_entropy(eps: float, k: int) -> float:
    """Lowest possible cross-entropy against label-smoothed targets: their entropy."""
    hi, lo = 1 - eps + eps / k, eps / k
    return -(hi * math.log(hi) + (k - 1) * lo * math.log(lo))


def test_label_smoothing_sets_the_loss_floor(tmp_path):
    plain = train(tiny_cfg(tmp_path / "a", "train.epochs=8", "optim.lr=0.01"))
    smooth = train(tiny_cfg(tmp_path / "b", "train.epochs=8", "optim.lr=0.01", "method.label_smoothing=0.1"))
    floor = smoothed_entropy(0.1, 10)  # 0.500 nats
    assert smooth.history[-1]["train_loss"] >= floor - 1e-4
    assert plain.history[-1]["train_loss"] < floor - 0.2  # without smoothing it goes far below
    assert smooth.summary["final"]["test_accuracy"] > 0.8


@pytest.mark.parametrize("mix", ["data.mixup_alpha=0.4", "data.cutmix_alpha=1.0"])
def test_mixup_cutmix_soft_targets_train(tmp_path, mix):
    res = train(tiny_cfg(tmp_path, mix, "train.epochs=4", "optim.lr=0.005"))
    assert res.summary["final"]["test_accuracy"] > 0.6


def test_gradient_clipping_is_applied_and_logged(tmp_path):
    res = train(tiny_cfg(tmp_path, "train.clip_grad_norm=0.5", "optim.name=sgd", "optim.lr=0.1"))
    df = pd.read_csv(res.run_dir / "metrics.csv")
    assert "train_grad_norm_model" in df  # pre-clipping norm, averaged over the epoch
    assert (df["train_grad_norm_model"] > 0).all()


def test_channels_last_cnn(tmp_path):
    from profond.config import resolve

    res = train(resolve(overrides=["data.name=synthetic", "data.val_size=200", "model.name=fmnist-cnn",
                                   "model.width=8", "train.channels_last=true", "train.epochs=1",
                                   "train.quiet=true", f"out={tmp_path}", "train.device=cpu"]))
    assert res.summary["final"]["test_accuracy"] > 0.5


def test_fp16_needs_cuda(tmp_path):
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        train(tiny_cfg(tmp_path, "train.precision=fp16"))


def test_tensorboard_has_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = train(tiny_cfg(tmp_path, "train.log_every=5"))
    ea = EventAccumulator(str(res.run_dir / "tensorboard"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    for tag in ("train/loss", "val/accuracy", "lr"):
        assert tag in tags, tags
    assert len(ea.Scalars("train/loss")) >= 4


def test_per_group_learning_rates_reach_the_optimizer(tmp_path):
    from profond.train.loop import Trainer

    t = Trainer(tiny_cfg(tmp_path, "optim.lr_groups={head: 0.5}", "optim.weight_decay=0.1",
                         "optim.decay_norm_and_bias=false"))
    groups = t.optimizers["model"].param_groups
    lrs = {(g["lr"], g["weight_decay"]) for g in groups}
    assert (0.5, 0.1) in lrs and (0.001, 0.1) in lrs and any(wd == 0 for _, wd in lrs)


@pytest.mark.slow
def test_torch_compile_trains(tmp_path):
    """Inductor compilation takes ~40 s on 2 cores: out of CI."""
    res = train(tiny_cfg(tmp_path, "train.compile=true", "train.epochs=3", "optim.lr=0.005"))
    assert res.summary["final"]["test_accuracy"] > 0.8


def test_eval_of_saved_run_reproduces_final_test_metrics_with_ema(tmp_path):
    from profond.train import load_run

    res = train(tiny_cfg(tmp_path, "train.ema_decay=0.8", "train.epochs=3"))
    method, trainer = load_run(res.run_dir, device="cpu")
    m = trainer.evaluate(method.test_data())
    assert m["accuracy"] == res.summary["final"]["test_accuracy"]
    assert m["loss"] == pytest.approx(res.summary["final"]["test_loss"], rel=1e-6)


def test_l1_penalty_makes_weights_sparse(tmp_path):
    """L1 (course §3.3) drives many weights to ~0; none does not."""
    opts = ["train.epochs=6", "optim.name=sgd", "optim.momentum=0.9", "optim.lr=0.05"]
    plain = train(tiny_cfg(tmp_path / "a", *opts))
    l1 = train(tiny_cfg(tmp_path / "b", *opts, "method.l1=1e-3"))
    from tests.test_loop import final_weights

    def small_fraction(run):
        w = final_weights(run.run_dir)["model.features.0.weight"]
        return (w.abs() < 1e-2).float().mean().item()

    assert small_fraction(l1) > small_fraction(plain) + 0.15  # measured 0.34 vs 0.07
    assert "train_l1_penalty" in l1.history[-1]


def test_optimize_returns_the_pre_clip_norm_and_the_loop_resets_it_every_step(tmp_path):
    """``ctx.optimize`` returns the gradient norm before clipping (None when nothing asks for
    it); the loop logs only what the current step measured."""
    import torch
    import torch.nn.functional as F

    from profond.train.loop import Trainer

    t = Trainer(tiny_cfg(tmp_path, "train.clip_grad_norm=0.01"), run_dir=tmp_path / "r")
    x, y = next(iter(t.method.train_data.batches(0)))
    net = t.method.raw_nets["model"]

    def loss() -> torch.Tensor:
        return F.cross_entropy(t.method.nets["model"](x), y)

    loss().backward()
    expected = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in net.parameters()])))
    net.zero_grad()
    before = [p.detach().clone() for p in net.parameters()]
    got = t.ctx.optimize(loss())
    assert got == pytest.approx(expected, rel=1e-5) and got > 0.01
    assert all(p.grad.norm() <= 0.01 + 1e-6 for p in net.parameters())  # clipped after measuring
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))
    vals = t._train_step((x, y))
    assert vals["grad_norm_model"] > 0.01
    t.cfg.train.clip_grad_norm = None  # nothing measures now: None, and no stale norm is logged
    assert t.ctx.optimize(loss()) is None
    assert "grad_norm_model" not in t._train_step((x, y))
