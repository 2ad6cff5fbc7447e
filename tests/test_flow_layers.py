"""The layers of profond.models.flow: each is invertible (f⁻¹(f(x)) = x), its log-determinant is
log|det J| of its full Jacobian (torch.func.jacrev, float64), a 2-D flow's density integrates to
1, and actnorm's data-dependent init happens once, on the first batch, and survives a state-dict
load (course: change of variables, RealNVP / Glow)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import jacrev

from profond.errors import ConfigError
from profond.models.flow import (
    ActNorm,
    AffineCoupling,
    InvConv1x1,
    MultiScaleFlow,
    Squeeze,
    VectorCoupling,
    VectorFlow,
    standard_normal_logp,
)
from profond.registry import MODELS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def perturb(module: nn.Module, std: float = 0.3) -> nn.Module:
    """Random non-zero weights everywhere (the zero-initialised last layers would make every
    coupling the identity and the tests trivial), in float64."""
    g = torch.Generator().manual_seed(1)
    module = module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("out.weight") or name.endswith("out.bias") or "loc" in name or "log_scale" in name:
                p.copy_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def layers_on(shape: tuple[int, int, int]) -> list[tuple[str, nn.Module]]:
    c = shape[0]
    out = [
        ("coupling-checker-tanh", AffineCoupling(c, "checkerboard", 0, hidden=8, blocks=1, scale="tanh")),
        ("coupling-checker-sigmoid-odd", AffineCoupling(c, "checkerboard", 1, hidden=8, blocks=1, scale="sigmoid")),
        ("actnorm", ActNorm(c)),
    ]
    if c >= 2:
        out += [("coupling-channel", AffineCoupling(c, "channel", 0, hidden=8, blocks=1, scale="tanh")),
                ("coupling-channel-odd", AffineCoupling(c, "channel", 1, hidden=8, blocks=0, scale="sigmoid")),
                ("invconv", InvConv1x1(c))]
    return out


LAYERS = [(shape, name) for shape in ((1, 4, 4), (3, 4, 4)) for name, _ in layers_on(shape)]


def build(shape, name):
    layer = dict(layers_on(shape))[name]
    layer = perturb(layer)
    if isinstance(layer, ActNorm):
        layer.initialized.fill_(1)  # keep the random b, log s (no data-dependent init here)
    return layer


@pytest.mark.parametrize("shape, name", LAYERS, ids=[f"{n}-{s[0]}ch" for s, n in LAYERS])
def test_layer_inverts_and_its_logdet_is_the_jacobian_logdet(shape, name):
    layer = build(shape, name)
    x = torch.randn(3, *shape, dtype=torch.float64)
    z, logdet = layer(x)
    assert z.shape == x.shape and logdet.shape == (3,)
    assert torch.allclose(layer.inverse(z), x, atol=1e-10)
    assert not torch.allclose(z, x)  # the layer does something

    for i in range(len(x)):
        def f(v):
            return layer(v.view(1, *shape))[0].flatten()
        jac = jacrev(f)(x[i].flatten())                          # (D, D)
        sign, ref = torch.linalg.slogdet(jac)
        assert sign != 0
        assert torch.allclose(logdet[i], ref, atol=1e-8), (name, logdet[i].item(), ref.item())


def test_squeeze_is_a_permutation_of_2x2_blocks():
    sq = Squeeze()
    x = torch.arange(2 * 2 * 4 * 6, dtype=torch.float64).view(2, 2, 4, 6)
    z, logdet = sq(x)
    assert z.shape == (2, 8, 2, 3) and torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    # channel 4c + 2a + b of z holds pixel (2i + a, 2j + b) of channel c
    assert torch.equal(z[:, 4 * 1 + 2 * 1 + 0], x[:, 1, 1::2, 0::2])
    assert torch.equal(sq.inverse(z), x)
    assert sorted(z.flatten().tolist()) == sorted(x.flatten().tolist())
    with pytest.raises(ConfigError, match="even"):
        sq(torch.zeros(1, 1, 3, 4))


def test_checkerboard_coupling_keeps_its_masked_pixels():
    layer = perturb(AffineCoupling(1, "checkerboard", 0, hidden=8, blocks=1))
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    z, _ = layer(x)
    keep = (torch.arange(4).view(-1, 1) + torch.arange(4).view(1, -1)) % 2 == 0
    assert torch.equal(z[:, 0][:, keep], x[:, 0][:, keep]) and not torch.allclose(z[:, 0][:, ~keep], x[:, 0][:, ~keep])


def test_a_fresh_realnvp_is_the_identity_up_to_its_squeezes():
    # zero-initialised last layers: s = t = 0 in every coupling, so z is a permutation of x
    x = torch.randn(4, 1, 8, 8)
    flow = MultiScaleFlow((1, 8, 8), "realnvp", levels=2, steps=2, hidden=8, blocks=1)
    zs, logdet = flow(x)
    assert torch.equal(logdet, torch.zeros(4))
    assert torch.equal(flow.flatten(zs).sort(1).values, x.flatten(1).sort(1).values)


def test_invconv_weight_is_its_lu_product_and_starts_as_a_rotation():
    conv = InvConv1x1(5)
    w = conv.weight()
    assert torch.allclose(w @ w.T, torch.eye(5), atol=1e-5)  # orthogonal at init: log|det| = 0
    assert abs(conv.log_s.sum().item()) < 1e-5
    perturb(conv)
    with torch.no_grad():
        conv.lower.normal_(0, 0.5)
        conv.upper.normal_(0, 0.5)
        conv.log_s.normal_(0, 0.5)
    sign, ld = torch.linalg.slogdet(conv.weight())
    assert torch.allclose(ld, conv.log_s.sum(), atol=1e-10)


@pytest.mark.parametrize("kind", ["realnvp", "glow"])
def test_whole_multiscale_flow_inverts_and_matches_the_jacobian(kind):
    flow = MultiScaleFlow((1, 4, 4), kind, levels=2, steps=2, hidden=8, blocks=1,
                          scale="tanh" if kind == "realnvp" else "sigmoid")
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    flow = flow.double()
    flow(x)  # actnorm data-dependent init, then random weights everywhere
    perturb(flow)
    zs, logdet = flow(x)
    assert [tuple(z.shape[1:]) for z in zs] == flow.z_shapes == [(2, 2, 2), (8, 1, 1)]
    assert torch.allclose(flow.inverse(zs), x, atol=1e-10)
    assert torch.allclose(flow.inverse(flow.unflatten(flow.flatten(zs))), x, atol=1e-10)
    for i in range(2):
        jac = jacrev(lambda v: flow.flatten(flow(v.view(1, 1, 4, 4))[0]).flatten())(x[i].flatten())
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jac)[1], atol=1e-8)
    lp = flow.log_prob(x)
    assert torch.allclose(lp, sum(standard_normal_logp(z) for z in zs) + logdet)


@pytest.mark.parametrize("name, shape", [("realnvp", (1, 8, 8)), ("glow", (1, 8, 8)), ("realnvp", (1, 28, 28)),
                                         ("glow", (3, 32, 32))])
def test_registered_image_flows_invert_on_their_shapes(name, shape):
    flow = MODELS.build(name, in_shape=list(shape), steps=1, hidden=8, blocks=1)
    x = torch.rand(2, *shape)
    zs, logdet = flow(x)
    assert sum(z[0].numel() for z in zs) == math.prod(shape) and logdet.shape == (2,)
    assert torch.allclose(flow.inverse(zs), x, atol=1e-5)
    s = flow.sample(3, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, *shape) and torch.isfinite(s).all()


def test_levels_that_do_not_divide_the_image_are_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"model\.levels=2 or fewer"):
        MODELS.build("realnvp", in_shape=[1, 28, 28], levels=3)
    with pytest.raises(ConfigError, match="Valid values: tanh, sigmoid"):
        MODELS.build("glow", in_shape=[1, 8, 8], scale="exp")


def test_vector_coupling_and_flow_invert_and_match_the_jacobian():
    flow = perturb(VectorFlow(2, steps=4, hidden=16))
    for m in flow.modules():
        if isinstance(m, ActNorm):
            m.initialized.fill_(1)
    x = torch.randn(5, 2, dtype=torch.float64)
    z, logdet = flow(x)
    assert torch.allclose(flow.inverse(z), x, atol=1e-10)
    for i in range(len(x)):
        jac = jacrev(lambda v: flow(v.view(1, 2))[0].flatten())(x[i])
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jac)[1], atol=1e-9)
    layer = perturb(VectorCoupling(3, torch.tensor([1.0, 0.0, 1.0]), hidden=8))
    x3 = torch.randn(4, 3, dtype=torch.float64)
    z3, _ = layer(x3)
    assert torch.equal(z3[:, [0, 2]], x3[:, [0, 2]]) and torch.allclose(layer.inverse(z3), x3, atol=1e-12)


def test_a_2d_flow_trained_on_two_moons_has_a_density_that_integrates_to_one():
    from sklearn.datasets import make_moons

    pts, _ = make_moons(2000, noise=0.05, random_state=0)
    data = torch.tensor(pts, dtype=torch.float32)
    data = (data - data.mean(0)) / data.std(0)                  # standardised: N(0, I) is the baseline
    flow = VectorFlow(2, steps=6, hidden=32)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = data[torch.randint(0, len(data), (256,), generator=g)]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow = flow.double()
    with torch.no_grad():
        nll = -flow.log_prob(data.double()).mean().item()
        gauss_nll = -standard_normal_logp(data.double()).mean().item()
        grid = torch.linspace(-6, 6, 481, dtype=torch.float64)
        xx, yy = torch.meshgrid(grid, grid, indexing="ij")
        p = flow.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp().view(481, 481)
    assert nll < gauss_nll - 0.5, (nll, gauss_nll)              # it learned the moons
    total = torch.trapezoid(torch.trapezoid(p, grid, dim=1), grid)
    assert abs(total.item() - 1) < 0.02, total.item()


def test_actnorm_initialises_on_its_first_batch_only_and_survives_a_state_dict_load():
    an = ActNorm(3)
    x = torch.randn(64, 3, 5, 5) * torch.tensor([0.5, 2.0, 7.0]).view(1, 3, 1, 1) + torch.tensor([1.0, -3.0, 10.0]).view(
        1, 3, 1, 1)
    assert an.initialized.item() == 0
    z, logdet = an(x)
    assert an.initialized.item() == 1
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.allclose(logdet, torch.full((64,), -25 * torch.log(x.std((0, 2, 3), unbiased=False)).sum()), atol=1e-3)
    # a second batch of other statistics is not normalised: the init is not redone
    z2, _ = an(x * 3 + 1)
    assert not torch.allclose(z2.std((0, 2, 3), unbiased=False), torch.ones(3), atol=0.1)
    assert "initialized" in an.state_dict()
    fresh = ActNorm(3)
    fresh.load_state_dict(an.state_dict())
    assert fresh.initialized.item() == 1
    z3, _ = fresh(x * 3 + 1)
    assert torch.equal(z3, z2) and torch.equal(fresh.loc, an.loc)
