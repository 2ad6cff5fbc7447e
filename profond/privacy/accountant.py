"""Rényi-DP accountant of DP-SGD (course §12.7.1, def. 12.4): the privacy ``(ε, δ)`` spent by
``steps`` releases of the Poisson-sampled Gaussian mechanism.

One DP-SGD step (the course's ``g̃ = (1/B)(Σ_{i∈B} clip(g_i, C) + N(0, σ²C²I))``, §12.7.1)
is the *sampled Gaussian mechanism*: every example enters the batch independently with
probability ``q`` (Poisson sampling, :class:`profond.privacy.dpsgd.PoissonSampler`), the sum of
clipped gradients has L2 sensitivity ``C``, and Gaussian noise of standard deviation ``σC`` is
added — ``σ`` is the *noise multiplier*. The accounting runs in three stages:

1. **RDP of one step** at each order ``α`` of a fixed grid (Mironov, Talwar & Zhang 2019,
   "Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530):
   ``ε_α = log(A_α) / (α − 1)`` with

   * integer ``α`` (their §3.2): the binomial expansion
     ``A_α = Σ_{k=0}^{α} C(α, k) (1 − q)^{α−k} q^k exp((k² − k) / (2σ²))``;
   * fractional ``α`` (their §3.3): the two-sided series
     ``A_α = Σ_k |C(α, k)| q^k (1−q)^{α−k} e^{(k²−k)/(2σ²)} ½ erfc((k − z₀)/(√2 σ))
     + Σ_k |C(α, k)| q^{α−k} (1−q)^k e^{((α−k)²−(α−k))/(2σ²)} ½ erfc((z₀ − (α−k))/(√2 σ))``,
     ``z₀ = σ² log(1/q − 1) + ½``, truncated as Opacus and TF-privacy / dp-accounting truncate
     it (once both terms decrease and are ``e^{-30}`` below the running sum; an order whose
     series has not converged after 1000 terms is dropped, ``ε_α = ∞``). Summing magnitudes
     ``|C(α, k)|`` can only over-estimate ``A_α``: the bound stays valid;
   * ``q = 1`` (no sampling): the Gaussian mechanism's ``ε_α = α / (2σ²)`` exactly
     (Mironov 2017, prop. 7).

2. **Composition**: RDP adds up over steps, ``ε_α(T steps) = T · ε_α(1 step)``.

3. **Conversion RDP → (ε, δ)**, minimised over the orders. By default (``conversion="tight"``)
   the bound of Canonne, Kamath & Steinke 2020 (arXiv:2004.00010, prop. 12; also Asoodeh et al.
   2020, eq. 20), the one that Opacus and Google's dp-accounting (``RdpAccountant``) use:

   ``ε = ε_α + log(1 − 1/α) − log(δ α) / (α − 1)``  (orders ``α > 1.01``),

   and ``ε = 0`` at an order where ``δ ≥ √(1 − e^{−ε_α})`` (the KL / total-variation bound,
   as dp-accounting does). ``conversion="classic"`` gives Mironov 2017's prop. 3,
   ``ε = ε_α + log(1/δ) / (α − 1)``, larger at every order by
   ``log(α/(α−1)) + log(α)/(α−1) > 0`` (always looser). The tests check the default against ``dp_accounting.rdp.RdpAccountant``
   to 1% over a grid of ``(q, σ, steps)``.

The orders default to dp-accounting's grid (:data:`DEFAULT_ORDERS`: 1.1 … 10.9 by 0.1, the
integers 11 … 63, and 128, 256, 512, 1024). Public functions: :func:`epsilon` (the one the
training loop reports), :func:`epsilon_with_order`, :func:`rdp_sampled_gaussian`,
:func:`rdp_to_epsilon` and :func:`noise_for_epsilon` (bisection on σ for a target ε).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

#: dp-accounting's default grid of Rényi orders
DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(11, 64)] + [128.0, 256.0, 512.0, 1024.0]
)

_MAX_SERIES_TERMS = 1000  # fractional orders: terms of the series before giving up (as Opacus)

Conversion = Literal["tight", "classic"]


def _special():
    """``scipy.special``, imported on first use (keeps ``import profond.privacy`` light)."""
    from scipy import special

    return special


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check(sample_rate: float, noise_multiplier: float, steps: int | None = None,
           delta: float | None = None) -> None:
    """Clear errors for the inputs every accountant function shares."""
    if not (_real(sample_rate) and 0 < sample_rate <= 1):
        raise ValueError(f"sample_rate (q, the probability that an example is in a batch) must be "
                         f"in (0, 1], got {sample_rate!r}; q = expected batch size / dataset size.")
    if not (_real(noise_multiplier) and noise_multiplier > 0
            and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier (σ: noise std / clipping norm C) must be a finite number "
                         f"> 0, got {noise_multiplier!r}; σ = 0 gives no privacy (ε = ∞).")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
                              or steps < 0):
        raise ValueError(f"steps (number of noisy gradient steps) must be an integer >= 0, got {steps!r}.")
    if delta is not None and not (_real(delta) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}; the usual choice is δ < 1/N "
                         "for a data set of N examples (e.g. 1e-5).")


def _orders(orders: Sequence[float] | None) -> tuple[float, ...]:
    out = DEFAULT_ORDERS if orders is None else tuple(float(a) for a in orders)
    if not out or any(not (a > 1) for a in out):
        raise ValueError(f"Rényi orders must be a non-empty list of numbers > 1, got {orders!r}.")
    return out


def _log_comb(n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``log |C(n, k)|`` for real ``n`` (the magnitude, as Opacus / dp-accounting)."""
    g = _special().gammaln
    return g(n + 1) - g(k + 1) - g(n - k + 1)


def _log_a_int(q: float, sigma: float, alphas: np.ndarray) -> np.ndarray:
    """``log A_α`` for integer orders (Mironov et al. 2019, §3.2), all at once: the binomial
    expansion ``Σ_{k=0}^{α} C(α, k) (1 − q)^{α−k} q^k exp((k² − k) / (2σ²))``."""
    a = alphas[:, None]
    k = np.arange(int(alphas.max()) + 1, dtype=np.float64)[None, :]
    with np.errstate(invalid="ignore"):
        terms = (_log_comb(a, k) + k * math.log(q) + (a - k) * math.log1p(-q)
                 + (k * k - k) / (2 * sigma**2))
    terms = np.where(k <= a, terms, -np.inf)  # k = 0 … α
    return _special().logsumexp(terms, axis=1)


def _log_a_frac(q: float, sigma: float, alphas: np.ndarray) -> np.ndarray:
    """``log A_α`` for fractional orders (Mironov et al. 2019, §3.3), all at once: the two
    series split at ``z₀``, each truncated by Opacus' rule (``+∞`` where it does not converge)."""
    sp = _special()
    a = alphas[:, None]
    i = np.arange(_MAX_SERIES_TERMS, dtype=np.float64)[None, :]
    j = a - i
    z0 = sigma**2 * math.log(1 / q - 1) + 0.5
    log_coef = _log_comb(a, i)
    log_q, log_1mq = math.log(q), math.log1p(-q)
    # log(½ erfc(x / (√2 σ))) = log Φ(−x / σ)
    log_e0 = sp.log_ndtr(-(i - z0) / sigma)
    log_e1 = sp.log_ndtr(-(z0 - j) / sigma)
    log_s0 = log_coef + i * log_q + j * log_1mq + (i * i - i) / (2 * sigma**2) + log_e0
    log_s1 = log_coef + j * log_q + i * log_1mq + (j * j - j) / (2 * sigma**2) + log_e1
    total = np.logaddexp.accumulate(np.logaddexp(log_s0, log_s1), axis=1)
    # stop where both terms decrease and are 30 nats below the running sum (Opacus' rule)
    done = np.zeros_like(total, dtype=bool)
    done[:, 1:] = ((log_s0[:, 1:] < log_s0[:, :-1]) & (log_s1[:, 1:] < log_s1[:, :-1])
                   & (np.maximum(log_s0[:, 1:], log_s1[:, 1:]) < total[:, 1:] - 30))
    first = done.argmax(axis=1)
    out = total[np.arange(len(alphas)), first]
    return np.where(done.any(axis=1), out, np.inf)


@lru_cache(maxsize=256)
def _rdp_cached(q: float, sigma: float, orders: tuple[float, ...]) -> tuple[float, ...]:
    a = np.array(orders, dtype=np.float64)
    if q == 1.0:
        return tuple(a / (2 * sigma**2))  # Gaussian mechanism, ε_α = α / (2σ²)
    out = np.empty_like(a)
    is_int = a == np.round(a)
    if is_int.any():
        out[is_int] = _log_a_int(q, sigma, a[is_int]) / (a[is_int] - 1)
    if (~is_int).any():
        out[~is_int] = _log_a_frac(q, sigma, a[~is_int]) / (a[~is_int] - 1)
    return tuple(float(v) for v in out)


def rdp_sampled_gaussian(sample_rate: float, noise_multiplier: float,
                         orders: Sequence[float] | None = None) -> np.ndarray:
    """RDP ``ε_α`` of **one** step of the Poisson-sampled Gaussian mechanism at each order
    (``+∞`` where the fractional series did not converge). Multiply by the number of steps to
    compose (RDP adds up). Cached per ``(q, σ, orders)``, so that reporting ε every epoch
    costs one computation per run."""
    _check(sample_rate, noise_multiplier)
    return np.array(_rdp_cached(float(sample_rate), float(noise_multiplier), _orders(orders)))


def rdp_to_epsilon(orders: Sequence[float], rdp: Sequence[float], delta: float,
                   conversion: Conversion = "tight") -> tuple[float, float]:
    """``(ε, best order)`` from RDP values ``rdp[i]`` at ``orders[i]`` for a target δ.

    ``"tight"``: Canonne, Kamath & Steinke 2020, prop. 12 (Opacus, dp-accounting),
    ``ε = ε_α + log(1 − 1/α) − log(δ α)/(α − 1)``, with ``ε = 0`` where ``δ ≥ √(1 − e^{−ε_α})``;
    ``"classic"``: Mironov 2017, prop. 3, ``ε = ε_α + log(1/δ)/(α − 1)``.
    The minimum over the orders; the order is ``nan`` when every order gives ``ε = ∞``.
    """
    if not (_real(delta) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}.")
    if conversion not in ("tight", "classic"):
        raise ValueError(f"conversion must be 'tight' or 'classic', got {conversion!r}.")
    orders = np.asarray(orders, dtype=np.float64)
    rdp = np.asarray(rdp, dtype=np.float64)
    if orders.shape != rdp.shape or orders.ndim != 1:
        raise ValueError(f"orders and rdp must be 1-d and of the same length, got {orders.shape} "
                         f"and {rdp.shape}.")
    eps = np.full(orders.shape, math.inf)
    for n, (a, r) in enumerate(zip(orders, rdp, strict=True)):
        if not math.isfinite(r):
            continue
        if conversion == "classic":
            eps[n] = r + math.log(1 / delta) / (a - 1)  # Mironov 2017, prop. 3
        elif delta**2 + math.expm1(-r) > 0:  # δ ≥ √(1 − e^{−ε_α}): total variation ≤ δ
            eps[n] = 0.0
        elif a > 1.01:  # Canonne, Kamath & Steinke 2020, prop. 12 (unstable as α → 1)
            eps[n] = r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
    best = int(np.argmin(eps))
    if not math.isfinite(eps[best]):
        return math.inf, math.nan
    return max(0.0, float(eps[best])), float(orders[best])


def epsilon_with_order(sample_rate: float, noise_multiplier: float, steps: int, delta: float, *,
                       orders: Sequence[float] | None = None,
                       conversion: Conversion = "tight") -> tuple[float, float]:
    """``(ε, α*)``: the ε of :func:`epsilon` and the Rényi order α* that attains it (an α* at
    the edge of the grid means the grid should be widened). ``steps = 0`` gives ``(0.0, nan)``."""
    _check(sample_rate, noise_multiplier, steps, delta)
    if steps == 0:
        return 0.0, math.nan
    orders = _orders(orders)
    rdp = int(steps) * rdp_sampled_gaussian(sample_rate, noise_multiplier, orders)  # composition
    return rdp_to_epsilon(orders, rdp, delta, conversion)


def epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float, *,
            orders: Sequence[float] | None = None, conversion: Conversion = "tight") -> float:
    """The ε of ``(ε, δ)``-DP (course def. 12.4) after ``steps`` DP-SGD steps, each one batch
    drawn by Poisson sampling at rate ``sample_rate`` (q) with Gaussian noise of ``σ =
    noise_multiplier`` times the clipping norm.

    ``epsilon(q=256/60000, σ=1.1, steps=60·60000/256, δ=1e-5)`` is the budget of Opacus's MNIST
    example. Raises ``ValueError`` for q ∉ (0, 1], σ ≤ 0, δ ∉ (0, 1) or steps < 0.
    """
    return epsilon_with_order(sample_rate, noise_multiplier, steps, delta, orders=orders,
                              conversion=conversion)[0]


def noise_for_epsilon(target_epsilon: float, sample_rate: float, steps: int, delta: float, *,
                      orders: Sequence[float] | None = None, conversion: Conversion = "tight",
                      rtol: float = 1e-4) -> float:
    """The smallest noise multiplier σ (to relative precision ``rtol``, by bisection) whose
    :func:`epsilon` after ``steps`` steps at rate ``sample_rate`` is at most ``target_epsilon``.

    The σ returned is always on the safe side: ``epsilon(q, σ, steps, δ) <= target_epsilon``.
    ε decreases as σ grows; σ is searched in [1e-3, 1e4] (ValueError outside).
    """
    if not (_real(target_epsilon) and 0 < target_epsilon < math.inf):
        raise ValueError(f"target_epsilon must be a finite number > 0, got {target_epsilon!r}.")
    _check(sample_rate, 1.0, steps, delta)
    if steps == 0:
        raise ValueError("steps must be >= 1 to choose a noise multiplier (0 steps spend ε = 0 "
                         "whatever σ).")

    def eps(s: float) -> float:
        return epsilon(sample_rate, s, steps, delta, orders=orders, conversion=conversion)

    lo_bound, hi_bound = 1e-3, 1e4
    hi = 1.0
    while eps(hi) > target_epsilon:
        hi *= 2
        if hi > hi_bound:
            raise ValueError(f"no noise multiplier up to {hi_bound:g} reaches ε = {target_epsilon} "
                             f"with q = {sample_rate}, {steps} steps, δ = {delta}.")
    lo = hi / 2
    while eps(lo) <= target_epsilon:
        hi, lo = lo, lo / 2
        if lo < lo_bound:
            return hi  # even σ ≈ 1e-3 satisfies the target
    while (hi - lo) > rtol * hi:  # invariant: eps(lo) > target >= eps(hi)
        mid = 0.5 * (lo + hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
