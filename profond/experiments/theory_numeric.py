"""Numerical checks of three theoretical results of the course.

* ``bias-variance`` — the bias-variance decomposition, eq. 3.1 (§3.1.1), simulated as in
  exercise 3.1: polynomials of degree d ∈ {1, 3, 5, 9, 15} fitted by least squares to
  N = 10 noisy samples of ``f(x) = sin(πx)`` (σ = 0.3).
* ``early-stopping-l2`` — theorem 3.8 (§3.8): gradient descent on a quadratic loss,
  stopped after T steps of size η, behaves like ridge regression with λ = 1/(ηT)
  (eq. 3.27 and the spectral argument that follows it).
* ``initialization`` — §1.5: how the variance of the activations evolves through a deep
  (50-layer) MLP, for naive, Xavier/Glorot and He/Kaiming initialisations.

All three are cheap (NumPy / a forward pass of a small MLP); ``--quick`` only reduces the
number of Monte-Carlo repetitions (30 instead of 100), the values of T, or the batch of the
MLP (250 instead of 1000), so each runs in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult  # noqa: E402

# ----------------------------------------------------------------------------------------
# 1. bias-variance (eq. 3.1, exercise 3.1)

BV_DEGREES = (1, 3, 5, 9, 15)
BV_N_POINTS = 10
BV_SIGMA = 0.3


def target(x: np.ndarray) -> np.ndarray:
    """The function of exercise 3.1, ``f(x) = sin(πx)``."""
    return np.sin(np.pi * x)


def fit_polynomial(x: np.ndarray, y: np.ndarray, degree: int, basis: str = "monomial") -> np.ndarray:
    """Least-squares coefficients of a degree-``degree`` polynomial through ``(x, y)``.

    The inputs live in [-1, 1], so every basis function is bounded by 1 there (that is the
    "scaling" that keeps degree 15 well behaved). ``np.linalg.lstsq`` solves through an SVD:
    for ``degree + 1 > len(x)`` (degree 15 on 10 points) the system is under-determined and
    it returns the *minimum-norm* interpolant — minimum norm of the coefficients *in the
    chosen basis*, so the basis matters there (see :func:`bias_variance_table`). No ridge
    term is added.
    """
    return np.linalg.lstsq(design(x, degree, basis), y, rcond=None)[0]


def design(x: np.ndarray, degree: int, basis: str = "monomial") -> np.ndarray:
    """Vandermonde matrix ``[φ_0(x), …, φ_degree(x)]`` for monomials or Legendre polynomials."""
    if basis == "monomial":
        return np.polynomial.polynomial.polyvander(x, degree)
    if basis == "legendre":
        return np.polynomial.legendre.legvander(x, degree)
    raise ValueError(f"unknown basis {basis!r}")


def simulate_fits(degree: int, n_datasets: int, rng: np.random.Generator, x_test: np.ndarray,
                  basis: str = "monomial") -> np.ndarray:
    """Predictions on ``x_test`` of ``n_datasets`` fits, one per fresh noisy data set.

    The design is fixed (N = 10 equally spaced points on [-1, 1]); only the noise
    ε ~ N(0, σ²) of the targets changes from one data set to the next, which is the
    setting of eq. 3.1 (expectation over the training set at a fixed x).
    """
    x = np.linspace(-1.0, 1.0, BV_N_POINTS)
    preds = np.empty((n_datasets, x_test.size))
    test_design = design(x_test, degree, basis)
    for r in range(n_datasets):
        y = target(x) + BV_SIGMA * rng.standard_normal(x.size)
        preds[r] = test_design @ fit_polynomial(x, y, degree, basis)
    return preds


def bias_variance_table(n_datasets: int, seed: int = 0) -> tuple[pd.DataFrame, dict[int, np.ndarray], np.ndarray]:
    """Bias², variance, noise and total expected error per degree (eq. 3.1), averaged over x.

    * ``bias2`` = mean over the test grid of ``(f(x) − E_D[f̂(x)])²``;
    * ``variance`` = mean over the grid of ``E_D[(f̂(x) − E_D[f̂(x)])²]``;
    * ``noise`` = σ² (irreducible);
    * ``total_mc`` = a *direct* Monte-Carlo estimate of ``E[(y − f̂(x))²]`` with fresh test
      targets ``y = f(x) + ε`` — it is not computed from the three terms, so
      ``rel_gap = |total_mc − (bias2 + variance + noise)| / total_mc`` checks eq. 3.1.

    The expectations over data sets are sample means over ``n_datasets`` (so ``bias2`` carries
    a small upward Monte-Carlo bias of ``variance / n_datasets``). Fits use the monomial basis
    on [-1, 1] (what ``np.polyfit`` does); ``variance_legendre`` repeats the variance with the
    Legendre basis: identical for d ≤ 9 (same least-squares fit), but for d = 15 the
    minimum-norm interpolant of that basis is much smoother — the implicit bias of
    over-parametrised least squares behind double descent (§11.4).
    """
    rng = np.random.default_rng(seed)
    x_test = np.linspace(-1.0, 1.0, 201)
    f_test = target(x_test)
    rows, preds_by_degree = [], {}
    for d in BV_DEGREES:
        preds = simulate_fits(d, n_datasets, rng, x_test)
        preds_by_degree[d] = preds
        mean_pred = preds.mean(axis=0)
        bias2 = float(np.mean((f_test - mean_pred) ** 2))
        variance = float(np.mean(preds.var(axis=0)))
        y_new = f_test + BV_SIGMA * rng.standard_normal(preds.shape)
        total_mc = float(np.mean((y_new - preds) ** 2))
        decomposed = bias2 + variance + BV_SIGMA**2
        var_leg = float(np.mean(simulate_fits(d, n_datasets, rng, x_test, "legendre").var(axis=0)))
        rows.append({"degree": d, "n_params": d + 1, "bias2": bias2, "variance": variance,
                     "noise": BV_SIGMA**2, "bias2+var+noise": decomposed, "total_mc": total_mc,
                     "rel_gap": abs(total_mc - decomposed) / total_mc, "variance_legendre": var_leg})
    return pd.DataFrame(rows), preds_by_degree, x_test


@EXPERIMENTS.register("bias-variance", help="bias-variance decomposition of polynomial fits (course eq. 3.1, ex. 3.1)")
def bias_variance(out: Path, quick: bool) -> ExperimentResult:
    n_datasets = 30 if quick else 100
    table, preds, x_test = bias_variance_table(n_datasets)

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    ax.plot(table["degree"], table["bias2"], "o-", label="bias²")
    ax.plot(table["degree"], table["variance"], "s-", label="variance")
    ax.plot(table["degree"], table["total_mc"], "^-", label="total (Monte Carlo)")
    ax.axhline(BV_SIGMA**2, color="gray", ls=":", label="σ² (noise)")
    ax.set_yscale("log")
    ax.set_xlabel("polynomial degree")
    ax.set_title(f"eq. 3.1 over {n_datasets} data sets (N={BV_N_POINTS}, σ={BV_SIGMA})")
    ax.legend(fontsize=8)
    for ax, d in zip(axes[1:], (1, 15), strict=True):
        for p in preds[d][:15]:
            ax.plot(x_test, p, color="tab:blue", alpha=0.3, lw=0.8)
        ax.plot(x_test, preds[d].mean(axis=0), color="tab:red", lw=2, label="mean fit E[f̂]")
        ax.plot(x_test, target(x_test), "k--", lw=1.5, label="sin(πx)")
        ax.set_ylim(-3, 3)
        ax.set_title(f"degree {d}: 15 fits")
        ax.legend(fontsize=8, loc="upper left")
    fig_path = save_figure(fig, out / "bias_variance.png")

    best = int(table.loc[table["total_mc"].idxmin(), "degree"])
    notes = (f"Best trade-off (lowest total error): degree {best}. Fixed design of {BV_N_POINTS} equally "
             "spaced points; degree 15 is the minimum-norm interpolant (monomial basis).")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"best_degree": best, "max_rel_gap": float(table["rel_gap"].max())})


# ----------------------------------------------------------------------------------------
# 2. early stopping ≈ L2 (theorem 3.8, eq. 3.27)


def gd_shrinkage(s: np.ndarray, eta: float, steps: int) -> np.ndarray:
    """Eq. 3.27 per eigen-direction: GD from 0 keeps ``1 − (1 − η s)^T`` of θ*."""
    return 1.0 - (1.0 - eta * s) ** steps


def ridge_shrinkage(s: np.ndarray, lam: float) -> np.ndarray:
    """Ridge keeps ``s / (s + λ)`` of θ* along the eigenvector of eigenvalue ``s``."""
    return s / (s + lam)


def make_regression(n: int = 200, p: int = 50, s_min: float = 1e-4, s_max: float = 1.0,
                    noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Design ``X`` (n×p) whose Hessian ``H = XᵀX / n`` has prescribed eigenvalues.

    ``X = √n · U diag(√s) Vᵀ`` with U (n×p) orthonormal columns and V orthogonal, so
    ``H = V diag(s) Vᵀ`` exactly, with ``s`` log-spaced in [s_min, s_max].
    Returns ``X, y, s, V``.
    """
    rng = np.random.default_rng(seed)
    s = np.geomspace(s_max, s_min, p)
    u, _ = np.linalg.qr(rng.standard_normal((n, p)))
    v, _ = np.linalg.qr(rng.standard_normal((p, p)))
    x = np.sqrt(n) * (u * np.sqrt(s)) @ v.T
    w_true = rng.standard_normal(p)
    y = x @ w_true + noise * rng.standard_normal(n)
    return x, y, s, v


def run_gd(x: np.ndarray, y: np.ndarray, eta: float, steps: int) -> np.ndarray:
    """Plain gradient descent on ``L(w) = ‖Xw − y‖² / (2n)`` from ``w0 = 0``."""
    n = x.shape[0]
    h = x.T @ x / n
    g0 = x.T @ y / n
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        w -= eta * (h @ w - g0)
    return w


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Minimiser of ``‖Xw − y‖² / (2n) + λ‖w‖²/2``, i.e. ``(H + λI)⁻¹ Xᵀy / n``."""
    n, p = x.shape
    return np.linalg.solve(x.T @ x / n + lam * np.eye(p), x.T @ y / n)


def early_stopping_table(steps_list: tuple[int, ...], eta: float = 0.1) -> tuple[pd.DataFrame, dict]:
    """GD stopped at T vs ridge with λ = 1/(ηT) (theorem 3.8), per T.

    ``rel_distance = ‖w_GD(T) − w_ridge‖ / ‖w_ridge‖`` uses the *iterated* GD weights.
    The shrinkage factors compare ``g(x) = 1 − (1 − ηs)^T ≈ 1 − e^{−x}`` with
    ``r(x) = x / (1 + x)``, where ``x = ηsT``: they agree when x ≪ 1 (both ≈ x) and when
    x ≫ 1 (both ≈ 1) but differ by up to ≈ 0.20 around x ≈ 2.5 — "approximately equivalent"
    in the theorem means the same *scale* of regularisation, not the same filter.
    ``max_rel_shrink_gap_small`` / ``_large`` are the largest relative gaps over the
    directions with x ≤ 0.05 / x ≥ 20, ``gd_formula_error`` the largest difference between
    the measured shrinkage of the GD iterate and eq. 3.27.
    """
    x, y, s, v = make_regression()
    w_ols = np.linalg.lstsq(x, y, rcond=None)[0]
    c_ols = v.T @ w_ols  # θ* in the eigenbasis of H
    rows, curves = [], {}
    for steps in steps_list:
        lam = 1.0 / (eta * steps)
        w_gd = run_gd(x, y, eta, steps)
        w_r = ridge(x, y, lam)
        g, r = gd_shrinkage(s, eta, steps), ridge_shrinkage(s, lam)
        measured = (v.T @ w_gd) / c_ols
        xs = eta * s * steps
        small, large = xs <= 0.05, xs >= 20
        rel = np.abs(g - r) / r
        rows.append({
            "T": steps, "eta": eta, "lambda=1/(eta T)": lam,
            "rel_distance": float(np.linalg.norm(w_gd - w_r) / np.linalg.norm(w_r)),
            "max_abs_shrink_gap": float(np.max(np.abs(g - r))),
            "max_rel_shrink_gap_small": float(rel[small].max()) if small.any() else float("nan"),
            "max_rel_shrink_gap_large": float(rel[large].max()) if large.any() else float("nan"),
            "gd_formula_error": float(np.max(np.abs(measured - g))),
        })
        curves[steps] = (g, r, measured)
    return pd.DataFrame(rows), {"s": s, "curves": curves}


@EXPERIMENTS.register("early-stopping-l2", help="early stopping vs L2 regularisation, lambda = 1/(eta T) (course theorem 3.8)")
def early_stopping_l2(out: Path, quick: bool) -> ExperimentResult:
    steps_list = (10, 100, 1000) if quick else (10, 30, 100, 300, 1000, 3000, 10000)
    eta = 0.1
    table, data = early_stopping_table(steps_list, eta)
    s = data["s"]

    plotted = (10, 100, 1000)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for steps, color in zip(plotted, ("tab:blue", "tab:orange", "tab:green"), strict=True):
        g, r, measured = data["curves"][steps]
        ax.plot(s, g, "-", color=color, label=f"GD, T={steps}: 1-(1-ηs)^T")
        ax.plot(s, measured, "o", color=color, ms=3, alpha=0.6)
        ax.plot(s, r, "--", color=color, label=f"ridge, λ=1/(ηT)={1 / (eta * steps):g}")
    ax.set_xscale("log")
    ax.set_xlabel("eigenvalue s of the Hessian")
    ax.set_ylabel("shrinkage factor (fraction of θ* kept)")
    ax.set_title(f"theorem 3.8: early stopping ≈ L2 (η={eta}; dots: measured GD iterate)")
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, out / "early_stopping_l2.png")
    return ExperimentResult(table=table, figures=[fig_path],
                            notes=("λ = 1/(ηT). Shrinkage factors agree within a few percent for ηsT ≪ 1 and "
                                   "ηsT ≫ 1, and differ by up to ≈ 0.2 near ηsT ≈ 2.5, so the weight vectors "
                                   "differ by 10-30 % in norm: same scale of regularisation, not the same "
                                   "estimator."),
                            extra={"max_rel_distance": float(table["rel_distance"].max())})


# ----------------------------------------------------------------------------------------
# 3. initialisation (§1.5)

#: (label, init scheme, activation, weight std for the naive schemes)
INIT_SCHEMES = [
    ("naive std=0.01 + tanh", "naive", "tanh", 0.01),
    ("naive std=1 + tanh", "naive", "tanh", 1.0),
    ("naive std=1 + relu", "naive", "relu", 1.0),
    ("xavier_normal + tanh", "xavier_normal", "tanh", None),
    ("he + relu", "he", "relu", None),
    ("xavier_normal + relu", "xavier_normal", "relu", None),
]
INIT_REPORT_LAYERS = (1, 10, 25, 50)


def activation_variances(scheme: str, activation: str, std: float | None, depth: int = 50,
                         width: int = 256, batch: int = 1000, seed: int = 0) -> np.ndarray:
    """Variance of the activations ``h_ℓ = φ(W_ℓ h_{ℓ−1})`` for ℓ = 1..depth (no training).

    Inputs are N(0, 1); biases are zero. Computed in float64 so that exploding (≈128^ℓ for
    naive std=1 + ReLU) and vanishing variances stay representable. Xavier / He weights
    come from :func:`profond.nn.layers.init_weights`; "naive" draws N(0, std²).
    """
    import torch
    from torch import nn

    from ..nn.layers import init_weights

    gen = torch.manual_seed(seed)
    layers = [nn.Linear(width, width, dtype=torch.float64) for _ in range(depth)]
    with torch.inference_mode():
        for layer in layers:
            if scheme == "naive":
                nn.init.normal_(layer.weight, 0.0, std)
                nn.init.zeros_(layer.bias)
            else:
                init_weights(layer, scheme, activation)
        act = torch.tanh if activation == "tanh" else torch.relu
        h = torch.randn(batch, width, dtype=torch.float64, generator=gen)
        out = []
        for layer in layers:
            h = act(layer(h))
            out.append(float(h.var()))
    return np.array(out)


def initialization_table(batch: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Variance at layers 1, 10, 25, 50 and ``ratio_50_1 = Var(h_50) / Var(h_1)`` per scheme.

    Theory (§1.5, linear regime): each layer multiplies the second moment by
    ``n σ_w² · c`` with c = 1 for tanh near 0 and c = 1/2 for ReLU. Hence He + ReLU keeps
    it constant, Xavier + ReLU halves it at each layer (2⁻⁴⁹ at layer 50), naive std=0.01
    shrinks it by ≈ 0.0256 per layer (vanishing), naive std=1 + ReLU multiplies it by 128
    (exploding), and naive std=1 + tanh saturates (|h| ≈ 1, variance ≈ 1, vanishing
    gradients). Xavier + tanh is the critical case: tanh' < 1 away from 0, so the variance
    decays slowly (roughly like 1/ℓ) instead of staying exactly constant.
    """
    rows, curves = [], {}
    for label, scheme, act, std in INIT_SCHEMES:
        v = activation_variances(scheme, act, std, batch=batch, seed=seed)
        curves[label] = v
        row = {"init": label, "activation": act}
        row.update({f"var_L{k}": float(v[k - 1]) for k in INIT_REPORT_LAYERS})
        row["ratio_50_1"] = float(v[-1] / v[0])
        rows.append(row)
    return pd.DataFrame(rows), curves


@EXPERIMENTS.register("initialization", help="activation variance through a 50-layer MLP per init scheme (course §1.5)")
def initialization(out: Path, quick: bool) -> ExperimentResult:
    table, curves = initialization_table(batch=250 if quick else 1000)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, v in curves.items():
        ax.plot(np.arange(1, v.size + 1), np.log10(np.maximum(v, 1e-300)), label=label)
    ax.set_xlabel("layer ℓ")
    ax.set_ylabel("log10 Var(h_ℓ)")
    ax.set_title(f"activation variance through a 50-layer MLP (width 256, batch {250 if quick else 1000})")
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, out / "initialization.png")
    return ExperimentResult(table=table, figures=[fig_path],
                            notes="Matching init (He+ReLU) keeps the variance; Xavier+tanh decays slowly.")
