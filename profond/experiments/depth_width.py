"""Depth against width (issue 19, course §11.6.2, theorem 11.16, exercise 11.4): ``depth-width``.

Course claim (Telgarsky 2016, theorem 11.16 and its sketch): the tent map g(x) = 2 min(x, 1 − x) on
[0, 1] is the ReLU network g(x) = ReLU(2x) − 2 ReLU(2x − 1); its k-fold composition g∘k has 2^k
linear pieces and is computed by a narrow deep network, while a network of depth ℓ and width w
has O(w^ℓ) pieces, so that a shallow network needs about 2^k units (exercise 11.4.3: it cannot
represent g∘k when w·ℓ < 2^k). On the line, a one-hidden-layer network with w units has at most
w + 1 pieces, so it represents g∘k exactly if and only if w ≥ 2^k − 1.

What is measured:

* the exact constructions (:func:`sawtooth_network`): g∘k as k hidden ReLU layers of width 2
  (the course counts depth 2k, one affine layer + one combination per g; the combination of
  one g folds into the next g's first layer, so k hidden layers suffice), and as one hidden
  layer of 2^k units (:func:`shallow_sawtooth_network`, the interpolant of the 2^k − 1 kinks);
  their maximum error against the formula and their numbers of pieces (:func:`count_pieces`,
  slope changes on a fine dyadic grid), k = 1..K;
* training: one-hidden-layer networks of widths below and above 2^k, and deep networks of k
  hidden layers of width 2 and 4, fitted to g∘k on a grid of [0, 1] by full-batch Adam on the
  hidden layers with the output layer solved exactly by least squares at every step (variable
  projection: for each hidden layer, the best possible output layer, which makes the shallow
  nets' error floor as low as this optimiser can make it); plus the deep width-2 network started
  from the exact construction perturbed by Gaussian noise (σ = 0.05), to tell "cannot represent"
  from "not found by gradient descent". Table: training MSE floor (best of the restarts) per
  (k, architecture), with width, depth, parameter count and pieces of the fit.

The loop of :mod:`profond.train` has no 1-D regression family (its methods take images, text,
series or 2-D points with their own losses), so the fits use a small plain-torch loop here, in
float64.

Claims judged: g∘k has 2^k pieces and the depth-k width-2 network computes it exactly (max error
< 1e-12, k = 1..K); shallow networks with fewer than 2^k − 1 units fail (trained MSE floor above
``FAIL`` = 1e-3 — the variance of g∘k is 1/12 ≈ 0.083); trained deep narrow networks (depth k,
width ≤ 4) from a random start reach MSE below ``FAIL`` (the honest answer of gradient descent,
whichever it is); the perturbed construction returns below ``FAIL``.

Budgets: ``--quick`` (1 thread): k = 4, 16·2^k + 1 = 257 training points, 250 Adam steps, 1 restart;
full: k ∈ {4, 5, 6}, 1025 points, 1500 steps, 3 restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, verdict  # noqa: E402

#: training MSE above which a fit counts as failed (the variance of g∘k is 1/12)
FAIL = 1e-3


@dataclass(frozen=True)
class Budget:
    ks: tuple[int, ...]
    steps: int
    restarts: int
    full_grid: bool
    max_k_exact: int


QUICK = Budget(ks=(4,), steps=250, restarts=1, full_grid=False, max_k_exact=8)
FULL = Budget(ks=(4, 5, 6), steps=1500, restarts=3, full_grid=True, max_k_exact=10)


def sawtooth(x: np.ndarray | torch.Tensor, k: int) -> np.ndarray | torch.Tensor:
    """g∘k(x) with g(x) = 2 min(x, 1 − x) (course §11.6.2, exercise 11.4)."""
    for _ in range(k):
        x = 2 * (np.minimum(x, 1 - x) if isinstance(x, np.ndarray) else torch.minimum(x, 1 - x))
    return x


#: g(x) = ReLU(2x) − 2 ReLU(2x − 1) (course §11.6.2): the hidden layer (W1, b1) and the output (W2, b2)
TENT_W1, TENT_B1 = [[2.0], [2.0]], [0.0, -1.0]
TENT_W2, TENT_B2 = [[1.0, -2.0]], [0.0]


def sawtooth_network(k: int, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """g∘k as k hidden ReLU layers of width 2 (explicit weights). Layer 1 is g's hidden layer;
    layer i > 1 applies g to the previous layer's output ``W2 h + b2``, i.e. weights
    ``W1 @ W2 = [[2, −4], [2, −4]]``, bias ``W1 b2 + b1 = b1``; the output layer is (W2, b2)."""
    w1, b1 = torch.tensor(TENT_W1, dtype=dtype), torch.tensor(TENT_B1, dtype=dtype)
    w2, b2 = torch.tensor(TENT_W2, dtype=dtype), torch.tensor(TENT_B2, dtype=dtype)
    layers: list[nn.Module] = []
    for i in range(k):
        lin = nn.Linear(1 if i == 0 else 2, 2, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(w1 if i == 0 else w1 @ w2)
            lin.bias.copy_(b1 if i == 0 else w1 @ b2 + b1)
        layers += [lin, nn.ReLU()]
    out = nn.Linear(2, 1, dtype=dtype)
    with torch.no_grad():
        out.weight.copy_(w2)
        out.bias.copy_(b2)
    return nn.Sequential(*layers, out)


def shallow_sawtooth_network(k: int, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """g∘k on [0, 1] as one hidden layer of 2^k ReLU units: ``2^k ReLU(x) + Σ_j c_j ReLU(x − j/2^k)``,
    j = 1..2^k − 1, where c_j = 2·2^k·(−1)^j is the change of slope at the kink j/2^k (the slope
    on piece j is 2^k·(−1)^j)."""
    n = 2**k
    t = torch.arange(n, dtype=dtype) / n  # kinks, t_0 = 0 gives the ReLU(x) = x unit
    c = torch.tensor([float(n)] + [2.0 * n * (-1) ** j for j in range(1, n)], dtype=dtype)
    hidden, out = nn.Linear(1, n, dtype=dtype), nn.Linear(n, 1, dtype=dtype)
    with torch.no_grad():
        hidden.weight.fill_(1.0)
        hidden.bias.copy_(-t)
        out.weight.copy_(c[None])
        out.bias.zero_()
    return nn.Sequential(hidden, nn.ReLU(), out)


def count_pieces(x: np.ndarray, f: np.ndarray, rtol: float = 1e-6) -> int:
    """Number of linear pieces of a piecewise-linear ``f`` sampled on the increasing grid ``x``.

    Slopes of consecutive grid intervals are compared; a change larger than ``rtol`` times the
    largest slope (plus 1e-9) is a kink. A kink strictly inside a grid interval changes the slope
    at both ends of that interval, so adjacent changes are merged into one kink (two true kinks
    closer than one grid step are then counted once: the grid must be finer than the pieces).
    """
    slopes = np.diff(f) / np.diff(x)
    jumps = np.abs(np.diff(slopes)) > rtol * np.abs(slopes).max() + 1e-9
    idx = np.flatnonzero(jumps)
    kinks = 0 if idx.size == 0 else 1 + int(np.count_nonzero(np.diff(idx) > 1))
    return kinks + 1


def n_params(widths: list[int]) -> int:
    """Parameters of a 1 → widths → 1 fully connected network."""
    dims = [1, *widths, 1]
    return sum(a * b + b for a, b in zip(dims[:-1], dims[1:], strict=True))


def _hidden(widths: list[int], g: torch.Generator) -> nn.Sequential:
    """Hidden layers (float64); the first layer's kinks spread uniformly over [0, 1] (slopes ±1)
    so that no unit starts outside the interval; deeper layers: torch's default init."""
    layers: list[nn.Module] = []
    d = 1
    for i, w in enumerate(widths):
        lin = nn.Linear(d, w, dtype=torch.float64)
        if i == 0:
            with torch.no_grad():
                s = torch.where(torch.rand(w, 1, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
                lin.weight.copy_(s)
                lin.bias.copy_(-s[:, 0] * torch.rand(w, generator=g, dtype=torch.float64))
        layers += [lin, nn.ReLU()]
        d = w
    return nn.Sequential(*layers)


def _readout(phi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Predictions of the least-squares output layer (weights and bias) on the features ``phi``
    (normal equations with a 1e-10 relative ridge, differentiable)."""
    p = torch.cat([phi, torch.ones_like(phi[:, :1])], 1)
    a = p.T @ p
    a = a + 1e-10 * (a.diagonal().mean() + 1) * torch.eye(a.shape[0], dtype=a.dtype)
    return p @ torch.linalg.solve(a, p.T @ y)


def fit(hidden: nn.Sequential, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float = 1e-2) -> np.ndarray:
    """Adam (cosine-decayed ``lr``) on the hidden layers, output layer by least squares each step
    (variable projection). Returns the fitted values on ``x`` after the last step."""
    opt = torch.optim.Adam(hidden.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = (_readout(hidden(x), y) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return _readout(hidden(x), y)[:, 0].numpy()


def architectures(k: int) -> list[tuple[str, list[int], str]]:
    """(kind, hidden widths, start) rows for g∘k: shallow below and above 2^k, deep narrow."""
    n = 2**k
    rows = [("shallow", [w], "random") for w in (n // 4, n // 2, n - 1, 4 * n)]
    rows += [("deep", [2] * k, "random"), ("deep", [4] * k, "random"), ("deep", [2] * k, "construction+noise")]
    return rows


def perturbed_construction(k: int, sigma: float, g: torch.Generator) -> nn.Sequential:
    """The hidden layers of :func:`sawtooth_network` with N(0, σ²) added to every weight and bias."""
    hidden = sawtooth_network(k)[:-1]
    with torch.no_grad():
        for p in hidden.parameters():
            p.add_(sigma * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return hidden


@EXPERIMENTS.register("depth-width", help="g∘k: 2^k pieces from a deep width-2 net, shallow nets need ~2^k units "
                      "(Telgarsky; course §11.6.2, ex. 11.4)")
def depth_width(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    grid = np.linspace(0.0, 1.0, 2**14 + 1)  # dyadic: every kink j/2^k (k <= 14) is a grid point
    exact_rows = []
    with torch.no_grad():
        for k in range(1, b.max_k_exact + 1):
            xt = torch.tensor(grid)[:, None]
            deep = sawtooth_network(k)(xt)[:, 0].numpy()
            shallow = shallow_sawtooth_network(k)(xt)[:, 0].numpy()
            ref = sawtooth(grid, k)
            exact_rows.append({"k": k, "pieces_formula": count_pieces(grid, ref),
                               "pieces_deep": count_pieces(grid, deep), "err_deep": float(np.abs(deep - ref).max()),
                               "pieces_shallow": count_pieces(grid, shallow),
                               "err_shallow": float(np.abs(shallow - ref).max())})
    exact = pd.DataFrame(exact_rows)

    rows, fits = [], {}
    with num_threads(1):
        for k in b.ks:
            n_pts = 1025 if b.full_grid else 16 * 2**k + 1
            x = torch.linspace(0.0, 1.0, n_pts, dtype=torch.float64)[:, None]
            y = sawtooth(x, k)
            for kind, widths, start in architectures(k):
                best, best_fit = math.inf, None
                for r in range(b.restarts):
                    g = torch.Generator().manual_seed(1000 * k + r)
                    torch.manual_seed(1000 * k + r)
                    hidden = perturbed_construction(k, 0.05, g) if start != "random" else _hidden(widths, g)
                    f = fit(hidden, x, y, b.steps)
                    mse = float(np.mean((f - y[:, 0].numpy()) ** 2))
                    if mse < best:
                        best, best_fit = mse, f
                fits[(k, kind, tuple(widths), start)] = (x[:, 0].numpy(), best_fit)
                units = sum(widths)
                rows.append({"k": k, "pieces_target": 2**k, "kind": kind, "width": widths[0], "depth": len(widths),
                             "units": units, "params": n_params(widths), "start": start,
                             "w_times_l_lt_2k": widths[0] * len(widths) < 2**k,
                             "can_represent": (units >= 2**k - 1) if kind == "shallow" else True,
                             "mse_floor": best, "pieces_fit": count_pieces(x[:, 0].numpy(), best_fit, rtol=1e-3),
                             "fitted": best < FAIL})
    table = pd.DataFrame(rows)

    ks = b.ks
    fig, axes = plt.subplots(len(ks), 1, figsize=(11, 3.2 * len(ks)), squeeze=False)
    for ax, k in zip(axes[:, 0], ks, strict=True):
        ax.plot(grid, sawtooth(grid, k), "k-", lw=2.5, alpha=0.35, label=f"g∘{k} ({2**k} pieces)")
        for (kk, kind, widths, start), (xs, f) in fits.items():
            if kk == k:
                lab = f"{kind} {len(widths)}×{widths[0]}" + (" (from construction)" if start != "random" else "")
                ax.plot(xs, f, lw=1, label=lab)
        ax.set_title(f"k = {k}: trained fits (MSE floor in the table)")
        ax.legend(fontsize=7, ncol=4, loc="lower center")
    axes[-1, 0].set_xlabel("x")
    fig_path = save_figure(fig, out / "depth_width_fits.png")

    exact_ok = bool((exact["pieces_deep"] == 2 ** exact["k"]).all() and (exact["pieces_formula"] == 2 ** exact["k"]).all()
                    and (exact["err_deep"] < 1e-12).all() and (exact["err_shallow"] < 1e-9).all())
    below = table[(table["kind"] == "shallow") & ~table["can_represent"]]
    shallow_fail = bool((below["mse_floor"] > FAIL).all())
    deep_rand = table[(table["kind"] == "deep") & (table["start"] == "random")]
    deep_ok = bool((deep_rand["mse_floor"] < FAIL).all())
    pert = table[table["start"] != "random"]
    pert_ok = bool((pert["mse_floor"] < FAIL).all())
    claims = {
        "g_k_has_2k_pieces_and_deep_width2_is_exact": verdict(exact_ok),
        "shallow_below_2k_units_fail": verdict(shallow_fail),
        "trained_deep_narrow_fit_from_random_start": verdict(deep_ok),
        "perturbed_construction_trains_back": verdict(pert_ok),
    }
    wide = table[(table["kind"] == "shallow") & table["can_represent"]]
    notes = "\n".join([
        "Exact constructions, k = 1.." + str(b.max_k_exact) + ": pieces (formula / deep width-2 / shallow 2^k units) "
        + ", ".join(f"{r.k}: {r.pieces_formula}/{r.pieces_deep}/{r.pieces_shallow}" for r in exact.itertuples())
        + f"; max error deep {exact['err_deep'].max():.1e}, shallow {exact['err_shallow'].max():.1e}.",
        f"- g∘k has 2^k pieces, the depth-k width-2 net is exact: **{claims['g_k_has_2k_pieces_and_deep_width2_is_exact']}**",
        f"- shallow nets with < 2^k − 1 units fail (MSE floor > {FAIL:g}): **{claims['shallow_below_2k_units_fail']}** "
        f"(lowest floor among them {below['mse_floor'].min():.3g})",
        f"- deep narrow nets (depth k, width 2 / 4) trained from a random start reach MSE < {FAIL:g}: "
        f"**{claims['trained_deep_narrow_fit_from_random_start']}** (floors "
        + ", ".join(f"k={r.k} {r.depth}×{r.width}: {r.mse_floor:.3g}" for r in deep_rand.itertuples()) + ")",
        f"- the width-2 construction perturbed by σ = 0.05 trains back below {FAIL:g}: "
        f"**{claims['perturbed_construction_trains_back']}** ("
        + ", ".join(f"k={r.k}: {r.mse_floor:.3g}" for r in pert.itertuples()) + ")",
        "Shallow nets with 2^k − 1 units or more (can represent g∘k) reached: "
        + ", ".join(f"k={r.k} w={r.width}: {r.mse_floor:.3g}" for r in wide.itertuples())
        + " — representable is not the same as found by gradient descent.",
    ])
    return ExperimentResult(table=table, figures=[fig_path], notes=notes,
                            extra={"claims": claims, "exact": exact.to_dict(orient="records"), "fail_threshold": FAIL})
