"""Mutual-information estimators of the information plane (course §11.9, remark 11.22):
binning on known discrete answers, the KDE bounds of Kolchinsky & Tracey against the exact
mutual information of jointly Gaussian variables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from profond.metrics.information import (
    bin_codes,
    binning_mi,
    entropy_bits,
    gaussian_mi_bits,
    kde_mi,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_entropy_of_known_distributions():
    assert entropy_bits(np.arange(16)) == pytest.approx(4.0)
    assert entropy_bits(np.zeros((10, 3))) == 0.0
    # p = (1/2, 1/4, 1/4): 1.5 bits; rows are compared as tuples
    codes = np.array([[0, 1], [0, 1], [1, 0], [2, 2]])
    assert entropy_bits(codes) == pytest.approx(1.5)


def test_bin_codes_edges():
    t = np.array([[0.0], [0.5], [0.99], [1.0], [-3.0], [7.0]])
    assert bin_codes(t, 2, 0.0, 1.0).ravel().tolist() == [0, 1, 1, 1, 0, 1]
    assert bin_codes(np.full((4, 2), 3.0), 30).max() == 0


def test_binning_of_a_copy_of_discrete_x_is_its_entropy():
    # T = X, 64 distinct values one bin each: I(X;T) = H(X) = log2 64 = 6 bits
    x = np.arange(64, dtype=float)[:, None]
    y = np.arange(64) % 4
    ixt, ity = binning_mi(x, y, bins=64)
    assert ixt == pytest.approx(math.log2(64))
    assert ity == pytest.approx(2.0)  # Y is a function of T: I(T;Y) = H(Y) = log2 4
    # a non-uniform discrete X (values with multiplicities 1, 2, ..., 8)
    xs = np.repeat(np.arange(8), np.arange(1, 9)).astype(float)[:, None]
    p = np.arange(1, 9) / 36
    assert binning_mi(xs, np.zeros(len(xs)), bins=8)[0] == pytest.approx(float(-(p * np.log2(p)).sum()))
    # two units copying two discrete coordinates: the tuple counts, 8 x 8 = 64 codes
    grid = np.stack(np.meshgrid(np.arange(8), np.arange(8)), -1).reshape(-1, 2).astype(float)
    assert binning_mi(grid, np.zeros(64), bins=8)[0] == pytest.approx(6.0)
    # fewer bins merge values: 64 values into 4 bins of 16 -> 2 bits
    assert binning_mi(x, y, bins=4)[0] == pytest.approx(2.0)


def test_constant_t_carries_no_information():
    y = np.arange(100) % 10
    assert binning_mi(np.ones((100, 5)), y, bins=30) == (0.0, 0.0)
    ixt, ity = kde_mi(np.ones((100, 5)), y)
    assert ixt == pytest.approx(0.0, abs=1e-6) and ity == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("bins", [2, 10, 30, 100])
def test_binning_bounds(bins):
    rng = np.random.default_rng(bins)
    n = 500
    y = rng.integers(0, 5, n)
    t = np.tanh(rng.standard_normal((n, 3)) + y[:, None] * 0.5)
    ixt, ity = binning_mi(t, y, bins=bins)
    h_y = entropy_bits(y)
    assert 0 <= ixt <= math.log2(n) + 1e-9
    assert -1e-9 <= ity <= min(h_y, ixt) + 1e-9
    assert ity > 0.05  # T depends on Y here


def test_gaussian_mi_formula():
    assert gaussian_mi_bits(0.0) == 0.0
    assert gaussian_mi_bits(math.sqrt(0.75)) == pytest.approx(1.0)  # 1/(1-rho^2) = 4


@pytest.mark.parametrize("noise_var", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("d", [1, 2])
def test_kde_bounds_bracket_the_gaussian_channel(noise_var, d):
    # T ~ N(0, I_d), T + eps with eps ~ N(0, s2 I): each coordinate pair is jointly Gaussian with
    # rho^2 = 1 / (1 + s2), so I(T; T+eps) = d * 1/2 log2(1 / (1 - rho^2)); the KL (upper) and
    # Bhattacharyya (lower) bounds of the sample mixture bracket it
    rng = np.random.default_rng(0)
    t = rng.standard_normal((2000, d))
    exact = d * gaussian_mi_bits(math.sqrt(1 / (1 + noise_var)))
    lo = kde_mi(t, noise_var=noise_var, bound="lower")[0]
    hi = kde_mi(t, noise_var=noise_var, bound="upper")[0]
    assert lo < exact < hi
    assert hi - lo < 1.5 * d  # not vacuous: the gap between the bounds stays below 1.5 bits per dimension
    assert 0 <= lo and hi <= math.log2(2000)


def test_kde_limits_and_labels():
    n = 64
    far = np.arange(n, dtype=float)[:, None] * 100  # components far apart: I = log2 n exactly
    y = np.arange(n) % 4
    for bound in ("upper", "lower"):
        ixt, ity = kde_mi(far, y, noise_var=0.1, bound=bound)
        assert ixt == pytest.approx(math.log2(n), abs=1e-6)
        assert ity == pytest.approx(2.0, abs=1e-6)  # H(Y), Y a function of the separated T
    with pytest.raises(ValueError):
        kde_mi(far, bound="middle")
    assert math.isnan(kde_mi(far)[1])
