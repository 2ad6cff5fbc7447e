"""Variational autoencoder (course ch. 9): the ELBO's pieces against torch.distributions,
the reparameterisation trick, the IWAE bound against an exact log-likelihood, and trained
runs on sklearn digits (ELBO vs a baseline, β, free bits, active units, exact resume)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from profond.config import resolve
from profond.errors import ConfigError
from profond.methods.vae import (
    bernoulli_log_lik,
    gaussian_log_lik,
    iwae_bound,
    kl_gaussians,
    kl_normal_std,
    log_weights,
    reparameterize,
)
from profond.registry import METHODS, MODELS
from profond.train import load_run, train
from tests.conftest import digits_cfg

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is ~5x faster here


def vae_cfg(out: Path, *overrides: str):
    """A seconds-long VAE run on sklearn digits (8x8)."""
    return digits_cfg(out, "model.name=vae", "model.hidden=[128]", "model.latent_dim=8",
                      "data.batch_size=64", "optim.lr=0.005", *overrides)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"]
    return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))


# ----------------------------------------------------------------------------------------
# closed forms (eqs. 9.14, 9.18, 9.28)


def test_kl_closed_form_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(16, 5, generator=g) * 2, torch.randn(16, 5, generator=g)
    ref = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_normal_std(mu, logvar).sum(-1), ref)
    assert torch.all(kl_normal_std(torch.zeros(3), torch.zeros(3)) == 0)  # q = p


def test_general_gaussian_kl_eq_9_28_and_its_reduction_to_9_18():
    g = torch.Generator().manual_seed(1)
    d = 4
    a, b = torch.randn(3, d, d, generator=g, dtype=torch.float64), torch.randn(3, d, d, generator=g, dtype=torch.float64)
    cov1, cov2 = a @ a.mT + 0.5 * torch.eye(d), b @ b.mT + 0.5 * torch.eye(d)
    mu1, mu2 = torch.randn(3, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    ref = kl_divergence(MultivariateNormal(mu1, cov1), MultivariateNormal(mu2, cov2))
    torch.testing.assert_close(kl_gaussians(mu1, cov1, mu2, cov2), ref)
    # exercise 9.1: μ₂ = 0, Σ₂ = I and a diagonal Σ₁ give eq. 9.18
    logvar = torch.randn(3, d, generator=g, dtype=torch.float64)
    general = kl_gaussians(mu1, torch.diag_embed(logvar.exp()), torch.zeros_like(mu1),
                           torch.eye(d, dtype=torch.float64).expand(3, d, d))
    torch.testing.assert_close(general, kl_normal_std(mu1, logvar).sum(-1))


def test_reparameterised_gradients_match_exact_and_score_function_estimates():
    """∇ E_q[f(z)] for f(z) = Σ (z − c)²: E = Σ (μ − c)² + σ², so ∂/∂μ = 2(μ − c), ∂/∂logσ² = σ²."""
    g = torch.Generator().manual_seed(2)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([0.0, -1.0, 0.7], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    n = 200_000
    eps = torch.randn(n, 3, generator=g, dtype=torch.float64)
    z = reparameterize(mu, logvar, eps=eps)  # eq. 9.14, gradient through μ and σ
    (z - c).pow(2).sum(1).mean().backward()
    exact_mu, exact_lv = 2 * (mu.detach() - c), logvar.detach().exp()
    torch.testing.assert_close(mu.grad, exact_mu, atol=0.03, rtol=0)
    torch.testing.assert_close(logvar.grad, exact_lv, atol=0.03, rtol=0)
    # the score-function (REINFORCE) estimator, E[f(z) ∇ log q(z)], agrees (with more noise)
    zs = z.detach()
    f = (zs - c).pow(2).sum(1, keepdim=True)
    f = f - f.mean()  # baseline: same expectation, less variance
    std = torch.exp(0.5 * logvar.detach())
    score_mu = (f * (zs - mu.detach()) / std**2).mean(0)
    score_lv = (f * 0.5 * ((zs - mu.detach()) ** 2 / std**2 - 1)).mean(0)
    torch.testing.assert_close(score_mu, exact_mu, atol=0.15, rtol=0)
    torch.testing.assert_close(score_lv, exact_lv, atol=0.15, rtol=0)


def test_gaussian_likelihood_is_an_exact_density_in_nats():
    g = torch.Generator().manual_seed(3)
    mean, x = torch.rand(4, 1, 3, 3, generator=g), torch.rand(4, 1, 3, 3, generator=g)
    ref = Normal(mean, 0.2).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(gaussian_log_lik(mean, x, math.log(0.2)), ref)
    logits = torch.randn(4, 1, 3, 3, generator=g)
    xb = torch.bernoulli(torch.full((4, 1, 3, 3), 0.5), generator=g)
    ref_b = torch.distributions.Bernoulli(logits=logits).log_prob(xb).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_lik(logits, xb), ref_b)


# ----------------------------------------------------------------------------------------
# IWAE (eq. 9.29) on a linear-Gaussian model with an exact marginal likelihood


class LinearGaussianVAE(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s² I): exact log p(x) = log N(x; b, WWᵀ + s² I).

    The encoder is the *diagonal* part of the exact posterior, so the ELBO is strictly below
    log p(x) and only the IWAE bound closes the gap."""

    def __init__(self, d_x=5, d_z=2, s=0.5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_x, d_z, generator=g, dtype=torch.float64)
        w[:, 1] = w[:, 0] + 2.0 * w[:, 1]  # correlated columns: a strongly correlated posterior
        self.W = w
        self.b = torch.randn(d_x, generator=g, dtype=torch.float64)
        self.s = s
        prec = torch.eye(d_z, dtype=torch.float64) + self.W.T @ self.W / s**2
        self.post_cov = torch.linalg.inv(prec)
        self.latent_dim = d_z

    def encode(self, x):
        mu = (x - self.b) @ self.W @ self.post_cov.T / self.s**2
        return mu, torch.log(torch.diagonal(self.post_cov)).expand_as(mu)

    def decode(self, z):
        return z.to(torch.float64) @ self.W.T + self.b

    def log_lik(self, out, x):
        return Normal(out, self.s).log_prob(x).sum(-1)

    def elbo(self, x):
        """Closed-form ELBO: E_q[log N(x; Wz + b, s²I)] − KL(q ‖ N(0, I)), q = N(μ, diag σ²)."""
        mu, logvar = self.encode(x)
        resid = (x - self.decode(mu)).pow(2).sum(-1) + (self.W.pow(2) * logvar.exp()[:, None, :]).sum((-2, -1))
        ell = -0.5 * len(self.b) * math.log(2 * math.pi * self.s**2) - resid / (2 * self.s**2)
        return ell - kl_normal_std(mu, logvar).sum(-1)

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(len(self.b), dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x)


def test_iwae_k1_is_the_elbo_exactly_with_the_same_eps_and_in_expectation():
    m = LinearGaussianVAE()
    x = m.decode(torch.randn(6, 2, dtype=torch.float64)) + 0.5 * torch.randn(6, 5, dtype=torch.float64)
    mu, logvar = m.encode(x)
    # same ε: IWAE-1 = log p(x|z) + log p(z) − log q(z|x), the single-sample ELBO
    eps = torch.randn((1, 6, 2), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z = mu + torch.exp(0.5 * logvar) * eps[0]
    q = Normal(mu, torch.exp(0.5 * logvar))
    elbo_mc = m.log_lik(m.decode(z), x) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    torch.testing.assert_close(iwae_bound(m, x, 1, m.log_lik, seed=7), elbo_mc)
    # in expectation: E[IWAE-1] = E_q[log p(x|z)] − KL (closed form, eq. 9.18)
    mc = iwae_bound(m, x[:1].expand(50_000, 5), 1, m.log_lik, seed=8)
    assert abs(mc.mean() - m.elbo(x[:1])[0]) < 4 * mc.std() / math.sqrt(len(mc))


def test_iwae_approaches_the_exact_log_likelihood_and_elbo_is_below_it():
    m = LinearGaussianVAE()
    g = torch.Generator().manual_seed(4)
    x = m.decode(torch.randn(8, 2, generator=g, dtype=torch.float64)) + 0.5 * torch.randn(8, 5, generator=g, dtype=torch.float64)
    exact = m.exact_log_px(x)
    elbo = m.elbo(x)
    assert torch.all(elbo < exact - 0.2)  # ELBO ≤ log p(x); the gap is KL(q ‖ p(z|x)) > 0 here
    bounds = {k: iwae_bound(m, x, k, m.log_lik, seed=5, max_batch=8 * 1024) for k in (1, 10, 20_000)}
    assert bounds[20_000].sub(exact).abs().max() < 0.03 and bounds[20_000].sub(exact).mean().abs() < 0.01
    assert bounds[1].mean() < bounds[10].mean() < bounds[20_000].mean() <= exact.mean() + 0.01
    # chunked evaluation (max_batch) is the same seeded estimate as one pass
    one_pass = iwae_bound(m, x, 10, m.log_lik, seed=5, max_batch=10**6)
    assert one_pass.sub(bounds[10]).abs().max() < 0.5  # same estimator, other ε order
    assert torch.equal(iwae_bound(m, x, 10, m.log_lik, seed=5), iwae_bound(m, x, 10, m.log_lik, seed=5))


def test_log_weights_shapes_for_k_samples():
    m = LinearGaussianVAE()
    x = torch.randn(3, 5, dtype=torch.float64)
    mu, logvar = m.encode(x)
    eps = torch.randn(4, 3, 2, dtype=torch.float64)
    out = m.decode((mu + torch.exp(0.5 * logvar) * eps).reshape(12, 2))
    assert log_weights(x, out, mu, logvar, eps, m.log_lik).shape == (4, 3)


# ----------------------------------------------------------------------------------------
# models, registry, options


def test_registration_and_default_method():
    assert "method:vae" in MODELS.entry("vae").tags and "method:autoencoder" in MODELS.entry("ae").tags
    assert "vae" in METHODS and "autoencoder" in METHODS
    cfg = resolve(overrides=["model.name=vae", "data.name=digits"])
    assert cfg.method.name == "vae"
    course = MODELS.build("vae")  # §9.8: 784-512-(20+20), 20-512-784
    assert sum(p.numel() for p in course.parameters()) == 835_384
    x = torch.rand(2, 1, 28, 28)
    logits, mu, logvar, z = course(x)
    assert logits.shape == x.shape and mu.shape == logvar.shape == z.shape == (2, 20)
    out, _, _, zk = course(x, torch.randn(3, 2, 20))  # k = 3 samples per image (IWAE)
    assert out.shape == (6, 1, 28, 28) and zk.shape == (3, 2, 20)


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("upsample", ["transpose", "nearest"])
def test_conv_vae_shapes(shape, upsample):
    m = MODELS.build("vae", in_shape=list(shape), arch="conv", upsample=upsample, latent_dim=4)
    x = torch.rand(3, *shape)
    logits, mu, logvar, _ = m(x)
    assert logits.shape == x.shape and mu.shape == (3, 4)
    logits.sum().backward()


@pytest.mark.parametrize("override, match", [
    ("method.likelihood=poisson", "likelihood"),
    ("method.beta=-1", "beta"),
    ("method.binarize=static", "binarize"),
    ("method.free_bits=-0.1", "free_bits"),
    ("method.iwae_k=0", "iwae_k"),
    ("method.iwae_k=5 method.beta=2", "iwae_k"),
    ("method.likelihood=gaussian method.binarize=dynamic", "binarize"),
    ("model.name=ae method.name=vae", "model.name=vae"),
    ("model.arch=cnn", "arch"),
    ("method.nonsense=1", "nonsense"),
])
def test_bad_options_raise_config_error(tmp_path, override, match):
    from profond.train.loop import Trainer

    with pytest.raises(ConfigError, match=match):
        Trainer(vae_cfg(tmp_path, *override.split()))


def test_conv_on_too_small_images_is_a_config_error():
    with pytest.raises(ConfigError, match="at least 8x8"):
        MODELS.build("vae", in_shape=[1, 4, 4], arch="conv")
    with pytest.raises(ConfigError, match="channels"):
        MODELS.build("vae", arch="conv", channels=[8, 16])


# ----------------------------------------------------------------------------------------
# trained runs on digits


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """latent_dim=50, trained long enough (400 steps) for unused units to collapse."""
    out = tmp_path_factory.mktemp("vae")
    cfg = vae_cfg(out, "model.latent_dim=50", "optim.lr=0.01", "train.epochs=20")
    res = train(cfg)
    method, trainer = load_run(res.run_dir, device="cpu")  # the `profond eval` path (no data built)
    return res, method, trainer


def per_pixel_bernoulli_baseline(method) -> float:
    """−log-likelihood (nats/image) of independent per-pixel Bernoullis with the training means."""
    train_data, val = method.build_loaders()
    mean = torch.cat([x for x, _ in train_data.batches(0)]).mean(0).clamp(1e-6, 1 - 1e-6)
    xv = torch.cat([x for x, _ in val.batches(0)])
    return float(-(xv * mean.log() + (1 - xv) * (1 - mean).log()).flatten(1).sum(1).mean())


def test_trained_vae_beats_init_and_a_baseline(trained):
    res, method, trainer = trained
    hist = res.history
    _, val = method.build_loaders()
    baseline = per_pixel_bernoulli_baseline(method)
    final = trainer.evaluate(val, detailed=True)
    assert final["loss"] == pytest.approx(hist[-1]["val_loss"], rel=1e-4)  # loaded = trained weights
    assert final["elbo"] == pytest.approx(-final["loss"]) and final["loss"] == pytest.approx(final["recon"] + final["kl"])
    fresh = METHODS.get("vae")(method.cfg, method.env, with_data=False)  # the same model at init
    fresh.eval()
    init_loss = fresh.evaluate(val, trainer.ctx)["loss"]
    assert final["loss"] < init_loss - 10  # clearly better than at initialisation (~44 nats)
    assert final["loss"] < baseline - 0.5  # and than per-pixel Bernoullis (25.4 vs 26.9 nats)
    # IWAE: log p(x) ≥ IWAE-100 ≥ ELBO, in nats per image
    assert final["iwae_nll"] < final["loss"] and final["iwae_eval_k"] == 100
    assert len(final["kl_per_dim"]) == 50 and sum(final["kl_per_dim"]) == pytest.approx(final["kl"], rel=1e-3)
    assert "test_elbo" in res.summary["final"] and res.summary["final"]["test_active_units"] >= 1


def test_iwae_bound_increases_with_k_on_a_trained_model(trained):
    _, method, _ = trained
    x, _ = method.test_images(300)
    b = {k: method.iwae(x, k=k, seed=1).mean().item() for k in (1, 5, 50)}
    assert b[1] < b[5] < b[50]
    assert torch.equal(method.iwae(x[:20], k=5, seed=3), method.iwae(x[:20], k=5, seed=3))  # seeded


def test_active_units_latent_50_has_inactive_units(trained):
    res, method, trainer = trained
    _, val = method.build_loaders()
    r = trainer.evaluate(val, detailed=True)
    var = torch.tensor(r["posterior_mean_var"])
    assert r["active_units"] == int((var > 0.01).sum())
    assert 1 <= r["active_units"] < 50  # Burda et al.: some units collapse to the prior


def test_generative_hooks(trained):
    _, method, _ = trained
    assert method.can_sample and method.has_latent and method.latent_dim == 50
    s = method.sample(6, seed=3)
    assert s.shape == (6, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(s, method.sample(6, seed=3)) and not torch.equal(s, method.sample(6, seed=4))
    x, _ = method.test_images(5)
    z = method.encode(x)
    assert z.shape == (5, 50) and method.decode(z).shape == (5, 1, 8, 8)
    assert method.reconstruct(x).shape == x.shape


def test_beta_orders_kl_and_beta0_keeps_every_unit_active(tmp_path):
    kl = {}
    for beta in (0.5, 10.0):
        res = train(vae_cfg(tmp_path / f"b{beta}", f"method.beta={beta}", "train.epochs=2"))
        kl[beta] = res.summary["final"]["val_kl"]
    assert kl[10.0] < kl[0.5] / 5  # eq. 9.23: a heavy β squeezes the KL
    res = train(vae_cfg(tmp_path / "b0", "method.beta=0", "model.latent_dim=50", "train.epochs=3"))
    assert res.summary["final"]["val_active_units"] == 50  # nothing pulls μ to the prior


def test_free_bits_keep_each_dimension_above_lambda(tmp_path):
    lam = 0.5
    res = train(vae_cfg(tmp_path, f"method.free_bits={lam}", "train.epochs=8"))
    method, trainer = load_run(res.run_dir, device="cpu")
    _, val = method.build_loaders()
    kl = trainer.evaluate(val, detailed=True)["kl_per_dim"]
    assert min(kl) > 0.75 * lam, kl


def test_kl_annealing_and_binarization_survive_resume(tmp_path):
    args = ["method.kl_anneal_steps=30", "method.binarize=dynamic", "train.epochs=2"]
    ref = train(vae_cfg(tmp_path / "ref", *args))  # 2 x 20 steps: β still rising at the end
    part = vae_cfg(tmp_path / "res", *args[:-1], "train.epochs=1")
    train(part)
    res = train(vae_cfg(tmp_path / "res", *args), run_dir=tmp_path / "res" / "run", resume=True)
    assert res.summary["steps"] == ref.summary["steps"] == 40
    wa, wb = weights(ref.run_dir), weights(res.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed run differs: annealing state lost?"
    # β_t = min(1, t/30): the mean β of the first epoch's 20 steps is mean(0..19)/30
    assert ref.history[0]["train_beta"] == pytest.approx(sum(range(20)) / 20 / 30)


def test_conv_gaussian_learned_sigma_trained_on_the_iwae_bound(tmp_path):
    res = train(vae_cfg(tmp_path, "model.arch=conv", "model.channels=[8,16,16]", "method.likelihood=gaussian",
                        "method.iwae_k=4", "train.epochs=2"))
    f, h = res.summary["final"], res.history
    assert math.isfinite(f["test_loss"]) and f["val_sigma"] != pytest.approx(0.1)  # σ learned
    assert h[-1]["val_loss"] < h[0]["val_loss"] and "train_iwae" in h[-1]
    method, _ = load_run(res.run_dir, device="cpu")
    assert method.log_sigma().exp().item() == pytest.approx(f["val_sigma"], rel=1e-5)  # σ checkpointed
