"""Power-law fits of loss against model size (course §11.11, eq. 11.16; eq. 7.16).

:func:`fit_power_law` fits ``L = c · N^(-α)`` by ordinary least squares of ``log L`` on
``log N`` (the regression of exercise 11.7) and returns the standard errors of the two
coefficients; :func:`power_law_band` extrapolates the fitted line with its uncertainty. In the
course's notation ``L = (N_c / N)^α``, so ``N_c = c^(1/α)``.
"""

from __future__ import annotations

import math

import numpy as np


def _ols(N: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients ``(log c, -α)`` of ``log L = log c − α log N`` and their covariance."""
    N = np.asarray(N, dtype=float).ravel()
    L = np.asarray(L, dtype=float).ravel()
    if len(N) != len(L) or len(N) < 3:
        raise ValueError("need at least 3 (N, L) pairs of equal length (2 for the line, 1 for the error)")
    if np.any(N <= 0) or np.any(L <= 0):
        raise ValueError("N and L must be positive (log-log fit)")
    A = np.column_stack([np.ones_like(N), np.log(N)])
    coef, *_ = np.linalg.lstsq(A, np.log(L), rcond=None)
    resid = np.log(L) - A @ coef
    s2 = float(resid @ resid) / (len(N) - 2)  # unbiased residual variance, n - 2 degrees of freedom
    cov = s2 * np.linalg.inv(A.T @ A)
    return coef, cov


def fit_power_law(N: np.ndarray, L: np.ndarray) -> tuple[float, float, float, float]:
    """``(alpha, c, se_alpha, se_c)`` of the log-log least-squares fit ``L ≈ c · N^(-alpha)``.

    ``se_alpha`` is the usual OLS standard error of the slope; ``se_c`` comes from the one of
    the intercept ``log c`` by the delta method (``se_c = c · se_log_c``). Both are 0 for an
    exact power law and assume independent homoscedastic errors on ``log L``.
    """
    coef, cov = _ols(N, L)
    alpha = -float(coef[1])
    c = math.exp(float(coef[0]))
    return alpha, c, math.sqrt(max(cov[1, 1], 0.0)), c * math.sqrt(max(cov[0, 0], 0.0))


def power_law_band(N: np.ndarray, L: np.ndarray, N_new: np.ndarray | float,
                   k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted ``L(N_new)`` and the band ``exp(log L̂ ± k · se)``, ``se`` being the standard
    error of the fitted line at ``log N_new`` (full covariance of intercept and slope: the
    uncertainty of the *fitted mean*, not of a new observation)."""
    coef, cov = _ols(N, L)
    x = np.column_stack([np.ones_like(np.atleast_1d(N_new), dtype=float), np.log(np.atleast_1d(N_new))])
    mean = x @ coef
    se = np.sqrt(np.einsum("ij,jk,ik->i", x, cov, x))
    return np.exp(mean), np.exp(mean - k * se), np.exp(mean + k * se)
