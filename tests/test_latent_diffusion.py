"""Latent diffusion (course seed 000 "Stable Diffusion"; Rombach et al. 2022): method
``diffusion`` with ``method.autoencoder=RUN_DIR`` learns a frozen VAE's standardised latent
codes on sklearn digits (8x8) and decodes its samples, through the one loop and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from profond.cli import app
from profond.errors import ConfigError
from profond.methods.capabilities import SamplerRequest
from profond.train import load_run, train

from .conftest import digits_cfg

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

LATENT = ("model.name=diffusion-mlp", "model.width=128", "model.depth=3", "method.name=diffusion",
          "method.timesteps=100", "method.schedule=cosine", "method.grid_n=0", "data.batch_size=64",
          "optim.name=adam", "optim.lr=0.002", "train.ema_decay=0.99")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("latent")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        torch.set_num_threads(1)
        vae = train(digits_cfg(root / "vae", "model.name=vae", "model.hidden=[128]", "model.latent_dim=8",
                               "train.epochs=15", "optim.lr=0.003")).run_dir
        ld = train(digits_cfg(root / "ld", *LATENT, f"method.autoencoder={vae}", "model.conditional=true",
                              "train.epochs=30", "method.grid_n=16")).run_dir
    return {"vae": vae, "ld": ld}


@pytest.fixture(scope="module")
def classifier():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    return LogisticRegression(max_iter=2000).fit(d.images.reshape(-1, 64) / 16.0, d.target)


def test_it_learns_the_codes_and_samples_are_digits_of_the_asked_class(runs, classifier):
    import pandas as pd

    m = pd.read_csv(runs["ld"] / "metrics.csv")
    assert m["val_loss"].iloc[0] > 0.7 and m["val_loss"].iloc[-1] < 0.45  # ε-loss starts near 1
    method, _ = load_run(runs["ld"], device="cpu")
    assert method.x_shape == (8,) and method.autoencoder is not None
    # the codes the process sees are standardised: mean 0, std 1 per dimension on the training set
    z = method.latents(method.data.train_x)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-4) and torch.allclose(z.std(0), torch.ones(8), atol=1e-3)
    method.use_sampler(SamplerRequest(guidance=3.0))
    labels = torch.arange(200) % 10
    x = method.sample(200, seed=1, labels=labels)
    assert x.shape == (200, 1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1
    acc = float((classifier.predict(x.flatten(1).numpy()) == labels.numpy()).mean())
    assert acc > 0.3, acc  # chance: 0.1
    # deterministic in the seed, different across seeds
    assert torch.equal(method.sample(4, seed=5, labels=labels[:4]), method.sample(4, seed=5, labels=labels[:4]))
    assert not torch.equal(method.sample(4, seed=5, labels=labels[:4]), method.sample(4, seed=6, labels=labels[:4]))


def test_decoding_goes_through_the_frozen_vae(runs):
    method, _ = load_run(runs["ld"], device="cpu")
    vae, _ = load_run(runs["vae"], device="cpu")
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    expected = vae.decode(z * method.z_std + method.z_mean).clamp(0, 1)
    assert torch.allclose(method.to_images(z), expected, atol=1e-6)
    # the autoencoder is not trained nor saved with the run
    assert set(method.nets) == {"model"}
    assert all(not p.requires_grad for net in method.autoencoder.nets.values() for p in net.parameters())


def test_cli_sample_latent_and_eval(runs, tmp_path):
    r = runner.invoke(app, ["sample", str(runs["ld"]), "--n", "16", "--out", str(tmp_path), "--guidance", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.png").is_file()
    r = runner.invoke(app, ["latent", str(runs["ld"]), "--pairs", "2", "--steps", "4", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "interpolation.png").is_file()
    r = runner.invoke(app, ["eval", str(runs["ld"]), "--n", "0", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    import json

    res = json.loads(r.output.strip().splitlines()[-1])
    assert np.isfinite(res["loss"]) and "bpd" not in res  # no pixel bound in a latent space


@pytest.mark.parametrize("overrides, words", [
    (("method.autoencoder=/nonexistent/run",), ["method.autoencoder", "not a run folder"]),
    (("method.autoencoder=LD",), ["without a vector latent", "autoencoder or VAE"]),
    (("method.autoencoder=VAE", "model.name=diffusion-unet"), ["model.name=diffusion-mlp"]),
])
def test_bad_autoencoders_name_the_fix(runs, tmp_path, overrides, words):
    overrides = tuple(o.replace("=LD", f"={runs['ld']}").replace("=VAE", f"={runs['vae']}") for o in overrides)
    with pytest.raises(ConfigError) as e:
        train(digits_cfg(tmp_path, *LATENT, *overrides, "train.epochs=1"))
    for w in words:
        assert w in str(e.value), str(e.value)


def test_the_vector_denoiser_starts_at_zero_and_flattens_images():
    from profond.registry import MODELS

    net = MODELS.build("diffusion-mlp", in_shape=(6,), width=32, depth=2)
    z = torch.randn(3, 6)
    assert torch.equal(net(z, torch.tensor([0.0, 5.0, 9.0])), torch.zeros(3, 6))  # starts as the zero function
    img = MODELS.build("diffusion-mlp", in_shape=(1, 8, 8), width=32, depth=2)
    torch.nn.init.normal_(img.out.weight)
    x = torch.randn(2, 1, 8, 8)
    out = img(x, torch.tensor([1.0, 2.0]))
    assert out.shape == x.shape
    assert torch.allclose(out.flatten(1), img(x.flatten(1), torch.tensor([1.0, 2.0])).flatten(1))
