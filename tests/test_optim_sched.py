"""Optimizers (course §2.4) and per-step LR schedules (course §2.5)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from profond.config import OptimConfig, SchedConfig
from profond.errors import ConfigError
from profond.train.optim import build_optimizer, optimizer_cfg_for
from profond.train.schedules import build_scheduler, lr_at, lr_curve


def _params():
    return [nn.Parameter(torch.ones(3))]


# -- optimizers ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg, cls, expect",
    [
        (OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4), torch.optim.SGD,
         {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}),
        (OptimConfig(name="rmsprop", lr=0.01, alpha=0.9, eps=1e-6, momentum=0.5), torch.optim.RMSprop,
         {"alpha": 0.9, "eps": 1e-6, "momentum": 0.5}),
        (OptimConfig(name="adam", betas=[0.5, 0.99], eps=1e-7), torch.optim.Adam,
         {"betas": (0.5, 0.99), "eps": 1e-7, "weight_decay": 0.0}),
        (OptimConfig(name="adamw", weight_decay=0.05), torch.optim.AdamW, {"weight_decay": 0.05}),
    ],
)
def test_build_optimizer_settings(cfg, cls, expect):
    opt = build_optimizer(cfg, _params())
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == cfg.lr
    for key, value in expect.items():
        assert group[key] == value, key


def test_sgd_momentum_matches_course_update():
    # §2.4.1: v <- mu v + g ; theta <- theta - eta v
    p = nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer(OptimConfig(name="sgd", lr=0.1, momentum=0.9), [p])
    theta, v = 1.0, 0.0
    for _ in range(3):
        p.grad = 2 * p.detach().clone()  # d/dθ θ²
        g = 2 * theta
        v = 0.9 * v + g
        theta -= 0.1 * v
        opt.step()
    assert p.item() == pytest.approx(theta, rel=1e-6)


def test_group_weight_decay_wins():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    groups = [{"params": [a]}, {"params": [b], "weight_decay": 0.0, "lr": 1e-4}]
    opt = build_optimizer(OptimConfig(name="adamw", lr=1e-3, weight_decay=0.1), groups)
    assert opt.param_groups[0]["weight_decay"] == 0.1
    assert opt.param_groups[1]["weight_decay"] == 0.0
    assert opt.param_groups[1]["lr"] == 1e-4


def test_optimizer_errors():
    with pytest.raises(ConfigError, match="sgd, rmsprop, adam, adamw, lion"):
        build_optimizer(OptimConfig(name="lbfgs"), _params())
    with pytest.raises(ConfigError, match="optim.impl"):
        build_optimizer(OptimConfig(impl="numpy"), _params())
    with pytest.raises(ConfigError, match="momentum"):
        build_optimizer(OptimConfig(name="sgd", nesterov=True, momentum=0.0), _params())
    with pytest.raises(ConfigError, match="betas"):
        build_optimizer(OptimConfig(name="adam", betas=[0.9]), _params())
    with pytest.raises(ConfigError, match="no trainable parameters"):
        build_optimizer(OptimConfig(), [])


def test_optimizer_from_module_skips_frozen():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    net[0].requires_grad_(False)
    opt = build_optimizer(OptimConfig(), net)
    assert len(opt.param_groups[0]["params"]) == 2


def test_optimizer_cfg_for_overrides():
    cfg = OptimConfig(lr=2e-4, betas=[0.5, 0.999], per_optimizer={"D": {"lr": 4e-4, "name": "sgd"}})
    d = optimizer_cfg_for(cfg, "D")
    g = optimizer_cfg_for(cfg, "G")
    assert (d.lr, d.name, d.per_optimizer) == (4e-4, "sgd", {})
    assert (g.lr, g.name) == (2e-4, "adam")
    assert cfg.lr == 2e-4 and cfg.per_optimizer  # not modified
    with pytest.raises(ConfigError, match="Valid keys"):
        optimizer_cfg_for(OptimConfig(per_optimizer={"D": {"learning_rate": 1}}), "D")
    with pytest.raises(ConfigError, match="'X'"):
        optimizer_cfg_for(OptimConfig(per_optimizer={"X": {"lr": 1}}), "G", known=["G", "D"])


# -- schedules ----------------------------------------------------------------------------------
SPE, EPOCHS, LR = 10, 4, 0.1  # 40 steps


def _curve(**kw):
    return lr_curve(SchedConfig(**kw), SPE, EPOCHS, LR)


def test_constant_and_step():
    assert _curve(name="constant") == [LR] * 40
    c = _curve(name="step", step_epochs=1.5, gamma=0.5)  # period: 15 steps
    assert c[0] == LR and c[14] == LR
    assert c[15] == pytest.approx(LR * 0.5) and c[29] == pytest.approx(LR * 0.5)
    assert c[30] == pytest.approx(LR * 0.25) and c[39] == pytest.approx(LR * 0.25)


def test_cosine_closed_form():
    c = _curve(name="cosine", min_lr=0.01)
    expected = [0.01 + 0.5 * (LR - 0.01) * (1 + math.cos(math.pi * t / 40)) for t in range(40)]
    assert c == pytest.approx(expected)
    assert c[0] == pytest.approx(LR)
    assert c[20] == pytest.approx((LR + 0.01) / 2)  # the middle
    cfg = SchedConfig(name="cosine", min_lr=0.01)
    assert lr_at(cfg, 40, steps_per_epoch=SPE, epochs=EPOCHS, base_lr=LR) == pytest.approx(0.01)  # end


def test_warmup_cosine_key_points():
    c = _curve(name="warmup-cosine", warmup_epochs=1, min_lr=0.0)  # 10 warm-up steps
    assert c[0] == pytest.approx(LR / 10)  # ~0
    assert c[4] == pytest.approx(LR * 5 / 10)
    assert c[9] == pytest.approx(LR)  # end of warm-up
    assert c[10] == pytest.approx(LR)  # cosine starts at the peak
    assert c[25] == pytest.approx(LR / 2)  # middle of the 30 cosine steps
    assert c[39] == pytest.approx(0.5 * LR * (1 + math.cos(math.pi * 29 / 30)))
    assert max(c) == pytest.approx(LR)


def test_onecycle_matches_torch():
    c = _curve(name="onecycle", pct_start=0.25, max_lr=0.5)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    ref_sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=40, pct_start=0.25,
                                                    cycle_momentum=False)
    ref = []
    for _ in range(40):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        ref_sched.step()
    assert c == pytest.approx(ref, rel=1e-9)
    assert c[0] == pytest.approx(0.5 / 25) and c[9] == pytest.approx(0.5)  # start, peak
    assert c[-1] == pytest.approx(0.5 / 25 / 1e4)  # end


def _two_group_optimizer():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": LR / 10}], lr=LR)


@pytest.mark.parametrize("name", ["step", "cosine", "warmup-cosine", "onecycle"])
def test_per_group_lrs_scale_proportionally(name):
    opt = _two_group_optimizer()
    sched = build_scheduler(SchedConfig(name=name, warmup_epochs=1, step_epochs=1, min_lr=0.001), opt,
                            steps_per_epoch=SPE, epochs=EPOCHS)
    for _ in range(23):
        opt.step()
        sched.step()
    lr0, lr1 = (g["lr"] for g in opt.param_groups)
    assert lr1 == pytest.approx(lr0 / 10)


def test_state_dict_json_round_trip_and_resume():
    cfg = SchedConfig(name="warmup-cosine", warmup_epochs=1, min_lr=1e-4)
    opt = _two_group_optimizer()
    sched = build_scheduler(cfg, opt, steps_per_epoch=SPE, epochs=EPOCHS)
    for _ in range(13):
        opt.step()
        sched.step()
    saved_sched = json.loads(json.dumps(sched.state_dict()))
    saved_opt = opt.state_dict()

    opt2 = _two_group_optimizer()
    sched2 = build_scheduler(cfg, opt2, steps_per_epoch=SPE, epochs=EPOCHS)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    for _ in range(20):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]
    assert sched.state_dict() == sched2.state_dict()


def test_schedule_errors():
    with pytest.raises(ConfigError, match="constant, step"):
        lr_curve(SchedConfig(name="exp"), 10, 1, 0.1)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        lr_curve(SchedConfig(name="warmup-cosine", warmup_epochs=2), 10, 2, 0.1)
    with pytest.raises(ConfigError, match="at least one step"):
        lr_curve(SchedConfig(), 0, 3, 0.1)
