"""The ``autoregressive`` method through the one loop and the CLI, on sklearn digits (8x8): a
tiny Gated PixelCNN learns (exact test bits/dim far below the uniform 8 and its first epoch),
samples are deterministic in the seed and sharpen with the temperature, data scores better than
noise, a loaded run reproduces its bits/dim; a PixelCNN prior over a VQ-VAE's codes (course §9.7)
trains, samples images through `profond sample` and checks its VQ-VAE; bad options are
ConfigErrors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from profond.cli import app
from profond.errors import ConfigError, ProfondError
from profond.train import load_run

from .conftest import digits_cfg

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()

GATED = ("model.name=gated-pixelcnn", "model.width=16", "model.layers=4", "model.out_hidden=32",
         "method.name=autoregressive", "method.grid_n=0", "data.batch_size=64", "optim.name=adam",
         "optim.lr=0.003", "train.threads=1")
VQVAE = ("model.name=vqvae", "model.num_codes=32", "model.code_dim=8", "model.hidden=32", "model.res_hidden=16",
         "model.restart_after=5", "method.name=vqvae", "data.batch_size=64", "optim.lr=1e-2", "train.epochs=2",
         "train.threads=1")


def cfg(out: Path, *overrides: str):
    return digits_cfg(out, *GATED, *overrides)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    from profond.train import train

    root = tmp_path_factory.mktemp("autoregressive")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        out["pixels"] = train(cfg(root / "pixels", "train.epochs=5", "method.grid_n=4"))
        out["cond"] = train(cfg(root / "cond", "model.conditional=true", "train.epochs=2"))
        out["vqvae"] = train(digits_cfg(root / "vqvae", *VQVAE))
        out["prior"] = train(cfg(root / "prior", f"method.vqvae={out['vqvae'].run_dir}", "model.layers=2",
                                 "train.epochs=8", "method.grid_n=4"))
    return out


@pytest.fixture(scope="module")
def runs(results) -> dict[str, Path]:
    return {k: r.run_dir for k, r in results.items()}


def column(result, key: str) -> list[float]:
    return [float(r[key]) for r in result.history if r.get(key) not in (None, "")]


def test_training_lowers_the_exact_bits_per_dim(results, runs):
    bpd = column(results["pixels"], "val_bpd")
    assert bpd == column(results["pixels"], "val_loss")
    # digits hold 17 grey levels: even a model that knew only which 17 would need log2(17) = 4.09
    assert bpd[-1] < bpd[0] - 1.0 and bpd[-1] < 3.0, bpd
    summary = json.loads((runs["pixels"] / "summary.json").read_text())
    assert summary["final"]["test_bpd"] < 3.0 and summary["levels"] == 256
    assert (runs["pixels"] / "samples" / "epoch-005.png").is_file()


def test_a_loaded_run_reproduces_its_bits_per_dim(results, runs):
    method, trainer = load_run(runs["pixels"])
    test = json.loads((runs["pixels"] / "summary.json").read_text())["final"]["test_bpd"]
    ev = method.evaluate(method.test_data(), trainer.ctx)
    assert ev["bpd"] == pytest.approx(test, abs=1e-9) and ev["loss"] == ev["bpd"]
    x, _ = method.test_images()
    per_image = method.image_bpd(x)
    assert per_image.dtype == torch.float64 and per_image.shape == (len(x),)
    assert float(per_image.mean()) == pytest.approx(test, abs=1e-5)  # other batching, same numbers


def test_data_scores_better_than_noise(runs):
    method, _ = load_run(runs["pixels"])
    x, _ = method.test_images(100)
    noise = torch.rand(100, *method.image_shape, generator=torch.Generator().manual_seed(0))
    data_bpd, noise_bpd = method.image_bpd(x), method.image_bpd(noise)
    assert data_bpd.max() < noise_bpd.min(), (data_bpd.max(), noise_bpd.min())
    assert noise_bpd.mean() > 8.0  # worse than uniform: the model has learnt where digits put their mass


def test_samples_are_images_deterministic_in_the_seed(runs):
    method, _ = load_run(runs["pixels"])
    s = method.sample(16, seed=3)
    assert s.shape == (16, 1, 8, 8) and s.dtype == torch.float32 and 0 <= s.min() and s.max() <= 1
    assert torch.equal(s * 255, (s * 255).round())  # 8-bit levels
    assert torch.equal(s, method.sample(16, seed=3)) and not torch.equal(s, method.sample(16, seed=4))
    x, _ = method.test_images()
    assert abs(float(s.mean()) - float(x.mean())) < 0.15  # mostly dark background, like the data


def test_a_low_temperature_gives_sharper_less_diverse_samples(runs):
    method, _ = load_run(runs["pixels"])
    warm = method.sample(32, seed=0)
    method.set_temperature(0.1)
    cold = method.sample(32, seed=0)
    method.set_temperature(1.0)
    assert torch.equal(method.sample(32, seed=0), warm)
    spread = lambda s: float(s.std(0).mean())  # noqa: E731  (per-pixel spread across the samples)
    assert spread(cold) < 0.5 * spread(warm), (spread(cold), spread(warm))
    # each factor sharpened towards its mode: the cold samples are far more likely under the model
    assert method.image_bpd(cold).mean() < method.image_bpd(warm).mean() - 0.5
    with pytest.raises(ProfondError, match="temperature"):
        method.set_temperature(0.0)


def test_class_conditional_sampling_and_scoring(runs):
    method, _ = load_run(runs["cond"])
    assert method.conditional
    a = method.sample(8, seed=0, labels=torch.zeros(8, dtype=torch.long))
    b = method.sample(8, seed=0, labels=torch.full((8,), 7))
    assert a.shape == (8, 1, 8, 8) and not torch.equal(a, b)
    x, y = method.test_images(20)
    bpd = method.image_bpd(x)  # log of the mixture (1/10) Σ_c p(x | c)
    assert torch.isfinite(bpd).all() and bpd.mean() < 8.0
    with pytest.raises(ProfondError, match="class indices"):
        method.sample(4, labels=torch.full((4,), 10))


def test_cli_sample_with_temperature_and_eval(runs, tmp_path):
    run = runs["pixels"]
    r = runner.invoke(app, ["sample", str(run), "--n", "4", "--temperature", "0.5", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.png").is_file()
    r = runner.invoke(app, ["eval", str(run), "--n", "0", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output.strip().splitlines()[-1])
    summary = json.loads((run / "summary.json").read_text())
    assert ev["bpd"] == pytest.approx(summary["final"]["test_bpd"], abs=1e-6)
    # eval --images: a test image saved as PNG scores as it does in memory; noise scores far worse
    from PIL import Image

    method, _ = load_run(run)
    x, _ = method.test_images(1)
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.fromarray((x[0, 0] * 255).round().byte().numpy()).save(folder / "a_digit.png")
    noise = torch.randint(0, 256, (8, 8), generator=torch.Generator().manual_seed(0)).byte().numpy()
    Image.fromarray(noise).save(folder / "b_noise.png")
    r = runner.invoke(app, ["eval", str(run), "--images", str(folder), "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output.strip().splitlines()[-1])["images"]
    assert scores["a_digit.png"] == pytest.approx(float(method.image_bpd(x)[0]), abs=1e-5)  # float32 batching
    assert scores["b_noise.png"] > 8 > 3 > scores["a_digit.png"]


# -- the prior over a VQ-VAE's codes ------------------------------------------------------------
def test_the_prior_learns_the_code_grids(results, runs):
    bits = column(results["prior"], "val_bits_per_code")
    uniform = math.log2(32)
    assert bits == column(results["prior"], "val_loss")
    assert bits[-1] < bits[0] and bits[-1] < uniform - 1.0, (bits, uniform)
    summary = json.loads((runs["prior"] / "summary.json").read_text())
    assert summary["num_codes"] == 32 and summary["code_grid"] == [2, 2] and summary["image_shape"] == [1, 8, 8]
    assert summary["final"]["test_bits_per_image"] == pytest.approx(4 * summary["final"]["test_bits_per_code"])
    saved = yaml.safe_load((runs["prior"] / "config.yaml").read_text())
    assert saved["model"]["levels"] == 32 and Path(saved["method"]["vqvae"]).is_absolute()
    # it models the context: far below the cross-entropy of the codes' marginal at each grid position
    method, _ = load_run(runs["prior"])
    train_codes = method.encode(method.data.train_x).long().flatten(1)   # (N, 4)
    test_codes = method.encode(method.data.test_x).long().flatten(1)
    marginal = 0.0
    for j in range(4):
        p = torch.bincount(train_codes[:, j], minlength=32).double() + 0.5   # add-1/2 smoothing
        marginal += float(-(p / p.sum())[test_codes[:, j]].log2().mean()) / 4
    assert summary["final"]["test_bits_per_code"] < 0.75 * marginal, (summary["final"], marginal)


def test_prior_samples_are_decoded_code_grids(runs, tmp_path):
    method, _ = load_run(runs["prior"])
    codes = method.sample_grids(6, seed=1)
    assert codes.shape == (6, 1, 2, 2) and codes.dtype == torch.long and 0 <= codes.min() and codes.max() < 32
    images = method.sample(6, seed=1)
    assert images.shape == (6, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    assert torch.equal(images, method.vq.decode_indices(codes[:, 0]))
    with pytest.raises(ProfondError, match="bits per code"):
        method.image_bpd(images)
    r = runner.invoke(app, ["sample", str(runs["prior"]), "--n", "4", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.png").is_file()
    r = runner.invoke(app, ["eval", str(runs["prior"]), "--n", "0", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output.strip().splitlines()[-1])
    summary = json.loads((runs["prior"] / "summary.json").read_text())
    assert ev["bits_per_code"] == pytest.approx(summary["final"]["test_bits_per_code"], abs=1e-6)
    assert "bpd" not in ev
    assert (runs["prior"] / "samples" / "epoch-008.png").is_file()


def test_a_resumed_prior_ends_with_the_same_weights(runs, tmp_path):
    from safetensors.torch import load_file

    from profond.train import train

    def weights(run_dir: Path) -> dict[str, torch.Tensor]:
        latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"]
        return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))

    args = (f"method.vqvae={runs['vqvae']}", "model.layers=2", "data.subset=512")
    ref = train(cfg(tmp_path / "ref", *args, "train.epochs=2"))
    train(cfg(tmp_path / "res", *args, "train.epochs=1"))
    res = train(cfg(tmp_path / "res", *args, "train.epochs=2"), run_dir=tmp_path / "res" / "run", resume=True)
    a, b = weights(ref.run_dir), weights(res.run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_prior_refuses_a_vqvae_with_another_codebook(runs, tmp_path):
    copy = tmp_path / "prior"
    shutil.copytree(runs["prior"], copy, ignore=shutil.ignore_patterns(".lock"))
    doc = yaml.safe_load((copy / "config.yaml").read_text())
    doc["model"]["levels"] = 16  # as if the VQ-VAE folder now held a 32-code model retrained
    (copy / "config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="trained over 16 codes.*has 32.*config.yaml"):
        load_run(copy)


def test_prior_option_errors(runs, tmp_path):
    from profond.train.loop import Trainer

    cases = ((f"method.vqvae={tmp_path / 'nowhere'}", "no such folder"),
             (f"method.vqvae={tmp_path}", "not a run folder"),
             (f"method.vqvae={runs['pixels']}", "not a VQ-VAE"),
             (f"method.vqvae={runs['vqvae']}", "model.levels=8"),
             )
    for i, (over, needle) in enumerate(cases):
        extra = ("model.levels=8",) if "levels" in needle else ()
        with pytest.raises(ConfigError, match=needle):
            Trainer(cfg(tmp_path, over, *extra), run_dir=tmp_path / f"x{i}")


def test_the_prior_recipe_says_to_train_the_vqvae_first(tmp_path, monkeypatch):
    from profond.config import resolve
    from profond.train.loop import Trainer

    monkeypatch.chdir(tmp_path)  # no runs/fmnist-vqvae here
    recipe = resolve(recipe="fmnist-vqvae-prior", overrides=["data.name=digits", "train.quiet=true",
                                                             "train.device=cpu", f"out={tmp_path}"])
    assert recipe.method.args["vqvae"] == "runs/fmnist-vqvae"
    with pytest.raises(ConfigError, match="no such folder; train the VQ-VAE first .*--recipe fmnist-vqvae"):
        Trainer(recipe, run_dir=tmp_path / "x")


def test_bad_options_are_config_errors(tmp_path):
    from profond.train.loop import Trainer

    for over, needle in ((("method.temperature=0",), "method.temperature"),
                         (("method.grid_n=-1",), "method.grid_n"),
                         (("model.levels=17",), "256 levels"),
                         (("model.first_kernel=4",), "odd")):
        with pytest.raises(ConfigError, match=needle):
            Trainer(cfg(tmp_path, *over), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="gated-pixelcnn"):
        Trainer(digits_cfg(tmp_path, "model.name=mlp", "method.name=autoregressive"), run_dir=tmp_path / "y")


def test_embedded_pixel_levels_train_sample_and_score(tmp_path):
    """``model.categorical: true`` on pixels: each of the 256 levels embedded instead of read as
    a scalar; the loss, the samples and the scores then read the integer levels."""
    from profond.train import train

    run = train(cfg(tmp_path, "model.categorical=true", "model.layers=2", "train.epochs=2")).run_dir
    method, trainer = load_run(run)
    assert method.categorical and method.levels == 256
    s = method.sample(4, seed=0)
    assert s.shape == (4, 1, 8, 8) and torch.equal(s * 255, (s * 255).round())
    x, _ = method.test_images()
    test = json.loads((run / "summary.json").read_text())["final"]["test_bpd"]
    assert float(method.image_bpd(x).mean()) == pytest.approx(test, abs=1e-5) and test < 5.0
    noise = torch.rand(50, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert method.image_bpd(noise).mean() > method.image_bpd(x[:50]).mean() + 3


def test_a_logistic_mixture_output_learns(tmp_path):
    """``model.mixtures=5`` (PixelCNN++'s discretised logistics) trains through the same loss and
    samples through the same sampler: its output is the mixture's log-probabilities of the 256
    levels (a slower, wider tensor than the softmax's: a small subset here)."""
    from profond.train import train

    result = train(cfg(tmp_path, "model.mixtures=5", "model.layers=2", "data.subset=256", "data.val_size=100",
                       "data.eval_batch_size=100", "train.epochs=2"))
    bpd = column(result, "val_bpd")
    assert bpd[-1] < bpd[0] < 8.0, bpd
    method, _ = load_run(result.run_dir)
    s = method.sample(2, seed=0)
    assert s.shape == (2, 1, 8, 8) and torch.equal(s * 255, (s * 255).round())
