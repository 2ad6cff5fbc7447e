"""The samplers of course §10.6–10.7 (profond.methods.samplers): exact denoisers of Gaussian data,
the bookkeeping (NFE, trajectory, progress, checks) and tiny MLPs that learn 8 modes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from profond.errors import ConfigError
from profond.methods.noise import FlowPath, NoiseSchedule
from profond.methods.samplers import SampleResult, guided, sample_ddim, sample_ddpm, sample_flow

pytestmark = pytest.mark.usefixtures("one_thread")

M, SD = 0.2, 0.3  # 1-D data N(M, SD²)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_denoiser(s: NoiseSchedule, prediction: str = "eps"):
    """The exact E[· | x_t] of N(M, SD²) data, as ε, x_0 or v; ``t`` arrives as a float index."""
    def f(x, t):
        ti = t.round().long()
        a = s.alphas_cumprod[ti].view(-1, 1).float()
        var = a * SD**2 + 1 - a
        eps = (1 - a).sqrt() * (x - a.sqrt() * M) / var
        x0 = M + a.sqrt() * SD**2 * (x - a.sqrt() * M) / var
        return {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction]
    return f


def gaussian_velocity(time_scale: float):
    """The exact E[x_0 − ε | x_τ] of the linear path (FlowPath) for N(M, SD²) data."""
    def v(x, t):
        tau = (t / time_scale).view(-1, 1)
        var = (1 - tau) ** 2 + tau**2 * SD**2
        r = (x - tau * M) / var
        return (M + tau * SD**2 * r) - (1 - tau) * r
    return v


def test_guidance_eq_10_22():
    g = gen(0)
    c, u = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    assert guided(c, u, 0.0) is c
    for w in (0.5, 3.0):
        torch.testing.assert_close(guided(c, u, w), (1 + w) * c - w * u)
        torch.testing.assert_close(guided(c, u, w), c + w * (c - u))   # extrapolation away from ∅
    torch.testing.assert_close(guided(c, c, 7.0), c)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_samplers_with_the_exact_denoiser_draw_the_data_law(prediction):
    s = NoiseSchedule("linear", 1000)
    f = gaussian_denoiser(s, prediction)
    n = 4000
    runs = {
        "ddpm": sample_ddpm(f, s, (n, 1), generator=gen(1), prediction=prediction),
        "ddpm-100": sample_ddpm(f, s, (n, 1), generator=gen(2), steps=100, prediction=prediction, sigma="beta"),
        "ddim-200": sample_ddim(f, s, (n, 1), generator=gen(3), steps=200, prediction=prediction),
    }
    for name, r in runs.items():
        assert isinstance(r, SampleResult) and r.x.shape == (n, 1)
        assert abs(r.x.mean().item() - M) < 0.03, (name, r.x.mean())
        assert abs(r.x.std().item() / SD - 1) < 0.05, (name, r.x.std())
    assert runs["ddpm"].nfe == 1000 and runs["ddpm-100"].nfe == 100 and runs["ddim-200"].nfe == 200


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_ddpm_on_a_subsequence_is_ddim_eta1(prediction):
    """DDPM on the respaced process (σ² = β̃') and DDIM with η = 1 on the same S indices are the
    same sampler: the same generator gives the same samples."""
    s = NoiseSchedule("cosine", 1000)
    f = gaussian_denoiser(s, prediction)
    a = sample_ddpm(f, s, (500, 1), generator=gen(4), steps=20, prediction=prediction).x
    b = sample_ddim(f, s, (500, 1), generator=gen(4), steps=20, eta=1.0, prediction=prediction).x
    torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    c = sample_ddim(f, s, (500, 1), generator=gen(4), steps=20, eta=0.0, prediction=prediction).x
    assert (a - c).abs().max() > 0.05


def test_a_wrong_denoiser_is_caught():
    """The check above can fail: ε̂ = 0 (never denoise) leaves samples far from the law."""
    s = NoiseSchedule("linear", 1000)
    r = sample_ddim(lambda x, t: torch.zeros_like(x), s, (2000, 1), generator=gen(5), steps=50, clip_x0=False)
    assert abs(r.x.std().item() / SD - 1) > 0.5


def test_flow_with_the_exact_velocity():
    T = 1000
    v = gaussian_velocity(T - 1)
    n = 4000
    x_T = torch.randn(n, 1, generator=gen(6))
    err = {}
    for method, nfe in (("euler", 20), ("heun", 39)):
        r = sample_flow(v, (n, 1), generator=gen(7), steps=20, method=method, time_scale=T - 1, x_T=x_T)
        assert r.nfe == nfe
        err[method] = abs(r.x.std().item() / SD - 1) + abs(r.x.mean().item() - M)
    assert err["heun"] < 0.03, err
    assert err["heun"] < err["euler"], err                      # second order beats first order


def test_ddim_eta0_is_deterministic_given_x_T():
    s = NoiseSchedule("cosine", 200)
    f = gaussian_denoiser(s)
    x_T = torch.randn(64, 1, generator=gen(8))
    a = sample_ddim(f, s, (64, 1), generator=gen(9), steps=25, x_T=x_T).x
    b = sample_ddim(f, s, (64, 1), generator=gen(10), steps=25, x_T=x_T).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = sample_ddim(f, s, (64, 1), generator=gen(9), steps=25, eta=0.5, x_T=x_T).x
    d = sample_ddim(f, s, (64, 1), generator=gen(10), steps=25, eta=0.5, x_T=x_T).x
    assert (c - d).abs().max() > 1e-3
    e = sample_ddpm(f, s, (64, 1), generator=gen(9), steps=25, x_T=x_T).x
    torch.testing.assert_close(e, sample_ddpm(f, s, (64, 1), generator=gen(9), steps=25, x_T=x_T).x)
    assert x_T.abs().max() > 1  # the input was not clamped in place


def test_network_sees_the_original_indices_and_trajectory():
    s = NoiseSchedule("linear", 100)
    seen = []

    def f(x, t):
        assert t.shape == (len(x),) and t.dtype.is_floating_point
        seen.append(t[0].item())
        return torch.zeros_like(x)

    traj, ticks = [], []
    r = sample_ddpm(f, s, (3, 2, 2), generator=gen(11), steps=10, trajectory=traj, trajectory_every=3,
                    progress=lambda k, n: ticks.append((k, n)))
    assert seen == [float(i) for i in s.timesteps(10).tolist()] and seen[0] == 99.0
    assert r.nfe == 10 and ticks == [(k, 10) for k in range(1, 11)]
    assert [k for k, _, _ in traj] == [0, 3, 6, 9, 10]
    assert traj[0][1].shape == (3, 2, 2) and r.trajectory is traj
    torch.testing.assert_close(traj[-1][1], r.x.cpu())
    assert r.x.abs().max() <= 1
    seen.clear()
    traj = []
    sample_ddim(f, s, (3, 2, 2), generator=gen(11), steps=4, trajectory=traj)
    assert seen == [99.0, 74.0, 49.0, 24.0] and [k for k, _, _ in traj] == [0, 1, 2, 3, 4]
    seen.clear()
    sample_flow(f, (3, 2, 2), generator=gen(11), steps=4, method="heun", time_scale=99.0)
    assert seen == pytest.approx([0.0, 24.75, 24.75, 49.5, 49.5, 74.25, 74.25])


def test_inputs_are_checked():
    s = NoiseSchedule("linear", 100)
    f = gaussian_denoiser(s)
    for kw, match in ((dict(steps=0), "1..100"), (dict(steps=101), "more steps than T"),
                      (dict(eta=1.5), r"\[0, 1\]"), (dict(prediction="score"), "eps, x0, v")):
        with pytest.raises(ConfigError, match=match):
            sample_ddim(f, s, (2, 1), generator=gen(), **kw)
    with pytest.raises(ConfigError, match="more steps than T"):
        sample_ddpm(f, s, (2, 1), generator=gen(), steps=101)
    with pytest.raises(ConfigError, match="beta_tilde"):
        sample_ddpm(f, s, (2, 1), generator=gen(), sigma="large")
    with pytest.raises(ConfigError, match="euler, heun"):
        sample_flow(f, (2, 1), generator=gen(), steps=3, method="rk4")
    with pytest.raises(ConfigError, match="at least 1"):
        sample_flow(f, (2, 1), generator=gen(), steps=0)
    with pytest.raises(ConfigError, match="shape"):
        sample_ddim(f, s, (2, 1), generator=gen(), x_T=torch.zeros(3, 1))


# -- tiny MLPs that learn a mixture of 8 Gaussians on a circle ------------------------------------------
RADIUS, MODE_SD = 0.7, 0.08
MODES = torch.tensor([[RADIUS * math.cos(2 * math.pi * k / 8), RADIUS * math.sin(2 * math.pi * k / 8)]
                      for k in range(8)])


def ring(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 8, (n,), generator=g)
    return MODES[k] + MODE_SD * torch.randn(n, 2, generator=g)


class TinyDenoiser(nn.Module):
    """An MLP on (x, sinusoidal features of t / t_max): enough for 2-D toy data."""

    def __init__(self, t_max: float, width: int = 128, freqs: int = 4) -> None:
        super().__init__()
        self.t_max = t_max
        self.register_buffer("freq", 2.0 ** torch.arange(freqs) * math.pi)
        self.net = nn.Sequential(nn.Linear(2 + 2 * freqs, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = (t / self.t_max).view(-1, 1) * self.freq
        return self.net(torch.cat([x, a.sin(), a.cos()], 1))


def train(model: nn.Module, loss_fn, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    g = gen(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-2, total_steps=steps)
    for _ in range(steps):
        loss = loss_fn(model, ring(1024, g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def covers_every_mode(x: torch.Tensor) -> tuple[bool, str]:
    d = torch.cdist(x.float(), MODES)                  # (N, 8)
    near, k = d.min(1)
    share = torch.bincount(k, minlength=8).float() / len(x)
    inside = (near < 3 * MODE_SD).float().mean().item()
    return bool(share.min() >= 0.05 and inside >= 0.9), f"shares {share.tolist()}, within 3σ {inside:.3f}"


@pytest.fixture(scope="module")
def ddpm_model():
    s = NoiseSchedule("cosine", 200)

    def loss(model, x0, g):
        t = torch.randint(0, s.T, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        return (model(s.q_sample(x0, t, noise), t.float()) - noise).pow(2).mean()   # (10.16)

    return s, train(TinyDenoiser(s.T - 1), loss, 2000, seed=20)


@pytest.fixture(scope="module")
def flow_model():
    T = 200

    def loss(model, x0, g):
        tau = torch.rand(len(x0), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        xt = FlowPath.sample(x0, noise, tau)
        return (model(xt, tau * (T - 1)) - FlowPath.target(x0, noise)).pow(2).mean()

    return T, train(TinyDenoiser(T - 1), loss, 2000, seed=21)


@pytest.mark.slow  # two learned 2-D samplers, minutes of CI time; run with -m slow
def test_learned_ddpm_and_ddim_cover_the_8_modes(ddpm_model):
    s, model = ddpm_model
    with torch.no_grad():
        for name, r in (("ddpm", sample_ddpm(model, s, (2000, 2), generator=gen(30))),
                        ("ddim-50", sample_ddim(model, s, (2000, 2), generator=gen(31), steps=50))):
            ok, why = covers_every_mode(r.x)
            assert ok, (name, why)
        ok, why = covers_every_mode(torch.randn(2000, 2, generator=gen(32)) * 0.7)
        assert not ok, why  # the check can fail


@pytest.mark.slow  # two learned 2-D samplers, minutes of CI time; run with -m slow
def test_learned_flow_covers_the_8_modes(flow_model):
    T, model = flow_model
    with torch.no_grad():
        for method, steps in (("euler", 50), ("heun", 20)):
            r = sample_flow(model, (2000, 2), generator=gen(40), steps=steps, method=method, time_scale=T - 1)
            ok, why = covers_every_mode(r.x)
            assert ok, (method, why)
