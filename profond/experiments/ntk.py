"""The neural tangent kernel of a wide two-layer ReLU network (issue 19): ``ntk-width`` and
``ntk-lazy``.

Course §11.5, theorem 11.13 (Jacot et al., 2018): in the NTK parametrisation, as the width
n → ∞ the kernel ``Θ(x, x′) = ⟨∂f(x)/∂θ, ∂f(x′)/∂θ⟩`` (definition 11.12, eq. 11.9) converges
to a deterministic kernel Θ*. Exercise 11.3 computes it for ``f(x) = (1/√n) Σ_j a_j ReLU(w_jᵀx)``
with ``a_j, w_j ~ N(0, 1)`` and ``a`` fixed: ``Θ* = xᵀx′ (π − θ)/(2π)`` as a function of the
angle θ between x and x′ (item 3; :func:`~profond.metrics.ntk.arccos_ntk`, ``wrt="w"``).
With both layers trained the limit adds the order-1 arc-cosine kernel
``‖x‖‖x′‖ (sin θ + (π − θ) cos θ)/(2π)`` (``wrt="both"``).

The empirical kernel is an average over the n units of i.i.d. terms, so by the central limit
theorem its fluctuation around Θ* is O(1/√n): the claim judged here is that the error
decays like ``n^{-1/2}``. For unit inputs on a grid of angles θ_i ∈ [0, π] (in the plane), the
empirical Gram matrix (:func:`~profond.metrics.ntk.empirical_ntk`, Jacobians by
``torch.func``) of the exercise's net is compared with Θ* at widths n ∈ {16, 64, 256, 1024,
4096}, over several seeds. Table, one row per width: the mean over seeds of the relative
Frobenius error ``‖Θ_n − Θ*‖_F / ‖Θ*‖_F`` on the grid (a relative error per entry is
meaningless here: Θ* vanishes at θ = π/2 and θ = π), its standard error, and the same for the
net with both layers trained. Claims judged in the notes: the log-log slope of the mean error
against n is −1/2 within ±0.15 (exercise 11.3 with a fixed, and with both layers trained); from
n = 16 to n = 4096 the error shrinks more than 8-fold (theory: 16-fold), i.e. Θ_n → Θ*.

Figures: ``ntk_vs_angle.png`` (Θ(x₀, x_θ) against θ: the analytic curve and one seed's
empirical dots per width, for a fixed and for both layers trained) and
``ntk_error_vs_width.png`` (error against n on log-log, the fitted slope and an n^{-1/2}
guide).

Budgets: ``--quick`` (CI) uses 17 angles and 8 seeds per width (a few seconds on one
thread); the full mode 33 angles and 32 seeds (under ten seconds).

``ntk-lazy`` — lazy training (theorem 11.13, second half: Θ "reste constant au cours de
l'entraînement"; eqs. 11.10-11.12, remark 11.14). The same net with both layers trained is
fitted by full-batch gradient descent (float64, step η = 1, width-independent as the NTK
parametrisation allows) on a tiny 1-D regression task: N = 8 unit inputs ``x = (cos φ, sin φ)``,
φ ∈ [0, π], target ``y = sin 2φ``, loss ``Σ (f − y)²/(2N)``. Table, one row per width (mean over
seeds): final loss relative to the initial one, ``‖Θ_T − Θ_0‖_F/‖Θ_0‖_F`` (Gram matrix on the
training inputs) and ``‖θ_T − θ_0‖/‖θ_0‖``. Each weight moves by O(1/√n) while ‖θ_0‖ = O(√n),
so the relative weight change decays like n^{-1/2}. The course states only that Θ stays
constant in the limit, not at which rate it stops moving; the kernel's change is measured to
fall faster than the weights' (log-log slope ≈ −0.76 to −0.82 over all widths in these runs,
≈ −0.6 to −0.66 from n = 64 on, where n = 16 is far from lazy). Claims:
every width fits the data (final loss below 1 % of the initial one); the log-log slope of the
weight change is −1/2 within ±0.2; the kernel change vanishes with the width at least as fast
(slope ≤ −0.4) and is below 2 % at n = 4096.

The trained wide net against NTK kernel regression on the same data (§11.5.2): the net
linearised at θ0 (eq. 11.10) follows eq. 11.11 in function space, and its limit t → ∞ in
eq. 11.12 carried to any input through Θ(x, X) is ``f_lin(x) = f0(x) + Θ0(x, X) Θ0(X, X)^{-1}
(y − f0(X))`` with the empirical NTK at initialisation
(:func:`~profond.metrics.ntk.linearised_predictions`). On 32 test inputs at angles between the
training ones, the relative distance ``‖f_T − f_lin‖/‖f_lin‖`` between the trained net and this
predictor is tabulated per width (and, as a check that training is long enough for t → ∞ to
stand for it, the distance to the linearised model after the same number of GD steps). Claim:
it shrinks with the width (log-log slope ≤ −0.25) and is below 5 % at n = 4096; measured 0.17
at n = 16 down to 0.021 (quick, slope −0.40, 3 seeds) or 0.013 (full, slope −0.46, 8 seeds) at
n = 4096, close to the n^{-1/2} of the weights (the course gives no rate). Figures ``ntk_lazy.png`` (the three relative changes against n, with fitted slopes)
and ``ntk_lazy_predictions.png`` (trained net and kernel regression against the input angle at
n = 16 and n = 4096). Budgets: ``--quick`` 3 seeds and 400 steps (about 16 s of CPU on one
thread); full 8 seeds and 1000 steps (about 46 s of CPU).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..metrics.ntk import arccos_ntk, empirical_ntk, exercise_net, linearised_predictions  # noqa: E402
from ..metrics.scaling import fit_power_law  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, verdict  # noqa: E402

WIDTHS = (16, 64, 256, 1024, 4096)
#: the slope of log(error) vs log(n) must be −1/2 within this
SLOPE_TOL = 0.15
#: the error at n = 4096 must be below this fraction of the error at n = 16 (theory: 1/16)
SHRINK_TOL = 1 / 8


def unit_circle(n_angles: int) -> tuple[np.ndarray, torch.Tensor]:
    """Angles θ_i evenly spaced in [0, π] and the unit vectors ``(cos θ_i, sin θ_i)``."""
    theta = np.linspace(0.0, math.pi, n_angles)
    x = torch.tensor(np.stack([np.cos(theta), np.sin(theta)], axis=1), dtype=torch.float64)
    return theta, x


def relative_error(emp: torch.Tensor, ana: torch.Tensor) -> float:
    """``‖Θ_n − Θ*‖_F / ‖Θ*‖_F`` on the grid."""
    return float(torch.linalg.norm(emp - ana) / torch.linalg.norm(ana))


def fit_slope(widths: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of ``log err = s log n + c`` (the power-law fit of
    :func:`~profond.metrics.scaling.fit_power_law`: ``s = −α``, ``c = log c``)."""
    alpha, c, _, _ = fit_power_law(np.asarray(widths, float), np.asarray(errors, float))
    return -alpha, math.log(c)


def width_table(n_angles: int, n_seeds: int, widths: tuple[int, ...] = WIDTHS
                ) -> tuple[pd.DataFrame, dict[tuple[str, int], np.ndarray], np.ndarray]:
    """Per width, mean (and standard error) over seeds of the relative kernel error.

    ``variant`` "a_fixed" is exercise 11.3 (Θ over the w_j only, limit ``wrt="w"``); "both"
    trains a too (limit ``wrt="both"``). Also returns, per (variant, width), seed 0's first
    row Θ(x₀, x_θ) for the figure, and the angles.
    """
    theta, x = unit_circle(n_angles)
    limits = {"a_fixed": arccos_ntk(x, wrt="w"), "both": arccos_ntk(x, wrt="both")}
    rows, curves = [], {}
    for n in widths:
        row: dict[str, float] = {"width": n}
        for variant, ana in limits.items():
            errs = []
            for s in range(n_seeds):
                net = exercise_net(2, n, train_a=variant == "both", seed=1000 * n + s)
                emp = empirical_ntk(net, x)
                errs.append(relative_error(emp, ana))
                if s == 0:
                    curves[(variant, n)] = emp[0].numpy()
            e = np.asarray(errs)
            row[f"rel_err_{variant}"] = float(e.mean())
            row[f"se_{variant}"] = float(e.std(ddof=1) / math.sqrt(n_seeds))
            row[f"sqrt_n_x_err_{variant}"] = float(e.mean() * math.sqrt(n))
        row["n_seeds"] = n_seeds
        rows.append(row)
    return pd.DataFrame(rows), curves, theta


@EXPERIMENTS.register("ntk-width", help="empirical vs analytic NTK of a 2-layer ReLU net: error ~ n^-1/2 (course §11.5, ex. 11.3)")
def ntk_width(out: Path, quick: bool) -> ExperimentResult:
    n_angles, n_seeds = (17, 8) if quick else (33, 32)
    with num_threads(1):
        table, curves, theta = width_table(n_angles, n_seeds)
    widths = table["width"].to_numpy(dtype=float)
    slopes = {v: fit_slope(widths, table[f"rel_err_{v}"].to_numpy())[0] for v in ("a_fixed", "both")}
    intercepts = {v: fit_slope(widths, table[f"rel_err_{v}"].to_numpy())[1] for v in ("a_fixed", "both")}

    # figure 1: Θ(x₀, x_θ) against θ
    fine, xf = unit_circle(181)
    x0 = xf[:1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(WIDTHS)))
    for ax, (variant, wrt, title) in zip(axes, [("a_fixed", "w", "a fixed (exercise 11.3)"),
                                                ("both", "both", "a and w trained")], strict=True):
        ax.plot(fine, arccos_ntk(x0, xf, wrt=wrt)[0].numpy(), "k-", lw=2, label="Θ* (n → ∞)")
        for c, n in zip(colors, WIDTHS, strict=True):
            ax.plot(theta, curves[(variant, n)], "o", ms=4, color=c, label=f"n = {n}")
        ax.set_xlabel("angle θ between x and x′ (unit vectors)")
        ax.set_ylabel("Θ(x, x′)")
        ax.set_title(f"NTK vs angle, {title}")
        ax.legend(fontsize=7)
    fig_angle = save_figure(fig, out / "ntk_vs_angle.png")

    # figure 2: error against width
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for variant, marker, label in [("a_fixed", "o", "a fixed"), ("both", "s", "a and w trained")]:
        err = table[f"rel_err_{variant}"].to_numpy()
        bar = ax.errorbar(widths, err, yerr=2 * table[f"se_{variant}"].to_numpy(), fmt=marker, capsize=3,
                          label=f"{label}: slope {slopes[variant]:.3f}")
        ax.plot(widths, np.exp(intercepts[variant]) * widths ** slopes[variant], "--", lw=1,
                color=bar.lines[0].get_color())
    ax.plot(widths, table["rel_err_a_fixed"].iloc[0] * (widths / widths[0]) ** -0.5, ":", color="gray",
            label="n^(-1/2)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel("‖Θ_n − Θ*‖_F / ‖Θ*‖_F (mean over seeds)")
    ax.set_title(f"theorem 11.13: Θ_n → Θ* ({n_seeds} seeds, {n_angles} angles)")
    ax.legend(fontsize=8)
    fig_err = save_figure(fig, out / "ntk_error_vs_width.png")

    wide = float(table["rel_err_a_fixed"].iloc[-1])
    shrink = wide / float(table["rel_err_a_fixed"].iloc[0])
    claims = {
        "ntk_error_slope_minus_half": verdict(abs(slopes["a_fixed"] + 0.5) <= SLOPE_TOL),
        "ntk_error_slope_minus_half_both_layers": verdict(abs(slopes["both"] + 0.5) <= SLOPE_TOL),
        "ntk_converges_to_analytic": verdict(shrink < SHRINK_TOL),
    }
    notes = (
        f"Exercise 11.3 (a fixed): fitted slope of log(error) vs log(n) {slopes['a_fixed']:.3f} "
        f"(both layers trained: {slopes['both']:.3f}); theory −1/2 (central limit theorem over the n "
        f"units). Claim 'slope = −1/2 ± {SLOPE_TOL}': {claims['ntk_error_slope_minus_half']} (a fixed), "
        f"{claims['ntk_error_slope_minus_half_both_layers']} (both layers). "
        f"Relative error at n = {WIDTHS[-1]}: {wide:.4f}, {shrink:.3f} times that at n = {WIDTHS[0]}; "
        f"claim 'shrinks more than {1 / SHRINK_TOL:.0f}-fold (theory 16)': {claims['ntk_converges_to_analytic']}. Lazy training (remark 11.14) is not measured here."
    )
    return ExperimentResult(table=table, figures=[fig_angle, fig_err], notes=notes,
                            extra={"claims": claims, "slope_a_fixed": slopes["a_fixed"],
                                   "slope_both": slopes["both"], "rel_err_at_4096": wide,
                                   "error_ratio_4096_vs_16": shrink})


# ----------------------------------------------------------------------------------------
# 2. lazy training (theorem 11.13, eqs. 11.10-11.12, remark 11.14)

LAZY_N = 8
LAZY_LR = 1.0
LAZY_SLOPE_TOL = 0.2
#: the kernel change must decay at least like n^KERNEL_SLOPE_MAX and be below KERNEL_WIDE_TOL at 4096
KERNEL_SLOPE_MAX = -0.4
KERNEL_WIDE_TOL = 0.02
#: a width "fits" when its final loss is below this fraction of its initial loss
FIT_TOL = 0.01
#: test inputs for the trained net vs NTK kernel regression (angles between the training ones)
LAZY_N_TEST = 32
#: trained net vs kernel regression: log-log slope at most PRED_SLOPE_MAX, below PRED_WIDE_TOL at 4096
PRED_SLOPE_MAX = -0.25
PRED_WIDE_TOL = 0.05


def lazy_task() -> tuple[torch.Tensor, torch.Tensor]:
    """N = 8 unit inputs ``(cos φ, sin φ)``, φ evenly spaced in [0, π], targets ``sin 2φ``."""
    phi, x = unit_circle(LAZY_N)
    return x, torch.tensor(np.sin(2 * phi), dtype=torch.float64)


def lazy_test_inputs() -> torch.Tensor:
    """LAZY_N_TEST unit inputs at the angles ``(i + 1/2) π / LAZY_N_TEST``, none a training input."""
    phi = (np.arange(LAZY_N_TEST) + 0.5) * math.pi / LAZY_N_TEST
    return torch.tensor(np.stack([np.cos(phi), np.sin(phi)], axis=1), dtype=torch.float64)


def train_lazy(width: int, seed: int, steps: int, lr: float = LAZY_LR, curves: bool = False
               ) -> dict[str, float]:
    """Full-batch GD on ``Σ (f − y)²/(2N)`` for the exercise-11.3 net with a and w trained.

    Returns the initial / final loss, the relative changes of the NTK Gram matrix on the
    training inputs and of the parameter vector, and the relative distance, on the test inputs,
    between the trained net and the net linearised at initialisation (eq. 11.10):
    ``‖f_T − f_lin‖/‖f_lin‖`` for NTK kernel regression (eq. 11.12 at t → ∞) and for the
    linearised model after the same ``steps`` of GD (:func:`~profond.metrics.ntk.ntk_predictor`).
    ``curves=True`` adds the test predictions (arrays ``f_T``, ``f_kernel_regression``).
    """
    x, y = lazy_task()
    xt = lazy_test_inputs()
    net = exercise_net(2, width, train_a=True, seed=seed)
    params = list(net.parameters())
    theta0 = torch.cat([p.detach().reshape(-1) for p in params])
    k0 = empirical_ntk(net, x)
    k_test = empirical_ntk(net, xt, x)
    with torch.no_grad():
        f0, f0_test = net(x), net(xt)
    # course §11.5.2, eqs. 11.10-11.12 at t → ∞: f_lin = f0 + Θ(x, X) Θ0⁻¹ (y − f0(X))
    f_kr = linearised_predictions(k0, k_test, f0, f0_test, y)
    f_lin_t = linearised_predictions(k0, k_test, f0, f0_test, y, steps=steps, lr=lr)  # same T GD steps

    def loss() -> torch.Tensor:
        return ((net(x) - y) ** 2).sum() / (2 * LAZY_N)

    with torch.no_grad():
        l0 = float(loss())
    for _ in range(steps):
        grads = torch.autograd.grad(loss(), params)
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p -= lr * g  # eq. 11.11 in discrete time: f moves by −η Θ (f − y)/N
    theta_t = torch.cat([p.detach().reshape(-1) for p in params])
    kt = empirical_ntk(net, x)
    with torch.no_grad():
        lt = float(loss())
        f_t = net(xt)
    res = {"loss_0": l0, "loss_T": lt,
            "pred_vs_kernel_regression": float(torch.linalg.norm(f_t - f_kr) / torch.linalg.norm(f_kr)),
            "pred_vs_linearised_T": float(torch.linalg.norm(f_t - f_lin_t) / torch.linalg.norm(f_lin_t)),
            "kernel_change": float(torch.linalg.norm(kt - k0) / torch.linalg.norm(k0)),
            "weight_change": float(torch.linalg.norm(theta_t - theta0) / torch.linalg.norm(theta0))}
    if curves:
        res |= {"f_T": f_t.numpy(), "f_kernel_regression": f_kr.numpy()}
    return res


@EXPERIMENTS.register("ntk-lazy", help="lazy training: NTK and weight changes during GD shrink with width; trained net vs NTK kernel regression (course §11.5, remark 11.14)")
def ntk_lazy(out: Path, quick: bool) -> ExperimentResult:
    n_seeds, steps = (3, 400) if quick else (8, 1000)
    rows, pred_curves = [], {}
    with num_threads(1):
        for n in WIDTHS:
            first = train_lazy(n, 1000 * n, steps, curves=True)
            pred_curves[n] = (first.pop("f_T"), first.pop("f_kernel_regression"))
            runs = pd.DataFrame([first] + [train_lazy(n, 1000 * n + s, steps) for s in range(1, n_seeds)])
            rows.append({"width": n, "loss_ratio": float((runs["loss_T"] / runs["loss_0"]).mean()),
                         "max_loss_ratio": float((runs["loss_T"] / runs["loss_0"]).max()),
                         "kernel_change": float(runs["kernel_change"].mean()),
                         "weight_change": float(runs["weight_change"].mean()),
                         "pred_vs_kernel_regression": float(runs["pred_vs_kernel_regression"].mean()),
                         "pred_vs_linearised_T": float(runs["pred_vs_linearised_T"].mean()),
                         "n_seeds": n_seeds, "steps": steps})
    table = pd.DataFrame(rows)
    widths = table["width"].to_numpy(dtype=float)
    fits = {c: fit_slope(widths, table[c].to_numpy())
            for c in ("kernel_change", "weight_change", "pred_vs_kernel_regression")}

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for (col, label), marker in zip([("kernel_change", "‖Θ_T − Θ_0‖_F / ‖Θ_0‖_F"),
                                     ("weight_change", "‖θ_T − θ_0‖ / ‖θ_0‖"),
                                     ("pred_vs_kernel_regression", "‖f_T − f_lin‖ / ‖f_lin‖ (test)")],
                                    ("o", "s", "^"), strict=True):
        s, c = fits[col]
        (dots,) = ax.plot(widths, table[col], marker, label=f"{label}: slope {s:.3f}")
        ax.plot(widths, np.exp(c) * widths**s, "--", lw=1, color=dots.get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width n")
    ax.set_ylabel("relative change after training")
    ax.set_title(f"lazy training: GD, {steps} steps, η = {LAZY_LR}, {n_seeds} seeds")
    ax.legend(fontsize=8)
    fig_path = save_figure(fig, out / "ntk_lazy.png")

    fig, ax = plt.subplots(figsize=(5.5, 4))
    phi_test = (np.arange(LAZY_N_TEST) + 0.5) * math.pi / LAZY_N_TEST
    phi_train, y_train = unit_circle(LAZY_N)[0], np.sin(2 * unit_circle(LAZY_N)[0])
    for n, color in ((WIDTHS[0], "tab:red"), (WIDTHS[-1], "tab:blue")):
        f_t, f_kr = pred_curves[n]
        ax.plot(phi_test, f_t, "o", ms=4, color=color, label=f"trained net, n = {n}")
        ax.plot(phi_test, f_kr, "-", color=color, lw=1, label=f"NTK kernel regression, n = {n}")
    ax.plot(phi_train, y_train, "k*", ms=9, label="training data y = sin 2φ")
    ax.set_xlabel("input angle φ (x = (cos φ, sin φ))")
    ax.set_ylabel("prediction")
    ax.set_title("trained net vs f0 + Θ(x, X) Θ0⁻¹ (y − f0(X)) (seed 0)")
    ax.legend(fontsize=7)
    fig_pred = save_figure(fig, out / "ntk_lazy_predictions.png")

    worst = float(table["max_loss_ratio"].max())
    claims = {
        "every_width_fits": verdict(worst < FIT_TOL),
        "weight_change_slope_minus_half": verdict(abs(fits["weight_change"][0] + 0.5) <= LAZY_SLOPE_TOL),
        "kernel_change_vanishes": verdict(fits["kernel_change"][0] <= KERNEL_SLOPE_MAX
                                          and table["kernel_change"].iloc[-1] < KERNEL_WIDE_TOL),
        # course §11.5.2: in the lazy limit the trained net is its linearisation (eq. 11.10), whose
        # GD limit is NTK kernel regression (eq. 11.12 at t → ∞)
        "trained_net_approaches_kernel_regression": verdict(
            fits["pred_vs_kernel_regression"][0] <= PRED_SLOPE_MAX
            and table["pred_vs_kernel_regression"].iloc[-1] < PRED_WIDE_TOL),
    }
    notes = (
        f"Worst final/initial loss over widths and seeds: {worst:.2e}; claim '< {FIT_TOL}': "
        f"{claims['every_width_fits']}. Log-log slope of the weight change {fits['weight_change'][0]:.3f} "
        f"(theory −1/2, claim ±{LAZY_SLOPE_TOL}): {claims['weight_change_slope_minus_half']}. Slope of the "
        f"NTK change {fits['kernel_change'][0]:.3f}; at n = {WIDTHS[-1]} the kernel moved by "
        f"{table['kernel_change'].iloc[-1]:.2%} (claim: slope ≤ {KERNEL_SLOPE_MAX} and < {KERNEL_WIDE_TOL:.0%}, "
        f"the lazy regime of remark 11.14): {claims['kernel_change_vanishes']}. Trained net against NTK "
        f"kernel regression f0 + Θ(x, X) Θ0⁻¹ (y − f0(X)) (empirical NTK at initialisation, eqs. 11.10-11.12 "
        f"at t → ∞) on {LAZY_N_TEST} test inputs between the training angles: relative distance "
        f"{', '.join(f'{v:.3g}' for v in table['pred_vs_kernel_regression'])} at n = "
        f"{', '.join(str(n) for n in WIDTHS)}, log-log slope {fits['pred_vs_kernel_regression'][0]:.3f} "
        f"(claim: ≤ {PRED_SLOPE_MAX} and < {PRED_WIDE_TOL:.0%} at n = {WIDTHS[-1]}): "
        f"{claims['trained_net_approaches_kernel_regression']}; against the linearised model after the same "
        f"{steps} steps instead of t → ∞: {table['pred_vs_linearised_T'].iloc[-1]:.3g} at n = {WIDTHS[-1]} "
        "(the training is long enough for the limit to stand for it)."
    )
    return ExperimentResult(table=table, figures=[fig_path, fig_pred], notes=notes,
                            extra={"claims": claims, "slope_kernel_change": fits["kernel_change"][0],
                                   "slope_weight_change": fits["weight_change"][0],
                                   "slope_pred_vs_kernel_regression": fits["pred_vs_kernel_regression"][0],
                                   "worst_loss_ratio": worst})
