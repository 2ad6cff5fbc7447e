"""Issue 18's likelihood experiments in quick mode (``likelihood-benchmark``, ``likelihood-ood``)
and the pieces they are made of: the 8x8 Fashion-MNIST, the background model's pixel mutation,
the ROC-AUC and the PNG complexity score."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import profond.experiments.likelihood as lx  # registers the experiments
from profond.metrics.likelihood import mutate_levels
from tests.conftest import run_quick_experiment

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


def test_fashion_8x8_is_the_pooled_dataset():
    from profond.data.vision import load_dataset

    full = load_dataset("fashion-mnist", progress=False)
    small = load_dataset("fashion-mnist-8x8", progress=False)
    assert small.shape == (1, 8, 8) and small.train_x.dtype == torch.uint8
    assert len(small.train_x) == len(full.train_x) and torch.equal(small.test_y, full.test_y)
    # pixel (1, 1) of image 0 is the mean of rows/cols 2..5 of the 28x28 image (2 pixels of padding)
    ref = full.train_x[0, 0, 2:6, 2:6].float().mean().round()
    assert small.train_x[0, 0, 1, 1].item() == int(ref)
    assert small.train_x[:, :, 0, 0].float().max() <= 255 / 4  # corner: 12 of its 16 pixels are padding
    assert load_dataset("fashion-mnist-8x8", progress=False) is small


def test_mutate_levels():
    x = torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert mutate_levels(x, 0.0) is x
    g = torch.Generator().manual_seed(1)
    y = mutate_levels(x, 0.3, generator=g)
    changed = (y != x).float().mean().item()
    assert 0.27 < changed < 0.33                                       # about the rate (a level may repeat)
    k = y[y != x] * 255
    assert torch.allclose(k, k.round(), atol=1e-4) and y.min() >= 0 and y.max() <= 1
    assert (mutate_levels(x, 1.0) != x).float().mean() > 0.99
    with pytest.raises(ValueError, match="mutation rate"):
        mutate_levels(x, 1.5)


def test_auroc_equals_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 300), rng.normal(0.7, 1, 200)
    a[:20] = b[:20] = 0.25                                             # ties count one half
    want = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[a, b])
    assert lx.auroc(a, b) == pytest.approx(want, abs=1e-12)
    assert lx.auroc(b, a) == pytest.approx(1 - want, abs=1e-12)


def test_png_complexity_orders_images():
    flat = torch.zeros(3, 1, 28, 28, dtype=torch.uint8)
    noise = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    lf, ln = lx.png_bits_per_dim(flat), lx.png_bits_per_dim(noise)
    assert (lf < 1.5).all() and (ln > 7.5).all()                      # noise does not compress below 8 bits


def test_digits_28_stand_in():
    x = lx.digits_28()
    assert x.shape == (1797, 1, 28, 28) and x.dtype == torch.uint8
    assert x[:, :, :2].max() == 0 and x[:, :, :, -2:].max() == 0 and x.float().mean() > 20


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return run_quick_experiment("likelihood-benchmark", tmp_path_factory)


@pytest.fixture(scope="module")
def ood(tmp_path_factory):
    return run_quick_experiment("likelihood-ood", tmp_path_factory)


def test_benchmark_table(bench):
    t = pd.read_csv(bench / "table.csv").set_index("model")
    assert list(t.index) == [m.label for m in lx.MODELS_]
    assert ((t.test_bpd > 0) & (t.test_bpd < 8)).all(), t             # every family beats uniform (8 bits)
    # the PixelCNN, trained a few seconds, already beats the uniform model by far and is exact
    assert t.loc["gated-pixelcnn", "test_bpd"] < 3.5 and t.loc["gated-pixelcnn", "bound"] == "exact"
    assert t.loc["gated-pixelcnn", "passes_per_sample"] == 64 and t.loc["realnvp", "passes_per_sample"] == 1
    assert t.loc["gated-pixelcnn", "sample_s_per_image"] > t.loc["glow", "sample_s_per_image"]
    for f in ("likelihood_bpd.png", "likelihood_curves.png"):
        assert (bench / f).read_bytes()[:8] == PNG
    s = json.loads((bench / "summary.json").read_text())
    assert s["claims"]["digits: flow_samples_faster_than_pixelcnn"] == "holds"


@pytest.mark.slow  # likelihood-ood --quick trains four models, minutes of CI time; run with -m slow
def test_ood_table(ood):
    t = pd.read_csv(ood / "table.csv")
    assert list(t.model) == ["realnvp", "gated-pixelcnn"] and set(t.ood_set) == {"digits"}
    for c in ("auroc_bpd", "auroc_llr", "auroc_complexity"):
        assert t[c].between(0, 1).all()
    # the background model explains what the pixel statistics explain: the ratio separates the sets
    assert (t.auroc_llr > 0.8).all(), t
    assert (ood / "likelihood_ood.png").read_bytes()[:8] == PNG
    s = json.loads((ood / "summary.json").read_text())
    assert set(s["claims"].values()) <= {"holds", "does not hold"}
    bg = json.loads((ood / "runs" / "realnvp-background" / "summary.json").read_text())
    assert "mutation_rate" in (ood / "runs" / "realnvp-background" / "config.yaml").read_text()
    assert bg["final"]["test_bpd"] > 0


def test_mutation_rate_refused_for_a_code_prior(tmp_path):
    from profond.errors import ConfigError
    from profond.train import train
    from tests.conftest import digits_cfg

    with pytest.raises(ConfigError, match="mutation_rate"):
        train(digits_cfg(tmp_path, "model.name=gated-pixelcnn", "method.name=autoregressive",
                         f"method.vqvae={tmp_path}", "method.mutation_rate=0.2", "train.epochs=1"))
