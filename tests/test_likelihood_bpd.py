"""Bits per dimension written once (profond.metrics.likelihood): cases computed by hand."""

import math

import pytest
import torch

from profond.metrics.likelihood import (
    DEQUANT_BITS,
    bpd_from_density,
    bpd_from_logits,
    dequantize,
    nats_to_bpd,
    to_levels,
)


def test_the_correction_is_eight_bits():
    assert DEQUANT_BITS == pytest.approx(8.0, abs=1e-12)


def test_uniform_models_give_eight_bits_per_dim():
    # a uniform density on [0, 1)^D: log p = 0 -> 8 bits/dim; a uniform 256-way softmax: 8 bits/dim
    assert bpd_from_density(torch.zeros(3), dims=784).tolist() == pytest.approx([8.0] * 3)
    x = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert bpd_from_logits(torch.zeros(2, 256, 1, 4, 4), x).tolist() == pytest.approx([8.0, 8.0])


def test_a_case_by_hand():
    # D = 2; the model puts density 4 on [0, 0.5)^2 (so log p = log 4 there) and reads y itself:
    # -log P(k) <= -(log 4 - 2 log 256) nats = (16 - 2) bits, i.e. 7 bits per dimension
    assert float(bpd_from_density(torch.tensor([math.log(4.0)]), dims=2)) == pytest.approx(7.0)
    # the same model on z = 2y - 1 has p_z = 1 on [-1, 0)^2: log p_z = 0, log|det| = 2 log 2
    assert float(bpd_from_density(torch.tensor([0.0]), dims=2, log_det_scale=2 * math.log(2))) == pytest.approx(7.0)
    # a variational dequantizer with q(u | k) = 2 on half of each cube costs one bit per its log q
    assert float(bpd_from_density(torch.tensor([math.log(4.0)]), dims=2, log_q=math.log(2))) == pytest.approx(7.5)
    # a softmax that gives probability 1/2 to the right level: 1 bit per dimension
    logits = torch.full((1, 256, 1, 1, 2), -1e9)
    x = torch.tensor([[[[3, 200]]]], dtype=torch.uint8)
    logits[0, 3, 0, 0, 0] = logits[0, 4, 0, 0, 0] = 0.0
    logits[0, 200, 0, 0, 1] = logits[0, 7, 0, 0, 1] = 0.0
    assert float(bpd_from_logits(logits, x)[0]) == pytest.approx(1.0)
    assert nats_to_bpd(784 * math.log(2), 784) == pytest.approx(1.0)


def test_dequantization_stays_in_its_levels_cube():
    x = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    y = dequantize(x, generator=g)
    assert (torch.floor(y * 256).long() == x.long()).all()
    assert (y >= 0).all() and (y < 1).all()
    # floats in [0, 1] are read as their levels
    assert torch.equal(to_levels(x.float() / 255), x.long())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_levels(torch.tensor([1.5]))


def test_a_gaussian_bound_matches_its_discrete_probability():
    # a narrow 1-D Gaussian at level 100: the bound E_u[-log p] + log 256 sits above the exact
    # -log P(k) of the cube's probability mass, and close to it for a smooth density
    sd = 0.02
    mu = 100.5 / 256
    k = torch.full((20000, 1), 100, dtype=torch.uint8)
    y = dequantize(k, generator=torch.Generator().manual_seed(1))
    log_p = torch.distributions.Normal(mu, sd).log_prob(y).squeeze(1)
    bound = float(bpd_from_density(log_p, dims=1).mean())
    n = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), sd)
    exact = float(-torch.log(n.cdf(torch.tensor(101 / 256)) - n.cdf(torch.tensor(100 / 256))) / math.log(2))
    assert exact <= bound + 1e-3 and bound - exact < 0.05
