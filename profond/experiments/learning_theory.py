"""Numerical versions of four exercises of chapter 11 (learning theory).

* ``vc-shattering`` — exercise 11.1, proposition 11.5 (course §11.2): linear classifiers
  ``sign(w·x + b)`` in R² shatter every 3 points in general position and no 4 points. On
  random Gaussian point sets of n = 1..5 points every one of the 2^n labellings is tested by a
  linear program; the count realised is compared with Cover's count and with the
  Sauer-Shelah bound (eq. 11.4). The VC dimension read off must be 3 = d + 1. (Shattering
  counts of small trained ReLU networks vs their parameter count, theorem 11.6, are not done.)
  Budgets: 25 point sets per n (quick), 200 (full).
* ``rademacher`` — exercise 11.2 (§11.3, eq. 11.5): Monte-Carlo empirical Rademacher
  complexity of ``{x ↦ w·x : ‖w‖ ≤ B}`` on Gaussian data in R^10, m ∈ {10, …, 1000},
  B ∈ {1, 5}, against the bound of eq. 11.17, ``B sqrt(Σ‖x_i‖²)/m``; exact enumeration of
  the 2^10 sign vectors at m = 10. Claims: the bound holds, is within a factor 1-2, and the
  complexity decays as m^(-1/2). Budgets: 500 sign draws (quick), 4000 (full).
* ``implicit-bias`` — exercise 11.5, theorem 11.10 (§11.4.2, eq. 11.8): plain gradient
  descent on over-parametrised least squares (n < p), from w0 = 0, converges to X⁺y and
  never leaves Im(Xᵀ); from a random w0 it converges to X⁺y + P_null w0. Then the
  minimum-norm interpolator's test error against p at fixed n (the double-descent peak at
  p = n, §11.4.1). Budgets: 8 data sets per p (quick), 40 (full).
* ``scaling-law-fit`` — exercise 11.7 (§11.11, eq. 11.16; eq. 7.16): the exercise's four
  points (N, L), α_N by log-log least squares with its standard error, extrapolation to
  N = 10^11 with a ±2 se band, and the limits of that extrapolation. (``scaling-law`` is the
  name of the language-model experiment that trains the GPTs.) Same in both modes.

All four are pure numerics (NumPy / SciPy linear programs / a float64 torch loop) on 1 thread.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..metrics.capacity import (  # noqa: E402
    count_labelings,
    cover_count,
    exact_rademacher,
    rademacher_bound,
    rademacher_draws,
    sauer_shelah_bound,
)
from ..metrics.scaling import fit_power_law, power_law_band  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, verdict  # noqa: E402
from .dynamics import implicit_bias_table  # noqa: E402  (theorem 11.10's check, shared with double-descent)

# ----------------------------------------------------------------------------------------
# 1. VC dimension of linear classifiers in the plane (exercise 11.1, proposition 11.5)

VC_DIM_INPUT = 2
XOR_POINTS = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
COLLINEAR_POINTS = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])


def vc_table(n_sets: int, max_points: int = 5, seed: int = 0) -> pd.DataFrame:
    """Per number of points n: fraction of random Gaussian sets shattered and the number of
    labellings realised (all 2^n tested by LP) against Cover's count C(n, 3) and eq. 11.4."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(1, max_points + 1):
        counts = np.array([count_labelings(rng.standard_normal((n, VC_DIM_INPUT))) for _ in range(n_sets)])
        rows.append({
            "n_points": n, "n_sets": n_sets, "labelings_total": 2**n,
            "frac_shattered": float(np.mean(counts == 2**n)),
            "labelings_min": int(counts.min()), "labelings_mean": float(counts.mean()),
            "labelings_max": int(counts.max()),
            "cover_count": cover_count(n, VC_DIM_INPUT),  # general position, affine classifiers
            "sauer_shelah_d3": sauer_shelah_bound(n, VC_DIM_INPUT + 1),  # eq. 11.4 with d_VC = 3
        })
    return pd.DataFrame(rows)


@EXPERIMENTS.register("vc-shattering", help="VC dimension of linear classifiers in R^2 by LP shattering tests (course ex. 11.1, prop. 11.5)")
def vc_shattering(out: Path, quick: bool) -> ExperimentResult:
    n_sets = 25 if quick else 200
    table = vc_table(n_sets)
    frac = dict(zip(table["n_points"], table["frac_shattered"], strict=True))
    vc = max((n for n, f in frac.items() if f > 0), default=0)
    xor = count_labelings(XOR_POINTS)
    collinear = count_labelings(COLLINEAR_POINTS)
    claims = {
        "every_3_point_set_shattered": verdict(frac[3] == 1.0),
        "no_4_point_set_shattered": verdict(frac[4] == 0.0),
        "vc_dimension_is_d_plus_1": verdict(vc == VC_DIM_INPUT + 1),
        "counts_equal_cover": verdict(bool((table["labelings_min"] == table["cover_count"]).all()
                                           and (table["labelings_max"] == table["cover_count"]).all())),
        "sauer_shelah_holds": verdict(bool((table["labelings_max"] <= table["sauer_shelah_d3"]).all())),
    }

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.semilogy(table["n_points"], table["labelings_total"], "k--o", label="2^n (all labellings)")
    ax.semilogy(table["n_points"], table["labelings_mean"], "s-", label="realised by sign(w·x+b) (LP)")
    ax.semilogy(table["n_points"], table["sauer_shelah_d3"], "^:", label="Sauer-Shelah, d_VC=3 (eq. 11.4)")
    ax.axvline(vc, color="gray", lw=0.8)
    ax.set_xlabel("number of points n (random, R²)")
    ax.set_ylabel("labellings")
    ax.set_title(f"linear classifiers in R²: VC dimension {vc}")
    ax.legend(fontsize=8)
    fig_path = save_figure(fig, out / "vc_shattering.png")

    notes = (f"VC dimension read off: {vc} (largest n with a shattered set; d + 1 = {VC_DIM_INPUT + 1}). "
             f"XOR square: {xor}/16 labellings realised (the two XOR labellings fail); 3 collinear points: "
             f"{collinear}/8 (+-+ and -+- fail), so general position matters. "
             f"Claims: {claims}. Shattering counts of trained ReLU networks (theorem 11.6) are not measured.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes, extra={
        "claims": claims, "vc_dimension": vc, "xor_labelings": xor, "collinear_labelings": collinear})


# ----------------------------------------------------------------------------------------
# 2. Rademacher complexity of a norm-bounded linear class (exercise 11.2, eq. 11.17)

RAD_M = (10, 30, 100, 300, 1000)
RAD_B = (1.0, 5.0)
RAD_DIM = 10


def rademacher_table(n_draws: int, seed: int = 0) -> pd.DataFrame:
    """MC estimate (eq. 11.5, closed-form supremum) vs the bound of eq. 11.17, per (B, m)."""
    rng = np.random.default_rng(seed)
    X_all = rng.standard_normal((max(RAD_M), RAD_DIM))
    rows = []
    for B in RAD_B:
        for m in RAD_M:
            X = X_all[:m]  # nested samples: the same data for both B
            draws = rademacher_draws(X, B, n_draws, seed=seed + m)
            mc = float(draws.mean())
            bound = rademacher_bound(X, B)
            rows.append({
                "B": B, "m": m, "rademacher_mc": mc, "mc_se": float(draws.std(ddof=1) / math.sqrt(n_draws)),
                "exact": exact_rademacher(X, B) if m <= 10 else math.nan,
                "bound_11_17": bound, "bound_over_mc": bound / mc,
                "B_sqrt_d_over_m": B * math.sqrt(RAD_DIM / m),
            })
    return pd.DataFrame(rows)


@EXPERIMENTS.register("rademacher", help="Monte-Carlo Rademacher complexity of a norm-bounded linear class vs eq. 11.17 (course ex. 11.2)")
def rademacher(out: Path, quick: bool) -> ExperimentResult:
    n_draws = 500 if quick else 4000
    table = rademacher_table(n_draws)
    slopes = {}
    for B, g in table.groupby("B"):
        slopes[float(B)] = -fit_power_law(g["m"].to_numpy(float), g["rademacher_mc"].to_numpy(float))[0]
    exact_rows = table.dropna(subset=["exact"])
    exact_gap = float(((exact_rows["rademacher_mc"] - exact_rows["exact"]).abs() / exact_rows["mc_se"]).max())
    ratio = table["bound_over_mc"]
    claims = {
        "bound_holds": verdict(bool((table["rademacher_mc"] <= table["bound_11_17"]).all())),
        "bound_within_factor_2": verdict(bool(((ratio >= 1) & (ratio <= 2)).all())),
        "slope_minus_half": verdict(all(abs(s + 0.5) < 0.1 for s in slopes.values())),
        "mc_matches_exact": verdict(exact_gap < 4),
    }

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for B, g in table.groupby("B"):
        ax.errorbar(g["m"], g["rademacher_mc"], yerr=2 * g["mc_se"], fmt="o-", label=f"MC, B={B:g}")
        ax.plot(g["m"], g["bound_11_17"], "k--", lw=0.9)
    ax.plot([], [], "k--", label="bound eq. 11.17")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("m (sample size)")
    ax.set_ylabel("empirical Rademacher complexity")
    ax.set_title(f"{{x → w·x : ‖w‖ ≤ B}}, Gaussian data in R^{RAD_DIM}")
    ax.legend(fontsize=8)
    fig_path = save_figure(fig, out / "rademacher.png")

    notes = (f"Log-log slope vs m: {', '.join(f'B={b:g}: {s:.3f}' for b, s in slopes.items())} (theory −1/2). "
             f"bound / MC in [{ratio.min():.3f}, {ratio.max():.3f}]: eq. 11.17 is tight here because "
             f"‖Σσ_i x_i‖² concentrates around Σ‖x_i‖² in d = {RAD_DIM} (Jensen's gap is small). "
             f"MC vs exact enumeration (m = 10): max gap {exact_gap:.2f} MC standard errors. Claims: {claims}.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes, extra={
        "claims": claims, "slopes": slopes, "bound_over_mc_min": float(ratio.min()),
        "bound_over_mc_max": float(ratio.max()), "mc_vs_exact_in_se": exact_gap})


# ----------------------------------------------------------------------------------------
# 3. Implicit bias of gradient descent (exercise 11.5, theorem 11.10) and the min-norm peak


def min_norm_risk(n: int, ps: list[int], p_total: int, reps: int, sigma: float = 0.5,
                  n_test: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Test MSE of the min-norm least-squares fit ``X_p⁺ y`` on the first ``p`` of ``p_total``
    isotropic Gaussian features, ``y = x·β + σε`` with ``‖β‖ = 1`` spread over all features
    (misspecified for p < p_total). Median and mean over ``reps`` training sets."""
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(p_total)
    beta /= np.linalg.norm(beta)
    Xt = rng.standard_normal((n_test, p_total))
    yt = Xt @ beta + sigma * rng.standard_normal(n_test)
    risks = np.empty((reps, len(ps)))
    for r in range(reps):
        X = rng.standard_normal((n, p_total))
        y = X @ beta + sigma * rng.standard_normal(n)
        for j, p in enumerate(ps):
            w = np.linalg.pinv(X[:, :p]) @ y  # min-norm interpolator once p ≥ n (eq. 11.8)
            risks[r, j] = np.mean((Xt[:, :p] @ w - yt) ** 2)
    return pd.DataFrame({"p": ps, "p_over_n": np.array(ps) / n, "test_mse_median": np.median(risks, axis=0),
                         "test_mse_mean": risks.mean(axis=0)})


@EXPERIMENTS.register("implicit-bias", help="GD on over-parametrised least squares converges to X+y; min-norm risk peak at p = n (course ex. 11.5, thm 11.10)")
def implicit_bias(out: Path, quick: bool) -> ExperimentResult:
    n, p = 20, 100
    reps = 8 if quick else 40
    n_dd = 40
    ps = [5, 10, 20, 30, 35, 38, 40, 42, 45, 50, 60, 80, 120, 160, 200]
    with num_threads(1):
        table = implicit_bias_table(n, p, steps=2000)
        risk = min_norm_risk(n_dd, ps, p_total=max(ps), reps=reps)
    risk.to_csv(out / "min_norm_risk.csv", index=False)
    z, r = table.iloc[0], table.iloc[1]
    peak_p = int(risk.loc[risk["test_mse_median"].idxmax(), "p"])
    at_peak = float(risk["test_mse_median"].max())
    claims = {
        "gd_from_0_reaches_pinv_y": verdict(z["rel_err_vs_pinv"] < 1e-6),
        "gd_from_0_stays_in_row_space": verdict(z["null_component_norm"] < 1e-10),
        "gd_from_w0_reaches_pinv_y_plus_null_w0": verdict(r["rel_err_vs_pinv_plus_null_w0"] < 1e-6),
        "gd_from_w0_is_not_min_norm": verdict(r["rel_err_vs_pinv"] * r["norm_pinv"] > 1.0),
        "risk_peak_at_p_eq_n": verdict(abs(peak_p - n_dd) <= 0.1 * n_dd),
        "risk_descends_again": verdict(float(risk["test_mse_median"].iloc[-1]) < at_peak / 5),
    }

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.semilogy(risk["p_over_n"], risk["test_mse_median"], "o-", label="median over data sets")
    ax.semilogy(risk["p_over_n"], risk["test_mse_mean"], "s:", alpha=0.6, label="mean")
    ax.axvline(1.0, color="gray", ls="--", lw=0.8)
    ax.set_xlabel(f"p / n (n = {n_dd})")
    ax.set_ylabel("test MSE of the min-norm fit X⁺y")
    ax.set_title("minimum-norm least squares: peak at p = n")
    ax.legend(fontsize=8)
    fig_path = save_figure(fig, out / "min_norm_risk.png")

    d0 = float(z["rel_err_vs_pinv"] * z["norm_pinv"])                     # ‖w − X⁺y‖ from w0 = 0
    d_rand = float(r["rel_err_vs_pinv_plus_null_w0"] * (r["norm_pinv"] ** 2 + r["null_component_of_w0"] ** 2) ** 0.5)
    notes = (f"GD (lr = 1/λ_max, 2000 steps, float64), n = {n}, p = {p}: from 0, ‖w − X⁺y‖ = "
             f"{d0:.2e}, null-space component {z['null_component_norm']:.2e}; from w0 ~ N(0, I), "
             f"‖w − (X⁺y + P_null w0)‖ = {d_rand:.2e} while ‖w − X⁺y‖ = "
             f"{r['rel_err_vs_pinv'] * r['norm_pinv']:.2f} (= ‖P_null w0‖ = {r['null_component_of_w0']:.2f}). "
             f"Min-norm risk vs p (n = {n_dd}, {reps} data sets, table min_norm_risk.csv): peak at p = {peak_p} "
             f"(median MSE {at_peak:.3g}), {float(risk['test_mse_median'].iloc[-1]):.3g} at p = {ps[-1]}. "
             f"Claims: {claims}.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes, extra={
        "claims": claims, "peak_p": peak_p, "dist_to_pinv_y": d0,
        "null_component": float(z["null_component_norm"]), "dist_random_init": d_rand})


# ----------------------------------------------------------------------------------------
# 4. Scaling-law fit and extrapolation (exercise 11.7, eq. 11.16; eq. 7.16)

#: exercise 11.7: test losses of language models of N parameters
EX_11_7_N = (1e6, 1e7, 1e8, 1e9)
EX_11_7_L = (3.2, 2.8, 2.5, 2.3)
KAPLAN_ALPHA_N = 0.076  # eq. 7.16
N_EXTRAPOLATE = 1e11


@EXPERIMENTS.register("scaling-law-fit", help="power-law fit of the course's four (N, loss) points and extrapolation to 1e11 (course ex. 11.7)")
def scaling_law_fit(out: Path, quick: bool) -> ExperimentResult:
    N, L = np.array(EX_11_7_N), np.array(EX_11_7_L)
    alpha, c, se_alpha, se_c = fit_power_law(N, L)
    fit, lo, hi = power_law_band(N, L, np.array([*N, N_EXTRAPOLATE]))
    local = [math.nan] + [float(-np.log(L[i] / L[i - 1]) / np.log(N[i] / N[i - 1])) for i in range(1, len(N))]
    table = pd.DataFrame({"N": [*N, N_EXTRAPOLATE], "loss": [*L, math.nan], "fit": fit, "lo_2se": lo,
                          "hi_2se": hi, "local_alpha": [*local, math.nan]})
    pred, pred_lo, pred_hi = float(fit[-1]), float(lo[-1]), float(hi[-1])
    claims = {"alpha_matches_eq_7_16": verdict(abs(alpha - KAPLAN_ALPHA_N) <= 2 * se_alpha)}

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    grid = np.logspace(6, 11, 50)
    gf, glo, ghi = power_law_band(N, L, grid)
    ax.loglog(N, L, "ko", label="exercise 11.7")
    ax.loglog(grid, gf, "-", label=f"fit α = {alpha:.4f} ± {se_alpha:.4f}")
    ax.fill_between(grid, glo, ghi, alpha=0.25, label="±2 se of the fitted line")
    ax.errorbar([N_EXTRAPOLATE], [pred], yerr=[[pred - pred_lo], [pred_hi - pred]], fmt="r*", ms=10,
                label=f"N = 1e11: {pred:.2f}")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("test loss L")
    ax.set_title("log L vs log N (exercise 11.7)")
    ax.legend(fontsize=8)
    fig_path = save_figure(fig, out / "scaling_law_fit.png")

    notes = (f"α_N = {alpha:.4f} ± {se_alpha:.4f} (1 se, 2 degrees of freedom), c = {c:.3f} ± {se_c:.3f} "
             f"(L = c N^-α; N_c = c^(1/α) = {c ** (1 / alpha):.3g}); eq. 7.16 quotes α_N ≈ {KAPLAN_ALPHA_N}. "
             f"Extrapolation to N = 1e11: L ≈ {pred:.3f}, ±2 se band [{pred_lo:.3f}, {pred_hi:.3f}]. "
             "Limits: (1) 4 points, 2 residual degrees of freedom: the 95 % t quantile is 4.30, not 2, so the "
             "band is too narrow as a confidence interval; (2) the band is for the fitted line and assumes the "
             f"power law holds two decades beyond the data, yet the local exponent falls ({', '.join(f'{a:.3f}' for a in local[1:])} "
             "per decade): the curve bends, as eq. 11.16's irreducible term L∞ predicts, so a pure power law "
             "over-estimates the gain (L cannot go below L∞, the entropy of the text); (3) the law is for "
             "compute-optimal models with enough data (the D term of eq. 11.16 is ignored; at fixed D the loss "
             f"saturates); (4) errors on log L are assumed independent and equal. Claims: {claims}.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes, extra={
        "claims": claims, "alpha": alpha, "se_alpha": se_alpha, "c": c, "se_c": se_c,
        "extrapolated_loss": pred, "band": [pred_lo, pred_hi]})
