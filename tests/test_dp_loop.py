"""DP-SGD in the one loop (``method.dp.*``, course §12.7.1): Poisson batches, the ε reported,
learning under noise, exact resume, and the refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from profond.cli import app
from profond.data.loader import PoissonBatches
from profond.errors import ConfigError
from profond.privacy import epsilon
from profond.train import train
from profond.train.loop import Trainer

from .conftest import StopAt, digits_cfg, tiny_cfg
from .test_gan import weights

DP = ("method.dp.noise=1.0", "method.dp.clip=1.0", "optim.name=sgd", "optim.lr=0.5", "train.threads=1")


def test_poisson_batches_are_seeded_per_batch_and_binomial():
    x = torch.zeros(2000, 1, 2, 2, dtype=torch.uint8)
    y = torch.arange(2000)
    b = PoissonBatches(x, y, batch_size=100, shuffle=False, seed=3)
    assert len(b) == 20 and b.sample_rate == pytest.approx(0.05)
    epoch = [yb for _, yb in b.batches(1)]
    sizes = torch.tensor([len(t) for t in epoch], dtype=torch.float64)
    assert abs(sizes.mean() - 100) < 4 * (2000 * 0.05 * 0.95 / 20) ** 0.5  # mean q·N, binomial spread
    assert sizes.std() > 3  # sizes vary: not fixed-size batches
    # batch k is the same whether the epoch starts at 0 or at k (resume), and epochs differ
    assert torch.equal(next(b.batches(1, start=7))[1], epoch[7])
    assert not torch.equal(next(b.batches(2))[1], epoch[0])
    with pytest.raises(ConfigError, match="at most 1"):
        PoissonBatches(x[:50], y[:50], batch_size=100, shuffle=True)


def test_dp_run_learns_and_reports_the_accountants_epsilon(tmp_path):
    res = train(tiny_cfg(tmp_path, *DP, "train.epochs=3"))
    s = res.summary
    assert s["final"]["test_accuracy"] > 0.6  # 10 classes: chance is 0.1
    p = s["privacy"]
    assert p["steps"] == s["steps"] == 3 * round(1 / p["sample_rate"])
    assert p["epsilon"] == pytest.approx(epsilon(p["sample_rate"], 1.0, p["steps"], 1e-5))
    eps = pd.read_csv(res.run_dir / "metrics.csv")["epsilon"]
    assert eps.is_monotonic_increasing and eps.iloc[-1] == pytest.approx(p["epsilon"])
    # more noise, less privacy spent
    quiet = train(tiny_cfg(tmp_path / "b", *DP, "method.dp.noise=3.0", "train.epochs=1")).summary["privacy"]
    assert quiet["epsilon"] < eps.iloc[0]


def test_dp_resume_equals_uninterrupted(tmp_path):
    args = (*DP, "train.epochs=2")
    ref = train(tiny_cfg(tmp_path / "ref", *args))
    train(tiny_cfg(tmp_path / "res", *args), callbacks=[StopAt(9)])
    res = train(tiny_cfg(tmp_path / "res", *args), run_dir=tmp_path / "res" / "run", resume=True)
    wa, wb = weights(ref.run_dir), weights(res.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert res.summary["privacy"]["epsilon"] == ref.summary["privacy"]["epsilon"]


def test_dp_refusals(tmp_path):
    with pytest.raises(ConfigError, match="per-example gradients.*BatchNorm"):
        Trainer(digits_cfg(tmp_path / "a", "model.name=resnet8", "model.width=4", "method.dp.noise=1"),
                run_dir=tmp_path / "a" / "run")
    with pytest.raises(ConfigError, match="train.clip_grad_norm"):
        Trainer(tiny_cfg(tmp_path / "b", "method.dp.noise=1", "train.clip_grad_norm=1"), run_dir=tmp_path / "b" / "run")
    r = CliRunner().invoke(app, ["train", "resnet8", "--set", "data.name=digits", "--set", "method.dp.noise=1",
                                 "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "BatchNorm" in r.output and "Traceback" not in r.output
    assert not json.dumps(r.output).count("\\n") > 3  # one short message
