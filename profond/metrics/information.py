"""Mutual-information estimators for the information plane (course §11.9, definition 11.21,
eq. 11.15, remark 11.22).

The information bottleneck (eq. 11.15) trades ``I(X;T)`` against ``I(T;Y)`` for a
representation ``T`` of the input ``X``. For a deterministic network evaluated on a finite
sample of distinct inputs, ``T = f(X)`` is a function of ``X``, so the "true" ``I(X;T)`` of a
continuous ``T`` is infinite (or ``log n`` on the sample): an estimator must add some
coarseness, and remark 11.22 notes that the conclusions depend on which one. Two are here:

* :func:`binning_mi` (Shwartz-Ziv & Tishby, 2017): each unit is cut into ``B`` equal bins over
  a range, ``T`` becomes the tuple of bin indices of its units; as it is a function of ``X``,
  ``I(X;T) = H(T)`` and ``I(T;Y) = H(T) − H(T|Y)``, plug-in entropies of the sample, in bits.
* :func:`kde_mi` (Kolchinsky & Tracey, 2017; the estimator of Saxe et al., 2018): ``T`` plus
  Gaussian noise ``ε ~ N(0, σ² I)``; ``T + ε`` given ``X`` is then a mixture of ``n`` Gaussians
  of equal covariance, whose entropy is bracketed by pairwise-distance bounds: the KL bound
  (an upper bound) and the Bhattacharyya bound (a lower bound). ``I(X;T+ε) = H(T+ε) − H(ε)``
  and ``I(T+ε;Y) = H(T+ε) − Σ_y p(y) H(T+ε | Y=y)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def entropy_bits(codes: np.ndarray) -> float:
    """Plug-in entropy (bits) of the empirical distribution of the rows of ``codes`` (n, d)
    (a 1-D array is one code per example)."""
    codes = np.asarray(codes)
    if codes.ndim == 1:
        codes = codes[:, None]
    if len(codes) == 0:
        return 0.0
    codes = np.ascontiguousarray(codes)
    rows = codes.view(np.dtype((np.void, codes.dtype.itemsize * codes.shape[1]))).ravel()  # one key per row
    _, counts = np.unique(rows, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def bin_codes(t: np.ndarray, bins: int, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """The bin index (0 .. bins−1) of every unit of ``t`` (n, d): ``bins`` equal bins over
    ``[lo, hi]`` (default: the range of ``t``, all units together); values outside are put in
    the first / last bin. A constant ``t`` falls in one bin."""
    t = np.asarray(t, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    lo = float(t.min()) if lo is None else float(lo)
    hi = float(t.max()) if hi is None else float(hi)
    if not hi > lo:
        return np.zeros(t.shape, dtype=np.int64)
    idx = np.floor((t - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def binning_mi(t: np.ndarray, y: np.ndarray, bins: int = 30, lo: float | None = None,
               hi: float | None = None) -> tuple[float, float]:
    """``(I(X;T), I(T;Y))`` in bits by binning (Shwartz-Ziv & Tishby 2017, course remark 11.22).

    ``t`` (n, d): the layer's activations on n distinct inputs ``X``; ``y`` (n,): their labels.
    ``T`` discretised by :func:`bin_codes` is a deterministic function of ``X``, so
    ``I(X;T) = H(T) − H(T|X) = H(T)``, and ``I(T;Y) = H(T) − H(T|Y)`` with
    ``H(T|Y) = Σ_y p(y) H(T | Y=y)`` (eq. 11.15's two terms). Both lie in ``[0, log2 n]`` and
    ``I(T;Y) ≤ min(H(Y), I(X;T))``.
    """
    codes = bin_codes(t, bins, lo, hi)
    y = np.asarray(y)
    h_t = entropy_bits(codes)
    h_t_given_y = 0.0
    for c in np.unique(y):
        mask = y == c
        h_t_given_y += mask.mean() * entropy_bits(codes[mask])
    return h_t, h_t - h_t_given_y


def _pairwise_sq(t: np.ndarray) -> torch.Tensor:
    """Squared distances ``‖t_i − t_j‖²`` (float32: the bounds need no more)."""
    x = torch.as_tensor(np.asarray(t, dtype=np.float32))
    if x.dim() == 1:
        x = x[:, None]
    sq = x.square().sum(1)
    return (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_(min=0)


def _mixture_term(d2: torch.Tensor, scale: float) -> float:
    """``−(1/n) Σ_i ln (1/n) Σ_j exp(−d2_ij / scale)`` (nats): the pairwise-distance part of the
    mixture-entropy bounds of Kolchinsky & Tracey (2017), components of equal weight."""
    n = d2.shape[0]
    return float(-(torch.logsumexp(-d2 / scale, dim=1) - math.log(n)).mean())


def kde_mi(t: np.ndarray, y: np.ndarray | None = None, noise_var: float = 0.1,
           bound: str = "upper") -> tuple[float, float]:
    """``(I(X;T+ε), I(T+ε;Y))`` in bits, ``ε ~ N(0, σ² I)``, ``σ² = noise_var`` (Kolchinsky &
    Tracey 2017; Saxe et al. 2018 use it for the information plane of course remark 11.22).

    Given the sample ``X = {x_i}``, ``T + ε`` is the mixture ``(1/n) Σ_i N(t_i, σ² I)``, and
    ``I(X;T+ε) = H(T+ε) − H(T+ε | X)`` with ``H(T+ε | X) = (d/2) ln(2πeσ²)``. The mixture entropy
    is bounded by ``H(T+ε|X) − (1/n) Σ_i ln (1/n) Σ_j exp(−D(p_i, p_j))`` with ``D`` the KL
    divergence ``‖t_i − t_j‖²/(2σ²)`` (``bound="upper"``) or the Bhattacharyya distance
    ``‖t_i − t_j‖²/(8σ²)`` (``bound="lower"``); the ``H(T+ε|X)`` terms cancel, leaving the
    pairwise term, in ``[0, ln n]``. ``I(T+ε;Y)`` applies the same bound to ``H(T+ε)`` and to
    each ``H(T+ε | Y=y)`` (as Saxe et al. do: a difference of bounds, not itself a bound).
    ``y=None`` gives NaN for the second value.
    """
    if bound not in ("upper", "lower"):
        raise ValueError(f"bound must be 'upper' or 'lower', not {bound!r}")
    scale = (2.0 if bound == "upper" else 8.0) * noise_var
    d2 = _pairwise_sq(t)
    i_xt = _mixture_term(d2, scale)
    if y is None:
        return i_xt / math.log(2), math.nan
    y = np.asarray(y)
    h_cond = 0.0
    for c in np.unique(y):
        idx = torch.as_tensor(np.flatnonzero(y == c))
        h_cond += len(idx) / len(y) * _mixture_term(d2[idx][:, idx], scale)
    return i_xt / math.log(2), (i_xt - h_cond) / math.log(2)


def gaussian_mi_bits(rho: float) -> float:
    """``I`` of two jointly Gaussian scalars of correlation ``ρ``: ``½ log2(1/(1−ρ²))``."""
    return 0.5 * math.log2(1.0 / (1.0 - rho * rho))
