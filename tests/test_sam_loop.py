"""SAM through the one loop (``optim.sam_rho``, course §11.8, def. 11.20, eqs. 11.13-11.14).

The reference is written with ``torch.func`` from the equations, independently of
:class:`profond.scratch.optim.SAM` and of the loop: ε̂ = ρ g/‖g‖, then θ ← θ − η ∇L(θ + ε̂).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from profond.errors import ConfigError
from profond.scratch.optim import SAM
from profond.train.loop import Trainer

from .conftest import StopAt, digits_cfg, tiny_cfg
from .test_gan import weights


def sgd_cfg(tmp_path, *extra):
    return tiny_cfg(tmp_path, "optim.name=sgd", "optim.lr=0.2", "train.threads=1", *extra)


def reference_sam_steps(net, state, batches, rho, lr, n):
    """``n`` SGD-SAM steps from ``state`` on ``batches``, from the equations alone."""
    names = [k for k, _ in net.named_parameters()]
    params = {k: state[k].clone() for k in names}

    def loss(ps, x, y):
        return F.cross_entropy(functional_call(net, ps, (x,)), y)

    for (x, y), _ in zip(batches, range(n), strict=False):
        g = grad(loss)(params, x, y)
        norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
        eps = {k: rho * g[k] / norm for k in names}  # (11.14)
        g_adv = grad(loss)({k: params[k] + eps[k] for k in names}, x, y)
        params = {k: params[k] - lr * g_adv[k] for k in names}  # base SGD step at θ + ε̂
    return params


def test_sam_steps_match_the_equations(tmp_path):
    t = Trainer(sgd_cfg(tmp_path, "optim.sam_rho=0.1", "train.max_steps=3"), run_dir=tmp_path / "run")
    assert isinstance(t.optimizers["model"], SAM) and t.sam
    net = t.method.raw_nets["model"]
    init = {k: v.detach().clone() for k, v in net.state_dict().items()}
    batches = list(t.method.train_data.batches(0))[:3]
    expected = reference_sam_steps(net, init, batches, rho=0.1, lr=0.2, n=3)
    summary = t.fit().summary
    assert summary["steps"] == 3 and summary["gradient_passes"] == 6
    got = net.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6)
    # and SAM really differs from plain SGD on these steps
    plain = Trainer(sgd_cfg(tmp_path / "plain", "train.max_steps=3"), run_dir=tmp_path / "plain" / "run")
    plain.fit()
    assert not plain.sam
    diff = max((plain.method.raw_nets["model"].state_dict()[k] - got[k]).abs().max().item() for k in expected)
    assert diff > 1e-4


def test_sam_resume_equals_uninterrupted(tmp_path):
    from profond.train import train

    args = ("optim.sam_rho=0.05", "optim.momentum=0.9", "train.epochs=2")
    ref = train(sgd_cfg(tmp_path / "ref", *args))
    train(sgd_cfg(tmp_path / "res", *args), callbacks=[StopAt(7)])
    res = train(sgd_cfg(tmp_path / "res", *args), run_dir=tmp_path / "res" / "run", resume=True)
    assert res.summary["steps"] == ref.summary["steps"]
    wa, wb = weights(ref.run_dir), weights(res.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_batchnorm_statistics_move_once_per_step(tmp_path):
    """Pass 2 (at θ + ε̂) leaves the running statistics alone: after one step they are the ones
    plain SGD's single pass at the same θ and batch gives."""
    stats = {}
    for name, extra in (("sam", ["optim.sam_rho=0.5"]), ("sgd", [])):
        cfg = digits_cfg(tmp_path / name, "model.name=resnet8", "model.width=4", "optim.name=sgd",
                         "train.max_steps=1", "train.threads=1", *extra)
        t = Trainer(cfg, run_dir=tmp_path / name / "run")
        t.fit()
        stats[name] = {k: v.clone() for k, v in t.method.raw_nets["model"].state_dict().items() if "running" in k}
    assert stats["sam"] and all(torch.equal(stats["sam"][k], stats["sgd"][k]) for k in stats["sgd"])


def test_sam_refused_where_its_two_passes_would_be_wrong(tmp_path):
    cfg = digits_cfg(tmp_path, "model.name=gan", "optim.sam_rho=0.05", "data.subset=64")
    with pytest.raises(ConfigError, match="one optimizer"):
        Trainer(cfg, run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="sam_rho"):
        tiny_cfg(tmp_path, "optim.sam_rho=-1")
