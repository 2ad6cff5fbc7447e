"""Capacity measures of chapter 11: shattering / VC dimension of linear classifiers and the
empirical Rademacher complexity of a norm-bounded linear class.

* :func:`linearly_separable` — does an affine classifier ``sign(w·x + b)`` realise the labels?
  Decided exactly by a linear program (feasibility of ``y_i (w·x_i + b) ≥ 1``).
* :func:`count_labelings` / :func:`shatters` — how many of the ``2^m`` dichotomies of a point
  set a class realises (definition 11.4, course §11.2); :func:`cover_count` is the number of
  linear dichotomies of ``m`` points in general position (Cover 1965), and
  :func:`sauer_shelah_bound` the bound of eq. 11.4.
* :func:`empirical_rademacher` — Monte-Carlo estimate of eq. 11.5 for
  ``H = {x ↦ w·x : ‖w‖ ≤ B}``; :func:`exact_rademacher` enumerates all sign vectors;
  :func:`rademacher_bound` is exercise 11.2's bound, eq. 11.17.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import linprog

Predicate = Callable[[np.ndarray, np.ndarray], bool]


def linearly_separable(X: np.ndarray, y: np.ndarray) -> bool:
    """True when some ``(w, b)`` gives ``y_i (w·x_i + b) ≥ 1`` for every ``i`` (labels ±1).

    Strict separability by an affine hyperplane is scale-free, so margin 1 loses nothing:
    the LP (zero objective, variables ``w ∈ R^d`` and ``b``, all free) is feasible exactly
    when the labelling is realised by ``sign(w·x + b)``. HiGHS decides it exactly up to its
    feasibility tolerance (1e-7), far below the margins of the point sets used here.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float).ravel()
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (m, d) and y (m,): got {X.shape} and {y.shape}")
    if not np.all(np.abs(y) == 1):
        raise ValueError("labels must be ±1")
    m, d = X.shape
    A = -(y[:, None] * np.hstack([X, np.ones((m, 1))]))  # -y_i [x_i, 1]·[w, b] ≤ -1
    res = linprog(np.zeros(d + 1), A_ub=A, b_ub=-np.ones(m), bounds=[(None, None)] * (d + 1),
                  method="highs")
    if res.status not in (0, 2):  # 0 feasible, 2 infeasible; anything else is a solver failure
        raise RuntimeError(f"linprog failed: {res.message}")
    return res.status == 0


def labelings(m: int) -> np.ndarray:
    """All ``2^m`` label vectors in ``{-1, +1}^m``, one per row."""
    return np.array(list(itertools.product((-1.0, 1.0), repeat=m))).reshape(2**m, m)


def count_labelings(X: np.ndarray, predicate: Predicate = linearly_separable) -> int:
    """How many of the ``2^m`` dichotomies of the rows of ``X`` the class realises (every one is
    tested: no symmetry is assumed of ``predicate``)."""
    X = np.asarray(X, dtype=float)
    return sum(bool(predicate(X, y)) for y in labelings(len(X)))


def shatters(X: np.ndarray, predicate: Predicate = linearly_separable) -> bool:
    """Definition 11.4 (course §11.2): the class realises all ``2^m`` dichotomies of ``X``
    (stops at the first labelling it cannot realise)."""
    X = np.asarray(X, dtype=float)
    return all(predicate(X, y) for y in labelings(len(X)))


def cover_count(m: int, d: int) -> int:
    """Number of dichotomies of ``m`` points in general position in ``R^d`` realised by affine
    classifiers: ``C(m, d+1) = 2 Σ_{k=0}^{d} binom(m-1, k)`` (Cover's function-counting
    theorem; the ``+1`` is the bias). Equals ``2^m`` exactly when ``m ≤ d + 1`` (proposition
    11.5: VC dimension ``d + 1``)."""
    return 2 * sum(math.comb(m - 1, k) for k in range(d + 1))


def sauer_shelah_bound(m: int, d_vc: int) -> int:
    """Eq. 11.4 (Sauer-Shelah): at most ``Σ_{i=0}^{d_vc} binom(m, i)`` dichotomies of ``m`` points."""
    return sum(math.comb(m, i) for i in range(d_vc + 1))


def _sup_linear(X: np.ndarray, sigma: np.ndarray, B: float) -> np.ndarray:
    """``sup_{‖w‖≤B} (1/m) Σ_i σ_i w·x_i = (B/m) ‖Σ_i σ_i x_i‖`` (Cauchy-Schwarz, attained at
    ``w = B v/‖v‖`` with ``v = Σ σ_i x_i``), one value per row of ``sigma``."""
    return B / X.shape[0] * np.linalg.norm(sigma @ X, axis=1)


def rademacher_draws(X: np.ndarray, B: float, n_draws: int, seed: int = 0) -> np.ndarray:
    """``n_draws`` i.i.d. values of the supremum in eq. 11.5 (course §11.3) for
    ``H = {x ↦ w·x : ‖w‖ ≤ B}``, one per Rademacher vector ``σ ~ Unif{-1,+1}^m``."""
    X = np.asarray(X, dtype=float)
    rng = np.random.default_rng(seed)
    sigma = rng.choice((-1.0, 1.0), size=(n_draws, X.shape[0]))
    return _sup_linear(X, sigma, B)


def empirical_rademacher(X: np.ndarray, B: float, n_draws: int = 1000, seed: int = 0) -> float:
    """Monte-Carlo estimate of eq. 11.5, ``R̂_S(H) = E_σ (B/m) ‖Σ σ_i x_i‖`` (standard error:
    ``rademacher_draws(...).std() / sqrt(n_draws)``)."""
    return float(rademacher_draws(X, B, n_draws, seed).mean())


def exact_rademacher(X: np.ndarray, B: float) -> float:
    """Eq. 11.5 computed exactly by averaging over all ``2^m`` sign vectors (``m ≤ 20``)."""
    X = np.asarray(X, dtype=float)
    if X.shape[0] > 20:
        raise ValueError(f"2^{X.shape[0]} sign vectors: too many to enumerate")
    return float(_sup_linear(X, labelings(X.shape[0]), B).mean())


def rademacher_bound(X: np.ndarray, B: float) -> float:
    """Exercise 11.2, eq. 11.17: ``R̂_S(H) ≤ B sqrt(Σ_i ‖x_i‖²) / m`` (Jensen then
    ``E‖Σ σ_i x_i‖² = Σ ‖x_i‖²``)."""
    X = np.asarray(X, dtype=float)
    return float(B * math.sqrt(float((X**2).sum())) / X.shape[0])
