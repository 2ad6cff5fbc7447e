"""The Rényi-DP accountant of DP-SGD (profond.privacy.accountant, course §12.7.1, def. 12.4)
against Google's dp-accounting (its RdpAccountant, same orders) over a grid of (q, σ, steps),
and against closed forms: the Gaussian mechanism (q = 1: ε_α = α/(2σ²)), the order-2 binomial
expansion, the fractional-order series meeting the integer expansion, the classic conversion's
optimum, and the round trip of noise_for_epsilon."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import profond.privacy as privacy
from profond.privacy import (
    DEFAULT_ORDERS,
    epsilon,
    epsilon_with_order,
    noise_for_epsilon,
    rdp_sampled_gaussian,
    rdp_to_epsilon,
)

QS_SIGMAS = ([0.001, 0.01, 0.1, 1.0], [0.7, 1.1, 2.0, 5.0])
STEPS = (1, 100, 10000)
GRID = list(itertools.product(*QS_SIGMAS, STEPS))


def test_agrees_with_dp_accounting_within_one_percent():
    dpa = pytest.importorskip("dp_accounting")
    from dp_accounting.rdp import RdpAccountant

    for q, sigma in itertools.product(*QS_SIGMAS):
        acc, done = RdpAccountant(list(DEFAULT_ORDERS)), 0
        for steps in STEPS:  # compose one accountant up to 1, 100, 10000 steps
            acc.compose(dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(sigma)), steps - done)
            done = steps
            ref = acc.get_epsilon(1e-5)
            assert epsilon(q, sigma, steps, 1e-5) == pytest.approx(ref, rel=0.01), (q, sigma, steps)
    # the grid spans small and large budgets (not all zeros or all huge)
    values = [epsilon(q, s, t, 1e-5) for q, s, t in GRID]
    assert min(values) < 0.05 and max(values) > 100


def test_the_gaussian_mechanism_when_every_example_is_sampled():
    orders = [1.5, 2.0, 3.0, 10.0, 64.0]
    for sigma in (0.7, 1.1, 5.0):
        assert np.array_equal(rdp_sampled_gaussian(1.0, sigma, orders),
                              np.array(orders) / (2 * sigma**2))  # α / (2σ²), exactly
    # classic conversion: min_α T α/(2σ²) + log(1/δ)/(α−1) = T/(2σ²) + √(2 T log(1/δ))/σ
    dense = np.linspace(1.001, 400, 40000)
    for sigma, steps in [(1.1, 1), (5.0, 1), (2.0, 100)]:
        want = steps / (2 * sigma**2) + math.sqrt(2 * steps * math.log(1e5)) / sigma
        got = epsilon(1.0, sigma, steps, 1e-5, orders=dense, conversion="classic")
        assert got == pytest.approx(want, rel=1e-5)


def test_order_two_is_the_binomial_expansion():
    # A_2 = (1−q)² + 2q(1−q) + q² e^{1/σ²} = 1 + q²(e^{1/σ²} − 1), ε_2 = log A_2
    for q, sigma in [(0.01, 1.1), (0.3, 0.8), (0.001, 5.0)]:
        want = math.log1p(q * q * math.expm1(1 / sigma**2))
        assert rdp_sampled_gaussian(q, sigma, [2])[0] == pytest.approx(want, rel=1e-12)


def test_the_fractional_series_meets_the_integer_expansion():
    for q, sigma in [(0.01, 1.1), (0.3, 0.8), (0.001, 5.0)]:
        for a in (2, 3, 7):
            exact = rdp_sampled_gaussian(q, sigma, [a])[0]
            near = rdp_sampled_gaussian(q, sigma, [a - 1e-7, a + 1e-7])
            assert near[0] < exact < near[1]  # ε_α increases with α
            assert near == pytest.approx([exact, exact], rel=1e-6)


def test_composition_adds_rdp_and_tight_beats_classic():
    q, sigma = 0.01, 1.1
    one = rdp_sampled_gaussian(q, sigma)
    eps, order = epsilon_with_order(q, sigma, 500, 1e-5)
    assert (eps, order) == rdp_to_epsilon(DEFAULT_ORDERS, 500 * one, 1e-5)
    assert order in DEFAULT_ORDERS and 1.1 < order < 1024  # the optimum is inside the grid
    assert eps < epsilon(q, sigma, 500, 1e-5, conversion="classic")
    # ε grows with steps and q, shrinks with σ and δ↑
    assert epsilon(q, sigma, 100, 1e-5) < eps < epsilon(q, sigma, 1000, 1e-5)
    assert epsilon(q / 2, sigma, 500, 1e-5) < eps < epsilon(2 * q, sigma, 500, 1e-5)
    assert epsilon(q, 2 * sigma, 500, 1e-5) < eps < epsilon(q, sigma / 2, 500, 1e-5)
    assert epsilon(q, sigma, 500, 1e-3) < eps
    assert epsilon(q, sigma, 0, 1e-5) == 0.0


def test_noise_for_epsilon_inverts_epsilon():
    q, steps, delta = 256 / 60000, 10 * 60000 // 256, 1e-5
    sigmas = []
    for target in (0.5, 1.2, 3.0):
        sigma = noise_for_epsilon(target, q, steps, delta)
        assert epsilon(q, sigma, steps, delta) <= target  # always on the safe side
        assert epsilon(q, sigma * (1 - 1e-3), steps, delta) > target  # and not much more noise
        sigmas.append(sigma)
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0.5  # a smaller budget needs more noise


@pytest.mark.parametrize("args, match", [
    ((0.0, 1.1, 10, 1e-5), "sample_rate"), ((1.5, 1.1, 10, 1e-5), "sample_rate"),
    ((0.01, 0.0, 10, 1e-5), "noise_multiplier"), ((0.01, -1.0, 10, 1e-5), "noise_multiplier"),
    ((0.01, 1.1, 10, 0.0), "delta"), ((0.01, 1.1, 10, 1.0), "delta"),
    ((0.01, 1.1, -1, 1e-5), "steps"), ((0.01, 1.1, 2.5, 1e-5), "steps"),
    ((float("nan"), 1.1, 10, 1e-5), "sample_rate"),
])
def test_bad_inputs_say_which(args, match):
    with pytest.raises(ValueError, match=match):
        epsilon(*args)


def test_bad_inputs_of_noise_for_epsilon():
    with pytest.raises(ValueError, match="target_epsilon"):
        noise_for_epsilon(0.0, 0.01, 100, 1e-5)
    with pytest.raises(ValueError, match="steps"):
        noise_for_epsilon(1.0, 0.01, 0, 1e-5)
    with pytest.raises(ValueError, match="sample_rate"):
        noise_for_epsilon(1.0, 2.0, 100, 1e-5)
    with pytest.raises(ValueError, match="orders"):
        epsilon(0.01, 1.1, 10, 1e-5, orders=[1.0, 2.0])


def test_package_exports_the_loop_function():
    assert privacy.epsilon is epsilon
    assert isinstance(privacy.epsilon(0.01, 1.1, 100, 1e-5), float)
