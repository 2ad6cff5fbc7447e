"""Capacity measures of chapter 11 (profond.metrics.capacity) and the power-law fit of §11.11
(profond.metrics.scaling), against answers known in closed form: the shattering of small point
sets (exercise 11.1), Cover's count of linear dichotomies, the Rademacher complexity of a
norm ball computed independently and its bound eq. 11.17 (exercise 11.2), and OLS standard
errors (scipy's linregress) with their coverage; the batched ReLU-net trainer behind the
shattering counts of theorem 11.6 (hand-written gradients against autograd, XOR needs two units,
one unit realises exactly the affine dichotomies)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import linregress

from profond.metrics.capacity import (
    LEAK,
    count_labelings,
    cover_count,
    empirical_rademacher,
    exact_rademacher,
    hinge_grads,
    labelings,
    linearly_separable,
    rademacher_bound,
    rademacher_draws,
    relu_net_num_params,
    relu_outputs,
    relu_shattering,
    sauer_shelah_bound,
    shatters,
    train_relu_nets,
)
from profond.metrics.scaling import fit_power_law, power_law_band

pytestmark = pytest.mark.usefixtures("one_thread")
XOR = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
TRIANGLE = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
COLLINEAR = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])


def test_xor_is_not_separable_but_its_other_labelings_are():
    assert not linearly_separable(XOR, np.array([1, 1, -1, -1]))
    assert not linearly_separable(XOR, np.array([-1, -1, 1, 1]))
    assert linearly_separable(XOR, np.array([1, -1, 1, -1]))  # split by x < 1/2
    assert count_labelings(XOR) == 14
    assert not shatters(XOR)


def test_three_points_in_general_position_every_labeling():
    for y in labelings(3):
        assert linearly_separable(TRIANGLE, y), y
    assert shatters(TRIANGLE) and count_labelings(TRIANGLE) == 8


def test_collinear_points_are_not_shattered():
    assert not linearly_separable(COLLINEAR, np.array([1, -1, 1]))
    assert not linearly_separable(COLLINEAR, np.array([-1, 1, -1]))
    assert linearly_separable(COLLINEAR, np.array([1, 1, -1]))
    assert count_labelings(COLLINEAR) == 6 and not shatters(COLLINEAR)


def test_counts_equal_cover_on_random_sets_in_2d_and_3d():
    rng = np.random.default_rng(0)
    for d, m in ((2, 4), (2, 5), (3, 4), (3, 5), (1, 3)):
        for _ in range(3):
            assert count_labelings(rng.standard_normal((m, d))) == cover_count(m, d), (d, m)
    # VC dimension d + 1 (proposition 11.5) in R^3: 4 points shattered, 5 never
    assert shatters(rng.standard_normal((4, 3))) and not shatters(rng.standard_normal((5, 3)))


def test_cover_and_sauer_shelah_closed_forms():
    assert [cover_count(m, 2) for m in range(1, 7)] == [2, 4, 8, 14, 22, 32]
    assert [cover_count(m, 1) for m in range(1, 6)] == [2, 4, 6, 8, 10]  # 2m thresholds on a line
    assert [sauer_shelah_bound(m, 3) for m in range(1, 7)] == [2, 4, 8, 15, 26, 42]
    for m in range(1, 12):
        assert cover_count(m, 2) <= sauer_shelah_bound(m, 3) <= 2**m


def test_separable_rejects_bad_input():
    with pytest.raises(ValueError):
        linearly_separable(XOR, np.array([1, 0, 1, -1]))
    with pytest.raises(ValueError):
        linearly_separable(XOR, np.array([1, -1]))


def test_exact_rademacher_matches_a_brute_force_supremum():
    """The closed-form sup (B/m)‖Σσx‖ against a sup over 7200 directions of the circle."""
    rng = np.random.default_rng(1)
    X, B = rng.standard_normal((6, 2)), 2.5
    theta = np.linspace(0, 2 * np.pi, 7200, endpoint=False)
    W = B * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    brute = np.mean([np.max(W @ (s @ X)) / len(X) for s in labelings(len(X))])
    assert exact_rademacher(X, B) == pytest.approx(brute, rel=1e-6)


@pytest.mark.parametrize("m", [3, 6, 10])
def test_monte_carlo_matches_exact_and_stays_below_the_bound(m):
    rng = np.random.default_rng(m)
    X, B = rng.standard_normal((m, 4)), 3.0
    draws = rademacher_draws(X, B, 20000, seed=0)
    exact = exact_rademacher(X, B)
    assert abs(draws.mean() - exact) < 4 * draws.std() / math.sqrt(len(draws))
    assert empirical_rademacher(X, B, 20000, seed=0) == pytest.approx(draws.mean())
    assert exact <= rademacher_bound(X, B) + 1e-12
    assert empirical_rademacher(X, B, 2000, seed=1) <= rademacher_bound(X, B)
    # linear in B, and the MC draws are seeded
    assert exact_rademacher(X, 2 * B) == pytest.approx(2 * exact)
    assert np.array_equal(rademacher_draws(X, B, 50, seed=3), rademacher_draws(X, B, 50, seed=3))


def test_bound_is_an_equality_for_orthogonal_points_and_strict_for_equal_points():
    X = np.diag([1.0, 2.0, 3.0, 0.5])  # ‖Σσ_i x_i‖² = Σ‖x_i‖² for every σ
    assert exact_rademacher(X, 1.5) == pytest.approx(rademacher_bound(X, 1.5), rel=1e-12)
    Y = np.ones((4, 3))  # ‖Σσ_i x‖ = |Σσ_i| ‖x‖, E|Σσ_i| = 1.5 < sqrt(4) for m = 4
    assert exact_rademacher(Y, 1.0) == pytest.approx(1.5 * math.sqrt(3) / 4)
    assert rademacher_bound(Y, 1.0) == pytest.approx(2 * math.sqrt(3) / 4)
    with pytest.raises(ValueError):
        exact_rademacher(np.ones((21, 2)), 1.0)


def test_power_law_exact_recovery():
    N = np.logspace(5, 10, 6)
    alpha, c, se_a, se_c = fit_power_law(N, 7.0 * N**-0.3)
    assert alpha == pytest.approx(0.3, abs=1e-12) and c == pytest.approx(7.0, rel=1e-10)
    assert se_a < 1e-10 and se_c < 1e-8
    fit, lo, hi = power_law_band(N, 7.0 * N**-0.3, 1e12)
    assert fit[0] == pytest.approx(7.0 * 1e12**-0.3, rel=1e-9) and hi[0] - lo[0] < 1e-8


def test_power_law_standard_errors_match_linregress():
    rng = np.random.default_rng(0)
    N = np.logspace(4, 9, 8)
    L = 5.0 * N**-0.1 * np.exp(0.05 * rng.standard_normal(8))
    alpha, c, se_a, se_c = fit_power_law(N, L)
    ref = linregress(np.log(N), np.log(L))
    assert alpha == pytest.approx(-ref.slope) and c == pytest.approx(math.exp(ref.intercept))
    assert se_a == pytest.approx(ref.stderr) and se_c == pytest.approx(c * ref.intercept_stderr)
    # the band at a data point's N: the intercept's se when log N = 0
    _, lo, hi = power_law_band(N, L, 1.0)
    assert math.log(hi[0] / lo[0]) == pytest.approx(4 * ref.intercept_stderr)


def test_power_law_noisy_coverage_of_the_true_alpha():
    """±2 se covers the true exponent about 94 % of the time with 20 points (t with 18 dof)."""
    rng = np.random.default_rng(0)
    N = np.logspace(3, 9, 20)
    hits, alphas = [], []
    for _ in range(400):
        alpha, _, se_a, _ = fit_power_law(N, 4.0 * N**-0.25 * np.exp(0.1 * rng.standard_normal(20)))
        hits.append(abs(alpha - 0.25) <= 2 * se_a)
        alphas.append(alpha)
    assert 0.89 <= np.mean(hits) <= 0.98
    assert abs(np.mean(alphas) - 0.25) < 0.003  # unbiased


def test_power_law_rejects_bad_input():
    with pytest.raises(ValueError):
        fit_power_law([1, 10], [2, 1])
    with pytest.raises(ValueError):
        fit_power_law([1, 10, 100], [2, -1, 1])


# ----------------------------------------------------------------------------------------
# one-hidden-layer ReLU nets (theorem 11.6)

PENTAGON = np.stack([np.cos(2 * np.pi * np.arange(5) / 5), np.sin(2 * np.pi * np.arange(5) / 5)], axis=1)


@pytest.mark.parametrize(("k", "d"), [(1, 2), (3, 2), (4, 5)])
def test_parameter_count_is_torchs(k, d):
    net = torch.nn.Sequential(torch.nn.Linear(d, k), torch.nn.ReLU(), torch.nn.Linear(k, 1))
    assert relu_net_num_params(k, d) == sum(p.numel() for p in net.parameters())


def test_batched_outputs_and_hand_gradients_match_torch():
    torch.manual_seed(0)
    B, n, d, k = 3, 6, 2, 4
    X = torch.randn(B, n, d, dtype=torch.float64)
    Y = torch.randint(0, 2, (B, n)).double() * 2 - 1
    theta = torch.randn(B, (d + 2) * k + 1, dtype=torch.float64, requires_grad=True)
    z, f = relu_outputs(X, theta, k)
    for i in range(B):  # net i is Linear(d, k) -> ReLU -> Linear(k, 1) with its own weights
        W, b = theta[i, :k * d].view(k, d), theta[i, k * d:k * d + k]
        a, c = theta[i, k * d + k:k * d + 2 * k], theta[i, -1]
        assert torch.allclose(f[i], torch.relu(X[i] @ W.T + b) @ a + c)
        assert torch.allclose(z[i], X[i] @ W.T + b)
    (auto,) = torch.autograd.grad(torch.relu(1 - Y * f).sum(), theta)
    m, exact = hinge_grads(X, Y, theta.detach(), k, leak=0.0)
    assert torch.allclose(m, Y * f.detach()) and torch.allclose(exact, auto, atol=1e-12)
    _, leaky = hinge_grads(X, Y, theta.detach(), k)
    assert LEAK > 0 and not torch.allclose(leaky, exact)  # the surrogate differs where units are off
    # ... but only in the first layer: ∂/∂a and ∂/∂c never see ReLU′
    assert torch.allclose(leaky[:, k * d + k:], exact[:, k * d + k:])


def test_xor_needs_two_units():
    """XOR on the unit square: not realised by one unit (its class is half-planes and constants),
    realised by two (relu(x1 − x2) + relu(x2 − x1) − 1/2); the other 14 labellings by both."""
    xor = np.array([1.0, 1.0, -1.0, -1.0])  # XOR's rows: (0,0), (1,1) vs (0,1), (1,0)
    X = torch.tensor(np.repeat(XOR[None], 8, 0))
    Y = torch.tensor(np.repeat(xor[None], 8, 0))
    one = train_relu_nets(X, Y, torch.ones(8, dtype=torch.long))
    two = train_relu_nets(X, Y, torch.full((8,), 2))
    assert not one.any() and two.any()
    frac = relu_shattering(XOR[None], [1, 2])
    assert frac[0, 0] == 14 / 16 and frac[1, 0] == 1.0


@pytest.mark.parametrize("points", [PENTAGON, TRIANGLE], ids=["pentagon", "triangle"])
def test_one_unit_realises_exactly_the_affine_dichotomies(points):
    """sign(a ReLU(wᵀx + b) + c) is a half-plane or a constant: on points in general position its
    labellings are Cover's C(n, 3) (22 of 32 on the pentagon, all 8 on the triangle), and
    training finds every one of them."""
    n = len(points)
    frac = relu_shattering(points[None], [1, 3])
    assert frac[0, 0] == cover_count(n, 2) / 2**n == count_labelings(points) / 2**n
    assert frac[1, 0] == 1.0  # three units shatter the pentagon


def test_mixed_widths_in_one_batch_keep_extra_units_off():
    """A width-1 net trained in a batch padded to 3 units still cannot fit XOR: the padding
    units stay switched off (a_j = 0, zero gradient)."""
    X = torch.tensor(np.repeat(XOR[None], 6, 0))
    Y = torch.tensor(np.repeat(np.array([[1.0, 1.0, -1.0, -1.0]]), 6, 0))
    widths = torch.tensor([1, 1, 1, 3, 3, 3])
    fitted = train_relu_nets(X, Y, widths)
    assert not fitted[:3].any() and fitted[3:].any()
