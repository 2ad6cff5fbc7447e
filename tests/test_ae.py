"""Autoencoders (course def. 9.2): linear AE = PCA, denoising, sparse and contractive
penalties, one-class anomaly detection, options and generative hooks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from profond.errors import ConfigError, ProfondError
from profond.methods.autoencoder import (
    anomaly_scores,
    corrupt,
    jacobian_frobenius,
    kl_bernoulli,
    psnr,
)
from profond.registry import MODELS
from profond.train import load_run, train
from tests.conftest import digits_cfg

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is ~5x faster here


def ae_cfg(out: Path, *overrides: str):
    """A seconds-long autoencoder run on sklearn digits (8x8)."""
    return digits_cfg(out, "model.name=ae", "model.hidden=[64]", "model.latent_dim=8",
                      "data.batch_size=32", "optim.lr=0.003", *overrides)


# ----------------------------------------------------------------------------------------
# linear AE vs PCA (Baldi & Hornik 1989)


def test_linear_autoencoder_spans_the_principal_subspace():
    from scipy.linalg import subspace_angles
    from sklearn.decomposition import PCA

    from profond.data import load_dataset

    x = load_dataset("digits").train_x.double() / 255
    k = 4
    torch.manual_seed(1)
    model = MODELS.build("ae", in_shape=[1, 8, 8], hidden=[], latent_dim=k, linear=True).double()
    opt = torch.optim.LBFGS(model.parameters(), lr=1, max_iter=200, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure():
        opt.zero_grad()
        out, _ = model(x)
        loss = (out - x).pow(2).flatten(1).sum(1).mean()  # the method's MSE: per-image sum
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():  # the decoder is affine: its columns are decode(e_i) − decode(0)
        cols = (model.decode(torch.eye(k, dtype=torch.float64)) - model.decode(torch.zeros(1, k, dtype=torch.float64)))
    pca = PCA(n_components=k).fit(x.flatten(1).numpy())
    angles = np.degrees(subspace_angles(cols.flatten(1).T.numpy(), pca.components_.T))
    assert angles.max() < 5.0, angles


# ----------------------------------------------------------------------------------------
# pieces


def test_models_shapes_and_linear_has_no_nonlinearity():
    for shape in ([1, 8, 8], [1, 28, 28]):
        for arch in ("mlp", "conv"):
            m = MODELS.build("ae", in_shape=shape, arch=arch, latent_dim=5)
            x = torch.rand(2, *shape)
            out, z = m(x)
            assert out.shape == x.shape and z.shape == (2, 5) and m.out_activation == "sigmoid"
    lin = MODELS.build("ae", in_shape=[1, 8, 8], hidden=[16], latent_dim=3, linear=True)
    a, b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    f = lambda t: lin(t)[0] - lin(torch.zeros_like(t))[0]  # noqa: E731
    torch.testing.assert_close(f(2 * a - 3 * b), 2 * f(a) - 3 * f(b))  # linear map (+ offset)
    assert lin.out_activation == "identity"


def test_contractive_penalty_closed_form_equals_the_exact_jacobian():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 8, 8)
    for hidden in ([], [16]):  # closed form (one sigmoid layer) / autograd
        m = MODELS.build("ae", in_shape=[1, 8, 8], hidden=hidden, latent_dim=6, code_activation="sigmoid")
        enc = lambda t, m=m: m.encode(t[None])[0]  # noqa: E731
        exact = torch.stack([torch.autograd.functional.jacobian(enc, xi).pow(2).sum() for xi in x])
        xg = x.clone().requires_grad_(True)
        pen = jacobian_frobenius(m, xg, m.encode(xg))
        torch.testing.assert_close(pen, exact)
        pen.sum().backward()  # differentiable w.r.t. the weights
        assert m.encoder.net[0].weight.grad is not None


def test_corruptions_psnr_and_kl_sparsity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 8, 8, generator=g)
    sp = corrupt(x, "salt-pepper", 0.2, torch.Generator().manual_seed(1))
    changed = sp != x
    assert 0.18 < changed.float().mean() < 0.22 and set(sp[changed].unique().tolist()) <= {0.0, 1.0}
    gn = corrupt(x, "gaussian", 0.5, torch.Generator().manual_seed(1))
    assert gn.min() >= 0 and gn.max() <= 1
    assert torch.equal(gn, corrupt(x, "gaussian", 0.5, torch.Generator().manual_seed(1)))  # seeded
    assert corrupt(x, "none", 0.5) is x
    y = x.clone()
    y[:, :, 0, :] += 0.1 * 8 ** 0.5  # MSE 0.01 per image -> 20 dB
    torch.testing.assert_close(psnr(y, x), torch.full((200,), 20.0))
    assert kl_bernoulli(0.05, torch.tensor([0.05])).item() == pytest.approx(0.0, abs=1e-7)
    assert kl_bernoulli(0.05, torch.tensor([0.5])).item() == pytest.approx(
        0.05 * math.log(0.1) + 0.95 * math.log(1.9))


@pytest.mark.parametrize("override, match", [
    ("method.loss=l1", "loss"),
    ("method.noise=speckle", "noise"),
    ("method.normal_class=10", "normal_class"),
    ("method.normal_class=-1", "normal_class"),
    ("method.rho=1.5", "rho"),
    ("method.kl_sparsity=1", "code_activation=sigmoid"),
    ("model.linear=true method.loss=bce", "linear"),
    ("model.arch=conv method.contractive=0.1", "contractive"),
    ("model.arch=conv model.linear=true", "linear"),
    ("model.name=vae method.name=autoencoder", "autoencoder"),
    ("method.anomaly_quantile=1", "anomaly_quantile"),
])
def test_bad_options_raise_config_error(tmp_path, override, match):
    from profond.train.loop import Trainer

    with pytest.raises(ConfigError, match=match):
        Trainer(ae_cfg(tmp_path, *override.split()))


# ----------------------------------------------------------------------------------------
# trained runs on digits


def test_denoising_autoencoder_beats_the_noisy_input(tmp_path):
    res = train(ae_cfg(tmp_path, "method.noise=gaussian", "method.noise_level=0.3"))
    f = res.summary["final"]
    assert f["test_psnr"] > f["test_psnr_noisy"] + 0.5, f
    assert f["test_psnr_gain"] == pytest.approx(f["test_psnr"] - f["test_psnr_noisy"])


def test_sparse_autoencoder_mean_activation_approaches_rho(tmp_path):
    res = train(ae_cfg(tmp_path, "model.latent_dim=32", "model.code_activation=sigmoid",
                       "method.kl_sparsity=1.0", "method.rho=0.05", "train.epochs=4"))
    assert res.summary["final"]["val_code_mean"] == pytest.approx(0.05, abs=0.02)
    assert "train_kl_sparsity" in res.history[-1]


def test_contractive_and_l1_penalties_train(tmp_path):
    res = train(ae_cfg(tmp_path, "model.hidden=[32]", "model.latent_dim=4", "method.contractive=0.1",
                       "method.l1_code=0.01", "method.loss=bce", "train.epochs=2"))
    h = res.history
    assert h[-1]["val_loss"] < h[0]["val_loss"] and math.isfinite(h[-1]["train_jacobian_fro2"])
    assert "train_l1_code" in h[-1]


@pytest.fixture(scope="module")
def one_class(tmp_path_factory, one_thread):
    out = tmp_path_factory.mktemp("anomaly")
    res = train(ae_cfg(out, "method.normal_class=0", "data.val_size=400", "train.epochs=8"))
    method, trainer = load_run(res.run_dir, device="cpu")  # the `profond eval` path
    return res, method, trainer


def test_one_class_anomaly_detection(one_class):
    res, method, trainer = one_class
    f = res.summary["final"]
    assert f["test_roc_auc"] > 0.8, f
    assert 0 <= f["test_precision"] <= 1 and 0 <= f["test_recall"] <= 1 and f["test_f1"] > 0.5
    assert "val_roc_auc" not in f  # the validation split holds the normal class only
    train_data, val = method.build_loaders()
    assert set(train_data.y.unique().tolist()) == {0} and set(val.y.unique().tolist()) == {0}
    # evaluation of the saved run (no data built): the threshold comes from the same val split
    d = trainer.evaluate(method.test_data(), detailed=True)
    assert d["roc_auc"] == pytest.approx(f["test_roc_auc"]) and d["threshold"] == pytest.approx(f["test_threshold"])
    assert len(d["roc_fpr"]) == len(d["roc_tpr"]) > 2 and d["roc_tpr"][-1] == 1.0
    x, y = method.test_images()
    s = anomaly_scores(method, x)
    assert s.shape == (len(x),) and s[y != 0].mean() > 2 * s[y == 0].mean()


def test_autoencoder_hooks(one_class):
    _, method, _ = one_class
    assert not method.can_sample and method.has_latent and method.latent_dim == 8
    with pytest.raises(ProfondError, match="cannot sample"):
        method.sample(4)
    x, _ = method.test_images(6)
    z = method.encode(x)
    assert z.shape == (6, 8)
    r = method.decode(z)
    assert r.shape == x.shape and r.min() >= 0 and r.max() <= 1
    torch.testing.assert_close(method.reconstruct(x), r)
