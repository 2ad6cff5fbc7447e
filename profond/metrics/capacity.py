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
import torch
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


# ----------------------------------------------------------------------------------------
# Shattering by one-hidden-layer ReLU networks (theorem 11.6, course §11.2), by training


def relu_net_num_params(width: int, in_features: int = 2) -> int:
    """``W`` of ``x ↦ Σ_j a_j ReLU(w_jᵀx + b_j) + c``: ``(d + 2) k + 1`` weights and biases."""
    return (in_features + 2) * width + 1


#: slope of ReLU′ on z ≤ 0 in the *search* gradient of :func:`hinge_grads` (a leaky surrogate, so
#: that a point on a unit's dead side still pulls the kink towards it); the forward pass and the
#: zero-error check use the true ReLU, so a fit found this way is still a certificate
LEAK = 0.1


def _unpack(theta: torch.Tensor, k: int, d: int) -> tuple[torch.Tensor, ...]:
    """Views ``W`` (B, k, d), ``b`` (B, k), ``a`` (B, k), ``c`` (B,) of the flat parameters (B, P)."""
    B = theta.shape[0]
    return (theta[:, :k * d].view(B, k, d), theta[:, k * d:k * d + k], theta[:, k * d + k:k * d + 2 * k],
            theta[:, -1])


def relu_outputs(X: torch.Tensor, theta: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched one-hidden-layer nets ``f(x) = Σ_j a_j ReLU(w_jᵀx + b_j) + c``: ``X`` (B, n, d),
    flat parameters ``theta`` (B, (d + 2) k + 1) → pre-activations (B, n, k), outputs (B, n)."""
    W, b, a, c = _unpack(theta, k, X.shape[2])
    z = torch.bmm(X, W.transpose(1, 2)) + b[:, None, :]
    return z, torch.bmm(torch.relu(z), a[:, :, None])[:, :, 0] + c[:, None]


def hinge_grads(X: torch.Tensor, Y: torch.Tensor, theta: torch.Tensor, k: int, leak: float = LEAK
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Margins ``y_i f(x_i)`` (B, n) and the gradient (B, P), by hand, of each net's hinge loss
    ``Σ_i max(0, 1 − y_i f(x_i))`` with respect to its flat parameters (layout of
    :func:`relu_outputs`), with ReLU′(z) taken as ``LEAK`` instead of 0 for z ≤ 0 (``leak=0``:
    the exact gradient)."""
    _, _, a, _ = _unpack(theta, k, X.shape[2])
    z, f = relu_outputs(X, theta, k)
    m = Y * f
    gf = -Y * (m < 1).to(X.dtype)                                # ∂loss/∂f, (B, n)
    gz = gf[:, :, None] * a[:, None, :] * ((z > 0).to(X.dtype) + leak * (z <= 0).to(X.dtype))
    B = X.shape[0]
    return m, torch.cat([torch.bmm(gz.transpose(1, 2), X).reshape(B, -1), gz.sum(1),
                         torch.bmm(gf[:, None, :], torch.relu(z))[:, 0], gf.sum(1, keepdim=True)], dim=1)


def train_relu_nets(X: torch.Tensor, Y: torch.Tensor, widths: torch.Tensor, *, steps: int = 300,
                    lr: float = 0.05, check_every: int = 25, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Train B independent nets ``x ↦ Σ_{j≤k} a_j ReLU(w_jᵀx + b_j) + c`` (float64, Adam on the
    hinge loss, full batch), net ``i`` of width ``widths[i]`` on points ``X[i]`` (n, d) with
    labels ``Y[i]`` ∈ {±1}^n. Returns a bool (B,): True when the net reached zero training
    error, ``y f(x) > 0`` at every point — a certificate that the labelling is realised.

    Nets of several widths share one batch of width ``max(widths)``: the extra units have
    ``a_j = 0`` and a zero gradient, so they stay off. The initialisation puts every unit's kink
    through a random data point (``b_j = −w_jᵀx_{i_j}``), so that units start half-active on
    the data. Every ``check_every`` steps the nets that fit leave the batch (Adam acts per
    coordinate, so the others are unaffected).
    """
    X = torch.as_tensor(X, dtype=torch.float64)
    Y = torch.as_tensor(Y, dtype=torch.float64)
    widths = torch.as_tensor(widths)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    B, n, d = X.shape
    k = int(widths.max())
    mask = (torch.arange(k)[None, :] < widths[:, None]).to(torch.float64)
    W = torch.randn(B, k, d, generator=g, dtype=torch.float64)
    anchor = torch.gather(X, 1, torch.randint(0, n, (B, k, 1), generator=g).expand(B, k, d))
    b = -(W * anchor).sum(-1) + 0.1 * torch.randn(B, k, generator=g, dtype=torch.float64)
    a = torch.randn(B, k, generator=g, dtype=torch.float64) * mask
    theta = torch.cat([W.reshape(B, -1), b, a, torch.zeros(B, 1, dtype=torch.float64)], dim=1)
    keep_a = torch.cat([torch.ones(B, k * d + k, dtype=torch.float64), mask,
                        torch.ones(B, 1, dtype=torch.float64)], dim=1)  # zero gradient for switched-off a_j
    m1, m2 = torch.zeros_like(theta), torch.zeros_like(theta)
    fitted = torch.zeros(B, dtype=torch.bool)
    live = torch.arange(B)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(steps + 1):
        margins, grad = hinge_grads(X, Y, theta, k)
        if step % check_every == 0 or step == steps:
            done = (margins > 0).all(1)
            fitted[live[done]] = True
            if step == steps or bool(done.all()):
                break
            if bool(done.any()):  # the nets that fit leave the batch, with their Adam moments
                keep = ~done
                live, X, Y, theta, m1, m2, keep_a = (t[keep] for t in (live, X, Y, theta, m1, m2, keep_a))
                margins, grad = hinge_grads(X, Y, theta, k)
        grad = grad * keep_a
        t = step + 1  # Adam (Kingma & Ba), in place, bias-corrected
        m1.mul_(beta1).add_(grad, alpha=1 - beta1)
        m2.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        theta.sub_(lr / (1 - beta1**t) * m1 / ((m2 / (1 - beta2**t)).sqrt() + eps))
    return fitted


def relu_shattering(point_sets: np.ndarray, widths: list[int], *, restarts: tuple[int, ...] = (1, 4, 8),
                    steps: int = 300, seed: int = 0) -> np.ndarray:
    """Fraction of the ``2^n`` labellings of each point set realised by a trained ReLU net of
    each width: array (len(widths), S) for ``point_sets`` (S, n, d).

    Only the ``2^(n−1)`` labellings with ``y_1 = +1`` are trained: ``−f`` is again such a net
    (negate ``a`` and ``c``) and realises ``−y``, so they decide all ``2^n``. A labelling counts
    as realised when some net of that width fits it with zero training error (a certificate);
    round ``r`` retrains the labellings not yet realised from ``restarts[r]`` fresh
    initialisations each. A failure is not a proof of impossibility, so the fraction — and the
    largest n with a fraction of 1 — is a lower bound (empirical VC dimension, definition 11.4).
    """
    S, n, _ = point_sets.shape
    half = labelings(n - 1)
    Y = torch.tensor(np.hstack([np.ones((len(half), 1)), half]))
    kk, ss, ll = (torch.tensor(v.ravel()) for v in np.meshgrid(
        np.asarray(widths), np.arange(S), np.arange(len(Y)), indexing="ij"))
    Xs = torch.as_tensor(point_sets, dtype=torch.float64)
    ok = torch.zeros(len(kk), dtype=torch.bool)
    g = torch.Generator().manual_seed(seed)
    for reps in restarts:
        todo = torch.nonzero(~ok).ravel()
        if len(todo) == 0:
            break
        rep = todo.repeat_interleave(reps)
        res = train_relu_nets(Xs[ss[rep]], Y[ll[rep]], kk[rep], steps=steps, generator=g)
        ok[todo] = res.view(-1, reps).any(1)
    return ok.view(len(widths), S, len(Y)).double().mean(2).numpy()
