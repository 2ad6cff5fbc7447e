"""Numerical versions of four exercises of chapter 11 (learning theory).

* ``vc-shattering`` — exercise 11.1, proposition 11.5 (course §11.2): linear classifiers
  ``sign(w·x + b)`` in R² shatter every 3 points in general position and no 4 points. On
  random Gaussian point sets of n = 1..5 points every one of the 2^n labellings is tested by a
  linear program; the count realised is compared with Cover's count and with the
  Sauer-Shelah bound (eq. 11.4). The VC dimension read off must be 3 = d + 1. Then the same
  count for one-hidden-layer ReLU nets ``sign(Σ_{j≤k} a_j ReLU(w_jᵀx + b_j) + c)`` on R² against
  their parameter count W = 4k + 1 (theorem 11.6, eq. 11.3: VCdim = O(W L log W)): for
  n = 3, 4, … random Gaussian n-point sets, every labelling is trained to zero training error
  (batched full-batch Adam on the hinge loss, float64, a few random restarts; a fit is a
  certificate, a failure proves nothing), and the largest n for which some set is shattered is
  an empirical lower bound of the VC dimension. Claims: width 1 gives 3 (the class is a
  half-plane or a constant, so exactly 3); the estimate does not decrease with k and exceeds 3;
  it lies between W/4 (the "order W" lower bound of one-hidden-layer nets) and W log₂ W (the
  order of eq. 11.3 with constant 1; the lower bound cannot test an upper bound, only respect it).
  The point sets are the best spread (largest minimum distance) of 8 Gaussian draws each.
  Measured (quick): 3, 5, 6 for k = 1, 2, 3; (full) 3, 6, 7, 8, 9, 10 for k = 1..6, i.e.
  0.67 W down to 0.40 W. Tables relu_shattering.csv (per width and n) and relu_vc.csv, figure relu_vc.png.
  Budgets: 10 point sets per n for the LP, ReLU widths 1-3 with 2 sets per n and restarts
  (1, 4) (quick, about 15 s of CPU on one thread); 200 LP sets, widths 1-6 with 4 sets and
  restarts (1, 4, 8) (full, about 100 s of CPU).
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

All four are pure numerics (NumPy / SciPy linear programs / float64 torch loops) on 1 thread.
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
    relu_net_num_params,
    relu_shattering,
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


def spread_point_sets(rng: np.random.Generator, n_sets: int, n: int, draws: int = 8) -> np.ndarray:
    """``n_sets`` Gaussian n-point sets in R², the best spread (largest minimum pairwise distance)
    of ``draws × n_sets`` draws: a near-coincident pair needs a sliver of a margin to separate,
    which training finds slowly, and the VC dimension only asks that *some* set be shattered."""
    cand = rng.standard_normal((draws * n_sets, n, VC_DIM_INPUT))
    dist = np.linalg.norm(cand[:, :, None, :] - cand[:, None, :, :], axis=-1)
    dist[:, np.arange(n), np.arange(n)] = np.inf
    return cand[np.argsort(-dist.min(axis=(1, 2)))[:n_sets]]


def relu_vc_search(widths: list[int], n_sets: int, restarts: tuple[int, ...], steps: int = 300,
                   n_start: int = 3, n_stop: int = 16, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Empirical lower bound of the VC dimension (definition 11.4) of one-hidden-layer ReLU nets
    ``sign(Σ_{j≤k} a_j ReLU(w_jᵀx + b_j) + c)`` on R², per width k.

    For n = n_start, n_start + 1, …: ``n_sets`` random Gaussian n-point sets
    (:func:`spread_point_sets`), every labelling
    trained (:func:`~profond.metrics.capacity.relu_shattering`: zero training error from a few
    restarts certifies a labelling); a width is searched further while some set of the current
    size is shattered. Returns the per-(width, n) table and the per-width summary: the largest
    n shattered, the parameter count W = 4k + 1 and W log₂ W, the order of eq. 11.3's upper
    bound O(W L log W) at L = 2 layers, constant unknown (course §11.2, theorem 11.6)."""
    rng = np.random.default_rng(seed)
    alive, rows, best = list(widths), [], dict.fromkeys(widths, 0)
    for n in range(n_start, n_stop + 1):
        if not alive:
            break
        frac = relu_shattering(spread_point_sets(rng, n_sets, n), alive, restarts=restarts,
                               steps=steps, seed=seed + n)
        for k, f in zip(alive, frac, strict=True):
            rows.append({"width": k, "n_params": relu_net_num_params(k, VC_DIM_INPUT), "n_points": n,
                         "n_sets": n_sets, "frac_sets_shattered": float(np.mean(f == 1.0)),
                         "labelings_frac_min": float(f.min()), "labelings_frac_mean": float(f.mean())})
            if (f == 1.0).any():
                best[k] = n
        alive = [k for k, f in zip(alive, frac, strict=True) if (f == 1.0).any()]
    summary = pd.DataFrame([{
        "width": k, "n_params": (w := relu_net_num_params(k, VC_DIM_INPUT)), "vc_lower_bound": best[k],
        "vc_over_W": best[k] / w, "W_log2_W": w * math.log2(w)} for k in widths])
    return pd.DataFrame(rows), summary


@EXPERIMENTS.register("vc-shattering", help="VC dimension of linear classifiers in R^2 by LP shattering tests; trained ReLU nets vs parameter count (course ex. 11.1, prop. 11.5, thm 11.6)")
def vc_shattering(out: Path, quick: bool) -> ExperimentResult:
    n_sets = 10 if quick else 200  # quick: 10 sets (was 25) to leave time for the ReLU nets
    table = vc_table(n_sets)
    # ReLU networks (theorem 11.6): widths 1..3 (quick) or 1..6 (full) on R²
    relu_widths, relu_sets, restarts = ([1, 2, 3], 2, (1, 4)) if quick else ([1, 2, 3, 4, 5, 6], 4, (1, 4, 8))
    with num_threads(1):
        relu_rows, relu = relu_vc_search(relu_widths, relu_sets, restarts)
    relu_rows.to_csv(out / "relu_shattering.csv", index=False)
    relu.to_csv(out / "relu_vc.csv", index=False)
    relu_vc = dict(zip(relu["width"], relu["vc_lower_bound"], strict=True))
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
        # width 1: sign(a ReLU(wᵀx + b) + c) is a half-plane or a constant, so its VC dimension is 3
        "relu_width_1_vc_is_3": verdict(relu_vc[1] == VC_DIM_INPUT + 1),
        "relu_vc_grows_with_width": verdict(bool(np.all(np.diff(relu["vc_lower_bound"]) >= 0))
                                            and relu_vc[max(relu_vc)] > VC_DIM_INPUT + 1),
        # the estimate is a lower bound: it may sit anywhere below the true VC dimension, which
        # theorem 11.6 bounds by O(W L log W) (eq. 11.3); "of order W": at least W/4 here
        "relu_vc_between_W_over_4_and_W_log2_W": verdict(bool(((relu["vc_lower_bound"] >= relu["n_params"] / 4)
                                                               & (relu["vc_lower_bound"] <= relu["W_log2_W"])).all())),
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

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    W = relu["n_params"].to_numpy(float)
    ax.plot(W, relu["vc_lower_bound"], "o-", label="largest n shattered (trained nets, lower bound)")
    ax.plot(W, W, "k--", lw=0.9, label="W (parameter count)")
    ax.plot(W, relu["W_log2_W"], "k:", lw=0.9, label="W log₂ W (order of eq. 11.3)")
    ax.axhline(VC_DIM_INPUT + 1, color="gray", lw=0.8, label="linear classifiers: 3")
    for k, w, v in zip(relu["width"], W, relu["vc_lower_bound"], strict=True):
        ax.annotate(f"k={k}", (w, v), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_yscale("log")
    ax.set_xlabel("W = 4k + 1 (one hidden layer of k ReLU units, input R²)")
    ax.set_ylabel("VC dimension")
    ax.set_title("ReLU networks: empirical VC lower bound vs W (theorem 11.6)")
    ax.legend(fontsize=7)
    relu_fig = save_figure(fig, out / "relu_vc.png")

    notes = (f"VC dimension read off: {vc} (largest n with a shattered set; d + 1 = {VC_DIM_INPUT + 1}). "
             f"XOR square: {xor}/16 labellings realised (the two XOR labellings fail); 3 collinear points: "
             f"{collinear}/8 (+-+ and -+- fail), so general position matters. "
             f"ReLU nets with one hidden layer of k units on R² (W = 4k + 1; {relu_sets} random Gaussian sets "
             f"per size, every labelling trained to zero error, restarts {restarts}; tables relu_shattering.csv, "
             f"relu_vc.csv): largest n shattered "
             f"{', '.join(f'k={k} (W={w}): {v}' for k, w, v in zip(relu['width'], relu['n_params'], relu['vc_lower_bound'], strict=True))}; "
             f"VC/W from {relu['vc_over_W'].max():.2f} down to {relu['vc_over_W'].min():.2f}, always below "
             "W log₂ W. These are lower bounds (a failed fit proves nothing; better-placed points or more "
             f"restarts can only raise them), so the upper bound of eq. 11.3 cannot be tested, only respected. "
             f"Claims: {claims}.")
    return ExperimentResult(table=table, figures=[fig_path, relu_fig], notes=notes, extra={
        "claims": claims, "vc_dimension": vc, "xor_labelings": xor, "collinear_labelings": collinear,
        "relu_vc_lower_bound": {int(k): int(v) for k, v in relu_vc.items()},
        "relu_n_params": {int(k): int(w) for k, w in zip(relu["width"], relu["n_params"], strict=True)}})


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
