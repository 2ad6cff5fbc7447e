"""The noise process of course ch. 10 (profond.methods.noise): theorems 10.3–10.6 checked numerically."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from profond.errors import ConfigError
from profond.methods.noise import (
    PREDICTIONS,
    FlowPath,
    NoiseSchedule,
    discretized_gaussian_log_likelihood,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- schedules ----------------------------------------------------------------------------------
def test_linear_endpoints_and_eq_10_17():
    s = NoiseSchedule("linear", 1000)
    assert s.betas[0].item() == pytest.approx(1e-4, abs=1e-12)
    assert s.betas[-1].item() == pytest.approx(0.02, abs=1e-12)
    i = torch.arange(1000, dtype=torch.float64)
    torch.testing.assert_close(s.betas, 1e-4 + i / 999 * (0.02 - 1e-4))                  # (10.17)
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))         # (10.6), (10.7)
    assert s.alphas_cumprod_prev[0].item() == 1.0
    torch.testing.assert_close(s.alphas_cumprod_prev[1:], s.alphas_cumprod[:-1])


def test_cosine_follows_eq_10_18():
    T, sft = 1000, 0.008
    s = NoiseSchedule("cosine", T)
    f = lambda t: math.cos((t / T + sft) / (1 + sft) * math.pi / 2) ** 2  # noqa: E731
    for i in (0, 10, 500, 900):  # index i is t = i + 1; no clipping this far from T
        assert s.alphas_cumprod[i].item() == pytest.approx(f(i + 1) / f(0), rel=1e-9)
    assert bool((s.betas <= 0.999).all()) and s.betas[-1].item() == pytest.approx(0.999)
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())


@pytest.mark.parametrize("T", [1000, 200])
@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_schedules_reach_noise(name, T):
    s = NoiseSchedule(name, T)
    assert s.betas.shape == (T,) and s.betas.dtype == torch.float64
    assert bool((s.betas > 0).all()) and bool((s.betas < 1).all())
    assert bool((s.alphas_cumprod[1:] < s.alphas_cumprod[:-1]).all())
    assert s.alphas_cumprod[-1].item() < 1e-3          # q(x_T) ≈ N(0, I) (remark 10.2)
    assert s.alphas_cumprod[0].item() > 0.99            # the first step barely adds noise
    if name == "sigmoid":
        b0, b1 = 1e-4 * 1000 / T, 0.02 * 1000 / T
        assert bool((s.betas[1:] > s.betas[:-1]).all())
        assert b0 < s.betas[0].item() < 0.01 * b1 and 0.99 * b1 < s.betas[-1].item() < b1


def test_linear_T200_is_scaled():
    s = NoiseSchedule("linear", 200)
    assert s.betas[0].item() == pytest.approx(5e-4) and s.betas[-1].item() == pytest.approx(0.1)


def test_bad_schedule_names_the_choices():
    with pytest.raises(ConfigError, match="linear, cosine, sigmoid"):
        NoiseSchedule("quadratic")
    with pytest.raises(ConfigError, match="T >= 2"):
        NoiseSchedule("linear", 1)


# -- theorem 10.3: the chain of eq. 10.1 has the marginals of eq. 10.8 ----------------------------
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_markov_chain_matches_closed_form(name):
    s = NoiseSchedule(name, 1000)
    g = gen(1)
    n = 20000
    # a skewed, bimodal x_0: mean and variance far from N(0, 1)
    x0 = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.3, 0.9, -0.4) \
        + 0.05 * torch.rand(n, generator=g, dtype=torch.float64)
    m0, v0 = x0.mean(), x0.var()
    x = x0.clone()
    checks = {0, 9, 99, 299, 699, 999}
    for i in range(1000):
        x = s.q_step(x, i, torch.randn(n, generator=g, dtype=torch.float64))   # (10.1)
        if i in checks:
            a = s.alphas_cumprod[i]
            mean, var = a.sqrt() * m0, a * v0 + 1 - a                           # (10.8)
            cov = ((x - x.mean()) * (x0 - m0)).mean()
            se = (var / n).sqrt()
            assert abs(x.mean() - mean) < 5 * se, (i, x.mean(), mean)
            assert abs(x.var() / var - 1) < 5 * math.sqrt(2 / n) + 0.01, (i, x.var(), var)
            assert abs(cov - a.sqrt() * v0) < 5 * (var * v0 / n).sqrt(), (i, cov, a.sqrt() * v0)
    # and q_sample draws the same marginal in one go
    xt = s.q_sample(x0, 999, torch.randn(n, generator=g, dtype=torch.float64))
    assert abs(xt.var() - x.var()) < 0.05


# -- theorem 10.4: the posterior against Bayes' rule on a grid ------------------------------------
@pytest.mark.parametrize("i", [1, 10, 500, 999])
def test_posterior_matches_numerical_bayes(i):
    s = NoiseSchedule("linear", 1000)
    x0, xt = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.3, dtype=torch.float64)
    a_t, ab_prev = s.alphas[i], s.alphas_cumprod_prev[i]
    grid = torch.linspace(-4, 4, 2_000_001, dtype=torch.float64)                # x_{t−1}
    log_p = (Normal(ab_prev.sqrt() * x0, (1 - ab_prev).sqrt()).log_prob(grid)          # q(x_{t−1} | x_0)
             + Normal(a_t.sqrt() * grid, s.betas[i].sqrt()).log_prob(xt))               # q(x_t | x_{t−1})
    p = torch.exp(log_p - log_p.max())
    p = p / p.sum()
    num_mean = (p * grid).sum()
    num_var = (p * (grid - num_mean) ** 2).sum()
    mean, var = s.q_posterior(x0, xt, i)
    assert mean.item() == pytest.approx(num_mean.item(), abs=1e-6)
    assert var.item() == pytest.approx(num_var.item(), rel=1e-4)
    assert var.item() == pytest.approx((s.betas[i] * (1 - ab_prev) / (1 - s.alphas_cumprod[i])).item())  # (10.12)


# -- parameterisations ------------------------------------------------------------------------------
def draw(shape=(6, 3, 4, 4), T=1000, seed=0, name="cosine"):
    s = NoiseSchedule(name, T)
    g = gen(seed)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 1, 17, 400, 998, 999])[: shape[0]]
    return s, x0, noise, t, s.q_sample(x0, t, noise)


@pytest.mark.parametrize("p", PREDICTIONS)
def test_parameterisation_round_trips(p):
    s, x0, noise, t, xt = draw(name="linear")
    out = s.target(x0, noise, t, p)
    torch.testing.assert_close(s.predict_x0(xt, t, out, p), x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(s.predict_eps(xt, t, out, p), noise, atol=1e-6, rtol=0)
    if p == "v":  # v = √ᾱ ε − √(1−ᾱ) x_0 by hand
        a = s.alphas_cumprod[t].view(-1, 1, 1, 1)
        torch.testing.assert_close(out, a.sqrt() * noise - (1 - a).sqrt() * x0)


def test_gather_casts_and_broadcasts():
    s = NoiseSchedule()
    x = torch.zeros(3, 2, 5, dtype=torch.float32)
    v = s.gather(s.betas, torch.tensor([0, 5, 999]), x)
    assert v.shape == (3, 1, 1) and v.dtype == torch.float32
    assert v[2].item() == pytest.approx(0.02)
    assert s.gather(s.betas, 999, x).shape == (1, 1, 1)
    with pytest.raises(ConfigError):
        s.gather(s.betas, 1000, x)


@pytest.mark.parametrize("p", PREDICTIONS)
def test_min_snr_weights_every_parameterisation_like_eps(p):
    s, x0, noise, t, xt = draw(name="linear")
    g = gen(3)
    out = s.target(x0, noise, t, p) + 0.3 * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    err_p = (out - s.target(x0, noise, t, p)).pow(2).flatten(1).sum(1)
    err_eps = (s.predict_eps(xt, t, out, p) - noise).pow(2).flatten(1).sum(1)
    snr = s.snr(t)
    gamma = 5.0
    w = s.loss_weight(t, p, gamma).double()
    torch.testing.assert_close(w * err_p, snr.clamp(max=gamma) / snr * err_eps, rtol=1e-5, atol=1e-9)
    assert s.loss_weight(t, p).tolist() == [1.0] * len(t)
    assert snr[0] > gamma > snr[-1]  # both sides of the clamp are exercised


# -- reverse steps ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", ["beta_tilde", "beta"])
def test_ddpm_step_two_readings_of_eq_10_20(sigma):
    s, x0, noise, t, xt = draw(name="linear")
    eps = noise + 0.1 * torch.randn(x0.shape, generator=gen(4), dtype=torch.float64)
    z = torch.randn(x0.shape, generator=gen(5), dtype=torch.float64)
    for k in range(len(t)):
        i = int(t[k])
        mean_ref, _ = s.q_posterior(s.predict_x0(xt[k], i, eps[k]), xt[k], i)   # µ̃(x_t, x̂_0)
        if i == 0:
            torch.testing.assert_close(s.ddpm_step(xt[k], eps[k], 0, sigma), mean_ref)
            continue
        got = s.ddpm_step(xt[k], eps[k], i, sigma, z[k])
        var = (s.posterior_variance if sigma == "beta_tilde" else s.betas)[i]
        torch.testing.assert_close(got, mean_ref + var.sqrt() * z[k])
    # batched t, index 0 gets no noise
    got = s.ddpm_step(xt, eps, t, sigma, z)
    mean0, _ = s.q_posterior(s.predict_x0(xt[:1], 0, eps[:1]), xt[:1], 0)
    torch.testing.assert_close(got[:1], mean0)
    with pytest.raises(ConfigError, match="noise"):
        s.ddpm_step(xt, eps, 5, sigma)


def test_ddim_sigma_eta1_is_beta_tilde():
    s = NoiseSchedule("cosine", 1000)
    for i in (1, 2, 50, 999):
        assert (s.ddim_sigma(i, i - 1, 1.0) ** 2).item() == pytest.approx(s.posterior_variance[i].item(), rel=1e-9)
    assert s.ddim_sigma(0, -1, 1.0).item() == 0.0
    ts = s.timesteps(20)
    r = s.respaced(ts)
    asc = ts.flip(0).tolist()
    for j in range(1, len(asc)):
        assert (s.ddim_sigma(asc[j], asc[j - 1], 1.0) ** 2).item() == pytest.approx(
            r.posterior_variance[j].item(), rel=1e-9)
    assert (s.ddim_sigma(500, 400, 0.5) / s.ddim_sigma(500, 400, 1.0)).item() == pytest.approx(0.5)
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[ts.flip(0)])
    assert r.timestep_map.tolist() == asc


def test_ddpm_on_a_subsequence_is_ddim_eta1():
    s, x0, noise, t, xt = draw(name="linear")
    ts = s.timesteps(10)
    r = s.respaced(ts)
    asc = ts.flip(0).tolist()
    z = torch.randn(x0.shape, generator=gen(6), dtype=torch.float64)
    eps = noise * 0.8
    for j in (1, 4, 9):
        a = s.ddim_step(xt, eps, asc[j], asc[j - 1], eta=1.0, noise=z)
        b = r.ddpm_step(xt, eps, j, "beta_tilde", z)
        torch.testing.assert_close(a, b)


def test_ddim_recovers_q_sample_with_the_true_noise():
    s, x0, noise, t, xt = draw(name="cosine")
    x = s.q_sample(x0, 700, noise)
    for t_prev in (699, 350, 0, -1):
        want = x0 if t_prev == -1 else s.q_sample(x0, t_prev, noise)
        torch.testing.assert_close(s.ddim_step(x, noise, 700, t_prev, 0.0), want)


def test_ddim_checks_eta_and_noise():
    s, x0, noise, t, xt = draw()
    with pytest.raises(ConfigError, match="noise"):
        s.ddim_step(xt, noise, t, t - 1, eta=0.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        s.ddim_step(xt, noise, t, t - 1, eta=1.5, noise=noise)
    # batched t: the same as per-example calls (t_prev = -1 for index 0)
    z = torch.randn(x0.shape, generator=gen(7), dtype=torch.float64)
    got = s.ddim_step(xt, noise * 0.5, t, t - 1, eta=0.3, noise=z)
    for k in range(len(t)):
        torch.testing.assert_close(got[k], s.ddim_step(xt[k], noise[k] * 0.5, int(t[k]), int(t[k]) - 1, 0.3, z[k]))


def test_ddim_is_an_euler_step_of_the_ode():
    """Exercise 10.3: x̄ = x/√ᾱ, σ = √(1−ᾱ)/√ᾱ; DDIM (η = 0) is x̄_prev = x̄_t + (σ_prev − σ_t) ε."""
    s, x0, noise, t, xt = draw(name="linear")
    eps = torch.randn(x0.shape, generator=gen(8), dtype=torch.float64)
    for ti, tp in ((999, 979), (500, 100), (10, -1), (1, 0)):
        x = xt[3]
        a = s.alphas_cumprod[ti]
        ap = s.alphas_cumprod[tp] if tp >= 0 else torch.tensor(1.0, dtype=torch.float64)
        sig, sig_p = ((1 - a) / a).sqrt(), ((1 - ap) / ap).sqrt()
        euler = ap.sqrt() * (x / a.sqrt() + (sig_p - sig) * eps[3])             # by hand
        torch.testing.assert_close(s.ddim_step(x, eps[3], ti, tp, 0.0), euler, atol=1e-6, rtol=0)
        torch.testing.assert_close(s.ode_euler_step(x, eps[3], ti, tp), euler, atol=1e-6, rtol=0)
        assert s.ode_sigma(ti).item() == pytest.approx(sig.item())


def test_timesteps_trailing():
    s = NoiseSchedule("linear", 1000)
    ts = s.timesteps(50)
    assert ts.dtype == torch.long and len(ts) == 50 and ts[0] == 999 and ts[-1] >= 0
    assert bool((ts[1:] < ts[:-1]).all())
    assert (ts[:-1] - ts[1:]).tolist() == [20] * 49
    assert s.timesteps(1000).tolist() == list(range(999, -1, -1))
    assert s.timesteps(1).tolist() == [999]
    t7 = NoiseSchedule("linear", 10).timesteps(7)
    assert t7[0] == 9 and len(set(t7.tolist())) == 7 and t7[-1] >= 0
    for bad in (0, 1001):
        with pytest.raises(ConfigError, match="more steps than T"):
            s.timesteps(bad)


# -- the variational bound (theorem 10.5) ---------------------------------------------------------------
def test_kl_is_zero_with_the_true_noise_and_matches_torch():
    s, x0, noise, t, xt = draw(name="linear")
    x0 = ((x0 + 1) * 127.5).round() / 127.5 - 1                # on the 256-bin grid
    xt = s.q_sample(x0, t, noise)
    k = s.vlb_terms(x0, xt, t, noise)
    assert bool((k[1:].abs() < 1e-8).all())                    # p_θ's mean is µ̃ exactly, variance β̃
    eps = noise + 0.2 * torch.randn(x0.shape, generator=gen(9), dtype=torch.float64)
    for sigma in ("beta_tilde", "beta"):
        got = s.vlb_terms(x0, xt, t, eps, sigma)
        mq, vq = s.q_posterior(x0, xt, t)
        mp, _ = s.q_posterior(s.predict_x0(xt, t, eps), xt, t)
        var = (s.posterior_variance if sigma == "beta_tilde" else s.betas)[t].view(-1, 1, 1, 1)
        ref = kl_divergence(Normal(mq[1:], vq[1:].sqrt().expand_as(mq[1:])),
                            Normal(mp[1:], var[1:].sqrt().expand_as(mp[1:]))).flatten(1).sum(1)
        torch.testing.assert_close(got[1:], ref)
        assert bool((got[1:] > 0).all())
    torch.testing.assert_close(s.vlb_loss(x0, xt, t, eps, sigma="beta"), (got / x0[0].numel()).float())


def test_decoder_term_is_the_mass_of_the_bin():
    s = NoiseSchedule("linear", 1000)
    x0 = torch.tensor([[-1.0, -1 + 2 / 255, 0.0 + 1 / 255, 1 - 2 / 255, 1.0, 0.5 + 1 / 255]], dtype=torch.float64)
    x0 = ((x0 + 1) * 127.5).round() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=gen(10), dtype=torch.float64)
    t = torch.tensor([0])
    xt = s.q_sample(x0, t, noise)
    eps = noise + 0.5
    mean, _ = s.q_posterior(s.predict_x0(xt, t, eps), xt, t)
    var = s.posterior_variance[1]                              # σ_1² = β̃_2 (β̃_1 = 0)
    d = Normal(mean, var.sqrt())
    hi = torch.where(x0 > 1 - 1e-6, torch.ones_like(x0), d.cdf(x0 + 1 / 255))
    lo = torch.where(x0 < -1 + 1e-6, torch.zeros_like(x0), d.cdf(x0 - 1 / 255))
    want = -torch.log(hi - lo).sum(1)
    torch.testing.assert_close(s.vlb_terms(x0, xt, t, eps), want)
    # far in a tail (z ≈ −50) the log-mass stays finite: ≈ log Φ(u) ≈ −u²/2 − log(−u) − ½ log 2π
    far = discretized_gaussian_log_likelihood(torch.tensor([0.0], dtype=torch.float64),
                                              torch.tensor([0.5], dtype=torch.float64),
                                              torch.tensor([1e-4], dtype=torch.float64))
    u = (1 / 255 - 0.5) / 0.01
    approx = -u * u / 2 - math.log(-u) - 0.5 * math.log(2 * math.pi)
    assert math.isfinite(far.item()) and far.item() == pytest.approx(approx, rel=1e-3)


def test_prior_kl():
    s = NoiseSchedule("linear", 200)
    x0 = torch.rand(3, 5, generator=gen(11), dtype=torch.float64) * 2 - 1
    a = s.alphas_cumprod[-1]
    ref = kl_divergence(Normal(a.sqrt() * x0, (1 - a).sqrt()), Normal(0.0, 1.0)).sum(1)
    torch.testing.assert_close(s.prior_kl(x0), ref)


def _gaussian_data(n, m, sd, g):
    """``n`` values of N(m, sd²) quantised to the 256 bins of [-1, 1]; and the exact entropy
    (nats) of the quantised law."""
    x = (m + sd * torch.randn(n, 1, generator=g, dtype=torch.float64)).clamp(-1, 1)
    x = ((x + 1) * 127.5).round() / 127.5 - 1
    centers = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    d = Normal(m, sd)
    hi = torch.where(centers > 1 - 1e-6, torch.ones(256, dtype=torch.float64), d.cdf(centers + 1 / 255))
    lo = torch.where(centers < -1 + 1e-6, torch.zeros(256, dtype=torch.float64), d.cdf(centers - 1 / 255))
    p = (hi - lo).clamp_min(1e-300)
    return x, float(-(p * p.log()).sum())


@pytest.mark.parametrize(("sigma", "margin"), [("beta", 0.3), ("beta_tilde", 1.2)])
def test_bound_of_the_optimal_denoiser_on_gaussian_data(sigma, margin):
    """1-D data N(m, sd²) on 256 bins; ε*(x_t, t) = E[ε | x_t] of the (unquantised) Gaussian is
    known in closed form. The bound (eq. 10.15) of that denoiser, averaged over the data, is at
    least the entropy of the quantised law (no model does better) and within ``margin`` bits of
    it (what remains is the quantisation the Gaussian ε* ignores at small t, larger with the
    smaller variance β̃); the ε = 0 denoiser is far worse; drawing 25 t per image gives the
    same bound on average (unbiased)."""
    s = NoiseSchedule("linear", 1000)
    m, sd = 0.1, 0.3
    x0, h = _gaussian_data(2000, m, sd, gen(12))

    def eps_star(xt, t):
        a = s.alphas_cumprod[t].view(-1, 1)
        return (1 - a).sqrt() * (xt - a.sqrt() * m) / (a * sd**2 + 1 - a)

    bpd = s.bits_per_dim(eps_star, x0, generator=gen(13), sigma=sigma)
    h_bits = h / math.log(2)
    se = bpd.std().item() / math.sqrt(len(bpd))
    assert h_bits - 3 * se < bpd.mean().item() < h_bits + margin, (bpd.mean(), h_bits)
    worse = s.bits_per_dim(lambda xt, t: torch.zeros_like(xt), x0[:300], timesteps=50, generator=gen(14),
                           sigma=sigma)
    assert worse.mean().item() > h_bits + 1
    sub = s.bits_per_dim(eps_star, x0, timesteps=25, generator=gen(15), sigma=sigma)
    se_sub = sub.std().item() / math.sqrt(len(sub))
    assert abs(sub.mean().item() - bpd.mean().item()) < 4 * se_sub + 3 * se, (sub.mean(), bpd.mean(), se_sub)


# -- flow matching ----------------------------------------------------------------------------------------
def test_flow_path_convention():
    g = gen(16)
    x0, noise = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    tau = torch.tensor([0.0, 0.25, 0.5, 1.0])
    x = FlowPath.sample(x0, noise, tau)
    torch.testing.assert_close(x[0], noise[0])
    torch.testing.assert_close(x[3], x0[3])
    u = FlowPath.target(x0, noise)
    torch.testing.assert_close(FlowPath.predict_x0(x, tau, u), x0)
    torch.testing.assert_close(FlowPath.predict_noise(x, tau, u), noise)
    # u is the derivative of the path
    dt = 1e-3
    torch.testing.assert_close((FlowPath.sample(x0, noise, 0.5 + dt) - FlowPath.sample(x0, noise, 0.5)) / dt, u,
                               atol=1e-3, rtol=0)
