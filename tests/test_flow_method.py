"""The flow family through the one loop (RealNVP, Glow; issue 18) on sklearn digits (8x8): the
bits/dim bound falls well below the 8 bits of uniform noise and below its first epoch, a loaded
run scores the test set as training did, samples are images deterministic in their seed and
shrink with the temperature, image_bpd ranks digits far above noise, bad options are refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from profond.cli import app
from profond.errors import ConfigError, ProfondError
from profond.methods.flow import Preprocess
from profond.metrics.likelihood import DEQUANT_BITS
from profond.train import load_run

from .conftest import digits_cfg

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

SMALL = ("method.name=flow", "model.steps=2", "model.hidden=32", "model.blocks=1", "method.grid_n=0",
         "data.batch_size=64", "optim.lr=0.002")


def cfg(out: Path, *overrides: str):
    return digits_cfg(out, *SMALL, *overrides)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    from profond.train import train

    root = tmp_path_factory.mktemp("flow")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        torch.set_num_threads(1)
        out["realnvp"] = train(cfg(root / "realnvp", "model.name=realnvp", "train.epochs=8", "method.grid_n=8"))
        out["glow"] = train(cfg(root / "glow", "model.name=glow", "train.epochs=8", "train.ema_decay=0.9"))
    return out


def val_losses(result) -> list[float]:
    return [float(r["val_loss"]) for r in result.history if r.get("val_loss") not in (None, "")]


def final(result) -> dict:
    return json.loads((Path(result.run_dir) / "summary.json").read_text())["final"]


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_training_lowers_the_bits_per_dim_bound(results, kind):
    vals = val_losses(results[kind])
    f = final(results[kind])
    assert f["test_loss"] == f["test_bpd"] and f["val_loss"] == f["val_bpd"]
    # the loss is the bpd bound: uniform noise would score DEQUANT_BITS = 8
    assert f["test_bpd"] < DEQUANT_BITS - 1.5, f
    assert vals[-1] < vals[0] - 0.4, vals


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_a_loaded_run_gives_the_bpd_of_the_end_of_training(results, kind):
    method, trainer = load_run(results[kind].run_dir)
    ev = trainer.evaluate(method.test_data())
    assert ev["bpd"] == pytest.approx(final(results[kind])["test_bpd"], abs=1e-6)
    # actnorm (glow) was initialised once, in training, and loaded as such
    flags = [m.initialized.item() for m in method.unwrapped().modules() if hasattr(m, "initialized")]
    assert (kind == "realnvp" and not flags) or (flags and all(flags))


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_samples_are_seeded_images_that_shrink_with_the_temperature(results, kind):
    method, _ = load_run(results[kind].run_dir)
    s = method.sample(200, seed=3)
    assert s.shape == (200, 1, 8, 8) and s.dtype == torch.float32 and 0 <= s.min() and s.max() <= 1
    assert torch.equal(s, method.sample(200, seed=3)) and not torch.equal(s, method.sample(200, seed=4))
    method.set_temperature(0.5)
    cold = method.sample(200, seed=3)
    method.set_temperature(1.0)
    # N(0, τ² I): colder latents give images closer to each other (less spread per pixel)
    assert cold.var(0).mean() < 0.8 * s.var(0).mean(), (cold.var(0).mean(), s.var(0).mean())
    # ... and more probable under the model (Glow §5)
    assert method.image_bpd(cold).mean() < method.image_bpd(s).mean()
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ProfondError, match="temperature"):
            method.set_temperature(bad)


def test_image_bpd_scores_digits_far_above_noise(results):
    method, _ = load_run(results["realnvp"].run_dir)
    x, _ = method.test_images(300)
    bpd = method.image_bpd(x)
    assert bpd.shape == (300,) and bpd.dtype == torch.float64 and torch.isfinite(bpd).all()
    assert torch.equal(bpd, method.image_bpd(x, seed=0)) and not torch.equal(bpd, method.image_bpd(x, seed=1))
    noise = method.image_bpd(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    assert bpd.mean() < noise.mean() - 2, (bpd.mean(), noise.mean())
    assert bpd.mean() == pytest.approx(final(results["realnvp"])["test_bpd"], abs=0.3)
    with pytest.raises(ProfondError, match="shape"):
        method.image_bpd(torch.rand(2, 1, 28, 28))


def test_epoch_grids_and_cli_sample_at_a_temperature(results, tmp_path):
    run = Path(results["realnvp"].run_dir)
    assert (run / "samples" / "epoch-008.png").is_file() and (run / "samples" / "evolution.gif").is_file()
    r = runner.invoke(app, ["sample", str(run), "--n", "4", "--temperature", "0.7", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.png").is_file()


@pytest.mark.parametrize("kind", ["logit", "affine"])
def test_preprocessing_log_jacobian_is_that_of_the_map(kind):
    pre = Preprocess(kind, 0.05)
    y = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    x, ld = pre.forward(y)
    for i in range(3):
        jac = torch.func.jacrev(lambda v: pre.forward(v.view(1, 1, 2, 2))[0].flatten())(y[i].flatten())
        assert torch.allclose(ld[i], torch.linalg.slogdet(jac)[1])
    assert torch.allclose(pre.inverse(x), y)


@pytest.mark.parametrize("override, needle", [
    ("method.alpha=0.5", "method.alpha"),
    ("method.temperature=0", "method.temperature"),
    ("model.levels=4", "model.levels=3 or fewer"),
    ("data.augment=[flip]", "augment"),
])
def test_bad_options_are_config_errors_with_the_fix(tmp_path, override, needle):
    from profond.train import train

    with pytest.raises(ConfigError, match=needle.replace(".", r"\.").replace("[", r"\[")):
        train(cfg(tmp_path, "model.name=realnvp", "train.epochs=1", override))


def test_a_model_that_is_not_an_image_flow_is_refused(tmp_path):
    from profond.train import train

    with pytest.raises(ConfigError, match=r"use model\.name=realnvp or model\.name=glow"):
        train(digits_cfg(tmp_path, "method.name=flow", "model.name=mlp", "train.epochs=1"))
