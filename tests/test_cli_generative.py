"""`profond sample / latent / eval` on generative runs, and the image figures of viz.images.

Runs are tiny sklearn-digits (8x8) models trained once per module: a VAE, a one-class AE and
a VQ-VAE. The Fashion-MNIST feature net resizes 8x8 images to 28x28: the sample metrics are
meaningless here, the test checks the plumbing (keys present, finite)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from profond.cli import app
from profond.viz.images import (
    animate_grids,
    grid_size,
    save_grid,
    save_latent_scatter,
    save_roc,
    save_strip,
)

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _train(root: Path, name: str, *overrides: str) -> Path:
    from profond.config import resolve
    from profond.train import train

    cfg = resolve(overrides=[
        "data.name=digits", "data.val_size=300", "data.batch_size=64", "train.quiet=true", "train.device=cpu",
        f"out={root}", f"name={name}", *overrides])
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("genruns")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        return {
            "vae": _train(root, "vae", "model.name=vae", "model.hidden=[64]", "model.latent_dim=4",
                          "train.epochs=3", "optim.lr=0.003", "method.iwae_eval_k=5"),
            "ae": _train(root, "ae", "model.name=ae", "model.hidden=[64]", "model.latent_dim=4",
                         "method.normal_class=0", "train.epochs=2", "optim.lr=0.003"),
            "vqvae": _train(root, "vqvae", "model.name=vqvae", "model.num_codes=16", "model.code_dim=8",
                            "model.hidden=16", "model.res_hidden=8", "model.num_res=1", "train.epochs=1",
                            "data.subset=128"),
        }


@pytest.mark.parametrize("cmd", ["sample", "latent", "eval"])
def test_help_has_examples(cmd):
    r = invoke(cmd, "--help")
    assert r.exit_code == 0, r.output
    assert "Examples" in r.output and f"profond {cmd}" in r.output


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_sample_png_size_and_seed(runs, tmp_path):
    r = invoke("sample", runs["vae"], "--n", 10, "--seed", 3, "--out", tmp_path / "a", "--recon")
    assert r.exit_code == 0, r.output
    png = tmp_path / "a" / "samples.png"
    assert str(png) in r.output and (tmp_path / "a" / "reconstructions.png").is_file()
    assert Image.open(png).size == grid_size(10, 8, 8, nrow=4)  # nrow = ceil(sqrt(10)), 8x8 digits
    assert Image.open(png).size == ((4 * (8 + 2) + 2) * 7, (3 * (8 + 2) + 2) * 7)
    assert invoke("sample", runs["vae"], "--n", 10, "--seed", 3, "--out", tmp_path / "b").exit_code == 0
    assert invoke("sample", runs["vae"], "--n", 10, "--seed", 4, "--out", tmp_path / "c").exit_code == 0
    a, b, c = (_pixels(tmp_path / d / "samples.png") for d in "abc")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() > 0  # not a blank image


def test_sample_without_prior_exits_2(runs, tmp_path):
    r = invoke("sample", runs["ae"], "--out", tmp_path)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "cannot sample" in r.output and "--recon" in r.output
    assert not (tmp_path / "samples.png").exists()
    r = invoke("sample", runs["ae"], "--out", tmp_path, "--recon")  # reconstructions still work
    assert r.exit_code == 0, r.output
    assert (tmp_path / "reconstructions.png").is_file() and not (tmp_path / "samples.png").exists()


@pytest.mark.parametrize("args, words", [
    (["sample", "/nonexistent/run"], ["not a run folder"]),
    (["sample", "VAE", "--n", "0"], ["--n 0"]),
    (["sample", "VAE", "--checkpoint", "middle"], ["last or best"]),
    (["eval", "VAE", "--features", "imagenet"], ["--features 'imagenet'", "fmnist", "inception"]),
    (["latent", "VAE", "--a", "100000"], ["--a 100000", "test image index"]),
    (["latent", "VAE", "--codes"], ["no discrete codes"]),
    (["latent", "VQVAE"], ["no vector latent", "--codes"]),
    (["sample", "VAE", "--temperature", "0"], ["--temperature 0", "> 0"]),
    (["sample", "VAE", "--temperature", "0.7"], ["sample --temperature", "normalizing flow or PixelCNN"]),
    (["eval", "VAE", "--images", "."], ["eval --images", "exact likelihood"]),
])
def test_errors_exit_2(runs, args, words, tmp_path):
    args = [str(runs["vae"]) if a == "VAE" else str(runs["vqvae"]) if a == "VQVAE" else a for a in args]
    r = invoke(*args, "--out", tmp_path)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, r.output


def test_latent_writes_three_pngs(runs, tmp_path):
    r = invoke("latent", runs["vae"], "--out", tmp_path, "--a", 0, "--b", 5, "--steps", 6, "--dims", 3)
    assert r.exit_code == 0, r.output
    for name in ("interpolation.png", "traversal.png", "latent_scatter.png"):
        p = tmp_path / name
        assert p.stat().st_size > 1000 and str(p) in r.output
    # the strip: original a, 6 decoded steps, original b
    assert Image.open(tmp_path / "interpolation.png").size[0] == grid_size(8, 8, 8, nrow=8)[0]
    r = invoke("latent", runs["ae"], "--out", tmp_path / "ae", "--center", "zero", "--points", 100)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ae" / "traversal.png").is_file()


def test_latent_codes_exports_vq_indices(runs, tmp_path):
    from safetensors import safe_open

    r = invoke("latent", runs["vqvae"], "--codes", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    path = tmp_path / "codes-test.safetensors"
    assert str(path) in r.output
    with safe_open(str(path), "pt") as f:
        idx = f.get_tensor("indices")
        assert idx.shape == (len(f.get_tensor("labels")), 2, 2)  # 8x8 digits -> 2x2 code grid
        assert int(idx.max()) < 16


def test_eval_json_vae_has_likelihood_and_sample_metrics(runs, tmp_path):
    r = invoke("eval", runs["vae"], "--json", "--n", 200, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout.strip().splitlines()[-1])
    for k in ("elbo", "recon", "kl", "iwae_nll", "fid", "kid_mean", "kid_std", "is_mean", "precision", "recall"):
        assert isinstance(m[k], float) and math.isfinite(m[k]), (k, m.get(k))
    assert m["elbo"] < 0 and m["fid"] >= 0 and m["n_fake"] == 200 and m["features"] == "fmnist"
    assert len(m["kl_per_dim"]) == 4 and isinstance(m["class_histogram"], dict)
    assert json.loads((tmp_path / "eval.json").read_text())["fid"] == m["fid"]
    r = invoke("eval", runs["vae"], "--n", 0, "--out", tmp_path)  # table: no lists in it, likelihood only
    assert r.exit_code == 0, r.output
    assert "elbo" in r.output and "kl_per_dim" not in r.output and "fid" not in r.output


def test_eval_anomaly_run_writes_roc(runs, tmp_path):
    r = invoke("eval", runs["ae"], "--json", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0.5 < m["roc_auc"] <= 1.0
    assert len(m["roc_fpr"]) == len(m["roc_tpr"]) > 2
    assert (tmp_path / "roc.png").stat().st_size > 1000 and m["roc_png"] == str(tmp_path / "roc.png")


# -- viz.images ---------------------------------------------------------------------------------
def test_grid_pixel_sizes_rgb_title_and_strip(tmp_path):
    p = save_grid(torch.rand(5, 3, 28, 28), tmp_path / "g.png", title="five")
    assert Image.open(p).size == grid_size(5, 28, 28, title=True) == ((3 * 30 + 2) * 2, (2 * 30 + 2) * 2 + 16)
    s = save_strip([torch.rand(4, 1, 28, 28), torch.rand(4, 1, 28, 28)], tmp_path / "s.png")
    assert Image.open(s).size == grid_size(8, 28, 28, nrow=4)
    with pytest.raises(ValueError, match="C 1 or 3"):
        save_grid(torch.rand(2, 2, 8, 8), tmp_path / "bad.png")


def test_scatter_roc_and_gif(tmp_path):
    z, y = np.random.default_rng(0).normal(size=(200, 6)), np.arange(200) % 10
    assert save_latent_scatter(z, y, [f"c{i}" for i in range(10)], tmp_path / "sc.png").stat().st_size > 1000
    fpr = np.linspace(0, 1, 11)
    assert save_roc({"a": (fpr, fpr ** 0.5, 0.66)}, tmp_path / "roc.png").stat().st_size > 1000
    gif = animate_grids([torch.rand(9, 1, 8, 8) for _ in range(3)], tmp_path / "a.gif", titles=["1", "2", "3"])
    im = Image.open(gif)
    assert im.format == "GIF" and im.n_frames == 3
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files
