"""The diffusion family through the one loop and the CLI (course ch. 10), on sklearn digits
(8x8): training lowers the ε-loss from its initial 1, samples land near the data, every
sampler runs with its checks, classifier-free guidance and flow matching train and sample, a
resumed run ends with the same weights, and `profond sample / eval / latent` on a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from profond.cli import app
from profond.errors import ConfigError
from profond.methods.capabilities import SamplerRequest
from profond.train import load_run

from .conftest import digits_cfg

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

UNET = ("model.name=diffusion-unet", "model.base=16", "model.mults=[1,2]", "model.num_res_blocks=1",
        "model.attn_levels=[1]", "model.dropout=0", "method.name=diffusion", "method.timesteps=100",
        "method.grid_n=0", "data.batch_size=64", "optim.name=adam", "optim.lr=0.002")


def cfg(out: Path, *overrides: str):
    return digits_cfg(out, *UNET, *overrides)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"]
    return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    from profond.train import train

    root = tmp_path_factory.mktemp("diffusion")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        torch.set_num_threads(1)
        out["ddpm"] = train(cfg(root / "ddpm", "train.epochs=12", "train.ema_decay=0.9",
                                "method.grid_n=8"))
        out["cond"] = train(cfg(root / "cond", "model.conditional=true", "train.epochs=3",
                                "method.schedule=cosine"))
        out["flow"] = train(cfg(root / "flow", "method.process=flow", "train.epochs=3"))
    return out


@pytest.fixture(scope="module")
def runs(results) -> dict[str, Path]:
    return {k: r.run_dir for k, r in results.items()}


def val_losses(result) -> list[float]:
    return [float(r["val_loss"]) for r in result.history if r.get("val_loss") not in (None, "")]


def test_training_lowers_the_noise_prediction_loss(results, runs):
    # the zero-initialised denoiser predicts ε = 0 at first: the ε-loss starts at E||ε||²/D = 1
    assert val_losses(results["ddpm"])[-1] < 0.5, val_losses(results["ddpm"])
    assert (runs["ddpm"] / "samples" / "epoch-012.png").is_file()


def test_samples_land_near_the_data(runs):
    method, _ = load_run(runs["ddpm"])
    x_test, _ = method.test_images()
    method.use_sampler(SamplerRequest(sampler="ddim", steps=20))
    s = method.sample(200, seed=1)
    assert s.shape == (200, 1, 8, 8) and 0 <= s.min() and s.max() <= 1
    assert torch.equal(s, method.sample(200, seed=1))
    # digits are mostly black background: samples share the data's pixel mean, noise does not
    assert abs(s.mean() - x_test.mean()) < 0.08, (s.mean(), x_test.mean())
    # nearest-test-image distance: samples are far closer than uniform noise images
    def nn_dist(a):
        return torch.cdist(a.flatten(1), x_test.flatten(1)).min(1).values.mean()
    noise = torch.rand_like(s)
    assert nn_dist(s) < 0.6 * nn_dist(noise), (nn_dist(s), nn_dist(noise))
    method.use_sampler(SamplerRequest(sampler="ddpm"))
    a = method.sample(200, seed=2)
    assert abs(a.mean() - x_test.mean()) < 0.08 and nn_dist(a) < 0.6 * nn_dist(noise)


def test_sampler_requests_are_checked(runs):
    method, _ = load_run(runs["ddpm"])
    bad = [SamplerRequest(steps=101), SamplerRequest(steps=0), SamplerRequest(sampler="euler"),
           SamplerRequest(sampler="ddim", eta=1.5), SamplerRequest(sampler="ddpm", eta=0.5),
           SamplerRequest(guidance=1.0)]
    for req in bad:
        with pytest.raises(Exception) as e:
            method.use_sampler(req)
        assert "use" in str(e.value) or "drop" in str(e.value), str(e.value)
    s = method.use_sampler(SamplerRequest(sampler="ddim", steps=10, eta=1.0))
    assert s == {"sampler": "ddim", "steps": 10, "eta": 1.0, "guidance": None, "nfe_per_image": 10}


def test_guidance_doubles_the_network_calls_and_changes_samples(runs):
    method, _ = load_run(runs["cond"])
    labels = torch.full((16,), 3)
    method.use_sampler(SamplerRequest(sampler="ddim", steps=10, guidance=0.0))
    plain = method.sample(16, seed=0, labels=labels)
    s = method.use_sampler(SamplerRequest(sampler="ddim", steps=10, guidance=3.0))
    assert s["nfe_per_image"] == 20
    guided = method.sample(16, seed=0, labels=labels)
    assert guided.shape == plain.shape and not torch.allclose(guided, plain)


def test_flow_matching_run_samples_with_euler_and_heun(results, runs):
    method, _ = load_run(runs["flow"])
    # the velocity x_0 − ε has E||·||²/D = 1 + E[x_0²]: a zero net starts above 1
    assert val_losses(results["flow"])[-1] < 1.0, val_losses(results["flow"])
    for sampler, nfe in (("euler", 8), ("heun", 15)):
        s = method.use_sampler(SamplerRequest(sampler=sampler, steps=8))
        assert s["nfe_per_image"] == nfe
        x = method.sample(8, seed=0)
        assert x.shape == (8, 1, 8, 8) and torch.isfinite(x).all()
    with pytest.raises(Exception, match="process=flow; use one of euler, heun"):
        method.use_sampler(SamplerRequest(sampler="ddim"))


def test_cli_sample_eval_latent(runs, tmp_path):
    run = runs["ddpm"]
    r = runner.invoke(app, ["sample", str(run), "--n", "9", "--sampler", "ddim", "--steps", "10", "--trajectory",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    for f in ("samples.png", "trajectory.png", "trajectory.gif"):
        assert (tmp_path / f).is_file(), f
    for args, needle in ((["--steps", "1000"], "--steps 1000"), (["--guidance", "2"], "--guidance"),
                         (["--eta", "0.5", "--sampler", "ddpm"], "--eta"), (["--sampler", "heun"], "heun")):
        r = runner.invoke(app, ["sample", str(run), "--n", "4", *args, "--out", str(tmp_path)])
        assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(app, ["eval", str(run), "--n", "40", "--steps", "5", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output.strip().splitlines()[-1])
    assert ev["sampler"]["steps"] == 5 and ev["fid"] > 0 and "bpd" in ev and ev["bpd"] > 0
    r = runner.invoke(app, ["latent", str(run), "--pairs", "2", "--steps", "4", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "interpolation.png").is_file()
    r = runner.invoke(app, ["sample", str(runs["cond"]), "--n", "4", "--label", "10", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--label 10" in r.output


def test_sampler_flags_refused_on_a_run_without_samplers(tmp_path):
    from profond.train import train

    run = train(digits_cfg(tmp_path, "model.name=gan", "model.g_hidden=[16]", "model.d_hidden=[16]",
                           "model.latent_dim=4", "method.eval_n=0", "method.grid_n=0", "train.epochs=1",
                           "data.subset=64")).run_dir
    r = runner.invoke(app, ["sample", str(run), "--n", "4", "--steps", "10", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--steps is for diffusion" in r.output, r.output


def test_bad_options_are_config_errors(tmp_path):
    from profond.train.loop import Trainer

    for over, needle in ((("method.process=flow", "method.sampler=ddim"), "method.sampler"),
                         (("method.process=flow", "method.loss=vlb"), "vlb"),
                         (("method.sample_steps=500",), "more steps than T")):
        with pytest.raises(ConfigError, match=needle):
            Trainer(cfg(tmp_path, *over), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="diffusion-unet"):
        Trainer(digits_cfg(tmp_path, "model.name=mlp", "method.name=diffusion"), run_dir=tmp_path / "y")


def test_resume_gives_the_same_weights(tmp_path):
    from profond.train import train

    args = ["data.subset=256", "train.ema_decay=0.9", "model.conditional=true"]
    ref = train(cfg(tmp_path / "ref", *args, "train.epochs=2"))
    train(cfg(tmp_path / "res", *args, "train.epochs=1"))
    res = train(cfg(tmp_path / "res", *args, "train.epochs=2"), run_dir=tmp_path / "res" / "run", resume=True)
    a, b = weights(ref.run_dir), weights(res.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
