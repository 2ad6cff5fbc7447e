"""Resource limits (issue 13, case 8): sampling, evaluation and generation refuse, with exit 2
and before any allocation, a request whose output would not fit; they work in bounded batches.

``profond sample VAE_RUN --n 100000000`` was killed by the kernel at 23.8 GB."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from profond.base import limits
from profond.cli import app
from profond.errors import ProfondError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_exit_2(r) -> str:
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


# -- the helper --------------------------------------------------------------------------------
def test_available_memory_and_free_disk_are_read_from_the_system(tmp_path):
    mem = limits.available_memory()
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        kb = next(int(ln.split()[1]) for ln in meminfo.read_text().splitlines() if ln.startswith("MemAvailable:"))
        assert abs(mem - kb * 1024) < 2**30  # same figure, read a moment apart
    assert mem is None or mem > 0
    # a folder that does not exist yet is measured on its nearest existing parent
    free = limits.free_disk(tmp_path / "not" / "made" / "yet")
    assert free is not None and free > 0
    assert not (tmp_path / "not").exists()


def test_check_fits_names_the_estimate_the_limit_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(limits, "available_memory", lambda: 8 * 10**9)
    limits.check_fits(3.9e9, "x", "lower it")  # under half of the 8 GB: fine
    with pytest.raises(ProfondError) as e:
        limits.check_fits(4.1e9, "samples.png of 9 images", "lower --n")
    assert str(e.value) == ("samples.png of 9 images needs about 4.1 GB of memory, more than 50% of the 8.0 GB "
                            "available (MemAvailable); lower --n.")
    monkeypatch.setattr(limits, "free_disk", lambda path: 10)
    limits.check_fits(10, "f", "fix", memory=False, disk=tmp_path)
    with pytest.raises(ProfondError, match=r"^f needs about 11 B on disk, more than the 10 B free on the file system"):
        limits.check_fits(11, "f", "fix", memory=False, disk=tmp_path)
    # an unknown figure never blocks
    monkeypatch.setattr(limits, "available_memory", lambda: None)
    monkeypatch.setattr(limits, "free_disk", lambda path: None)
    limits.check_fits(1e30, "f", "fix", disk=tmp_path)
    with pytest.raises(ProfondError, match="--n is 10,001, more than the limit of 10,000; fix"):
        limits.check_count(10_001, 10_000, "--n", "fix")


# -- profond sample / eval on a tiny VAE -------------------------------------------------------
@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    from profond.config import resolve
    from profond.train import train

    root = tmp_path_factory.mktemp("vae")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        cfg = resolve(overrides=["model.name=vae", "model.hidden=[16]", "model.latent_dim=2", "data.name=digits",
                                 "data.val_size=100", "data.subset=256", "train.epochs=1", "train.quiet=true",
                                 "train.device=cpu", f"out={root}", "name=vae"])
        return train(cfg).run_dir


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if a refused request still draws samples."""
    from profond.methods.vae import VAEMethod

    def boom(self, n, **kw):
        raise AssertionError(f"sampled {n} images for a request that must be refused")

    monkeypatch.setattr(VAEMethod, "sample", boom)


def test_sample_huge_n_is_refused_at_once(vae_run, tmp_path, no_sampling):
    t0 = time.perf_counter()
    msg = one_line_exit_2(invoke("sample", vae_run, "--n", 100_000_000, "--out", tmp_path))
    assert time.perf_counter() - t0 < 5
    assert "--n (the images of one figure) is 100,000,000, more than the limit of 10,000" in msg
    assert "profond eval" in msg and not list(tmp_path.iterdir())


def test_sample_refuses_a_grid_that_does_not_fit_memory_or_disk(vae_run, tmp_path, monkeypatch, no_sampling):
    monkeypatch.setattr(limits, "available_memory", lambda: 10**6)
    msg = one_line_exit_2(invoke("sample", vae_run, "--n", 5000, "--out", tmp_path))
    assert "samples.png of 5,000 images" in msg and "MemAvailable" in msg and "lower --n" in msg
    monkeypatch.setattr(limits, "available_memory", lambda: None)
    monkeypatch.setattr(limits, "free_disk", lambda path: 10)
    msg = one_line_exit_2(invoke("sample", vae_run, "--n", 16, "--out", tmp_path / "o"))
    assert "on disk" in msg and "--out" in msg and not (tmp_path / "o").exists()


def test_sample_at_the_grid_limit_still_works(vae_run, tmp_path):
    from profond.cli.sample import MAX_GRID_IMAGES

    r = invoke("sample", vae_run, "--n", MAX_GRID_IMAGES, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.png").stat().st_size > 0


def test_eval_huge_n_is_refused_before_sampling(vae_run, tmp_path, no_sampling):
    t0 = time.perf_counter()
    msg = one_line_exit_2(invoke("eval", vae_run, "--n", 100_000_000, "--out", tmp_path))
    assert time.perf_counter() - t0 < 10
    assert "--n 100,000,000 samples" in msg and "of memory" in msg and "MemAvailable" in msg
    assert "lower --n" in msg and not (tmp_path / "eval.json").exists()


def test_eval_estimate_counts_features_not_all_images(vae_run, tmp_path, monkeypatch, no_sampling):
    # fmnist net: 128 features + 10 probabilities, float64, gathered twice: 2,208 bytes a sample
    monkeypatch.setattr(limits, "available_memory", lambda: 2 * 2208 * 1000)
    msg = one_line_exit_2(invoke("eval", vae_run, "--n", 1001, "--batch-size", 1, "--out", tmp_path))
    assert "--n 1,001 samples" in msg


def test_streamed_sample_metrics_equal_the_in_memory_ones():
    """The eval path hands evaluate_samples a stream of batches: same scores as one tensor."""
    from profond.metrics.generative import evaluate_samples

    g = torch.Generator().manual_seed(0)
    real = torch.rand(40, 1, 28, 28, generator=g)
    fake = torch.rand(30, 1, 28, 28, generator=g)
    whole = evaluate_samples(fake, real, batch_size=8, kid_subsets=3)
    streamed = evaluate_samples(iter(fake.split(8)), real, batch_size=8, kid_subsets=3, n_fake=30)
    assert streamed == whole and streamed["n_fake"] == 30
    with pytest.raises(ProfondError, match="at least 2 images"):
        evaluate_samples(iter([fake[:1]]), real, kid_subsets=3)


# -- profond generate --------------------------------------------------------------------------
def test_generate_huge_request_is_refused_before_loading(tmp_path):
    t0 = time.perf_counter()
    msg = one_line_exit_2(invoke("generate", tmp_path, "--n", 100_000_000, "--length", 200))
    assert time.perf_counter() - t0 < 5
    assert "--n 100,000,000 x --length 200 (tokens to generate)" in msg and "limit of 10,000,000" in msg
    msg = one_line_exit_2(invoke("generate", tmp_path, "--n", 1, "--length", 10**12))
    assert "limit of 10,000,000" in msg and "lower --n or --length" in msg


def test_generate_refuses_what_the_disk_cannot_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "free_disk", lambda path: 100)
    msg = one_line_exit_2(invoke("generate", tmp_path, "--n", 10, "--length", 100, "--out", tmp_path / "o"))
    assert "--n 10 texts of --length 100" in msg and "on disk" in msg


def test_char_lm_generates_in_bounded_batches(monkeypatch):
    from profond.data.tokenize import CharTokenizer
    from profond.methods import sequence
    from profond.models.rnn import char_lm

    method = object.__new__(sequence.CharLMMethod)
    method.tokenizer = CharTokenizer.fit("abcdef \n%")
    torch.manual_seed(0)
    model = char_lm(vocab_size=method.tokenizer.vocab_size, embed_dim=8, hidden_size=16, num_layers=1)
    method.nets = method.raw_nets = {"model": model}
    widths = []
    model.register_forward_pre_hook(lambda mod, args: widths.append(args[0].shape[0]))
    one_batch = method.generate("ab", n=2, length=12, seed=3)
    monkeypatch.setattr(sequence, "GENERATE_BATCH", 2)
    widths.clear()
    texts = method.generate("ab", n=5, length=12, seed=3)
    assert max(widths) == 2  # never more than a batch through the model
    assert len(texts) == 5 and all(t.startswith("ab") for t in texts)
    assert texts[:2] == one_batch  # the first batch keeps the seed: n <= batch is unchanged
    assert texts == method.generate("ab", n=5, length=12, seed=3)  # deterministic
    assert len(set(texts)) > 2  # later batches have seeds of their own
