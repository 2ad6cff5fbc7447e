"""Training dynamics: double descent, implicit bias of gradient descent, gradient clipping.

Two experiments:

``double-descent`` (course §11.4 and §11.10)
    (a) The experiment of §11.10: ``make_classification(n_samples=200, n_features=20,
        n_informative=10)``, 70/30 split, MLPs ``20 → w → w → 1`` (ReLU) trained full-batch
        with Adam (lr 1e-3) on ``BCEWithLogitsLoss`` for widths 2..800; train and test loss
        against the parameter count, with the interpolation threshold (parameters ≈
        training samples, Fig. 11.1's ``p/n = 1``) marked.
    (b) Theorem 11.10 (implicit bias, linear regression): for ``p > n`` gradient descent from
        ``w0 = 0`` converges to the minimum-norm interpolant ``X⁺y``; from any ``w0`` it
        converges to ``X⁺y + P_null(X) w0`` (GD never moves ``w`` out of ``w0 + Im(X^T)``,
        the argument of the theorem's proof).
    (c) The same theorem makes min-norm least squares the limit of GD, so random-ReLU-feature
        regression solved with ``X⁺y`` on the §11.10 data shows the sharp, textbook double
        descent at ``p = n`` (a deterministic counterpart to the noisy MLP curve of (a)).

``gradient-clipping`` (course §2.6.2)
    A deep linear chain whose layers have norm > 1 (``‖W‖ > 1/|σ'_max|`` with σ = identity):
    gradients grow geometrically with depth. Plain SGD explodes to inf/nan in a few steps;
    ``torch.nn.utils.clip_grad_norm_`` (the course's snippet) at several thresholds keeps
    every step bounded by ``lr · c`` and the loss decreases.
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
from torch import nn  # noqa: E402

from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult  # noqa: E402

# --------------------------------------------------------------------------------------
# double descent (§11.10)
# --------------------------------------------------------------------------------------

#: the widths of the course's listing (§11.10)
COURSE_WIDTHS = [2, 4, 6, 8, 10, 15, 20, 30, 50, 80, 120, 200, 400, 800]
QUICK_WIDTHS = [2, 4, 8, 20, 60]


def course_data(n_samples: int = 200, seed: int = 42) -> tuple[torch.Tensor, ...]:
    """The §11.10 data: ``make_classification(n_features=20, n_informative=10)``, 70/30 split."""
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split

    X, y = make_classification(n_samples=n_samples, n_features=20, n_informative=10, random_state=seed)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=seed)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return t(X_tr), t(y_tr).unsqueeze(1), t(X_te), t(y_te).unsqueeze(1)


def make_mlp(width: int, d_in: int = 20) -> nn.Sequential:
    """``make_model`` of §11.10: two hidden ReLU layers of the same width."""
    return nn.Sequential(nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                         nn.Linear(width, 1))


def train_and_eval(width: int, data: tuple[torch.Tensor, ...], epochs: int = 2000, lr: float = 1e-3,
                   seed: int = 0) -> dict:
    """Full-batch Adam on BCE, as ``train_and_eval`` of §11.10."""
    X_tr, y_tr, X_te, y_te = data
    torch.manual_seed(seed)
    model = make_mlp(width, X_tr.shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        opt.zero_grad()
        loss_fn(model(X_tr), y_tr).backward()
        opt.step()
    with torch.no_grad():
        out_tr, out_te = model(X_tr), model(X_te)
        return {
            "width": width,
            "params": sum(p.numel() for p in model.parameters()),
            "train_loss": loss_fn(out_tr, y_tr).item(),
            "test_loss": loss_fn(out_te, y_te).item(),
            "train_acc": ((out_tr > 0).float() == y_tr).float().mean().item(),
            "test_acc": ((out_te > 0).float() == y_te).float().mean().item(),
        }


def gradient_descent_lstsq(X: torch.Tensor, y: torch.Tensor, w0: torch.Tensor, steps: int,
                           lr: float | None = None) -> torch.Tensor:
    """Plain GD on ``½‖Xw − y‖²`` (step ``1/λ_max(XᵀX)`` unless given)."""
    if lr is None:
        lr = 1.0 / torch.linalg.matrix_norm(X, ord=2).item() ** 2
    w = w0.clone()
    for _ in range(steps):
        w -= lr * X.T @ (X @ w - y)
    return w


def implicit_bias_table(n: int = 30, p: int = 100, steps: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Theorem 11.10: GD limits from ``w0 = 0`` and ``w0 ≠ 0`` vs ``X⁺y`` (+ null-space part of w0).

    Float64 so that the comparison measures the theorem, not rounding.
    """
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    X_pinv = torch.linalg.pinv(X)
    w_star = X_pinv @ y
    P_null = torch.eye(p, dtype=torch.float64) - X_pinv @ X  # projector onto null(X)
    rows = []
    for label, w0 in (("w0 = 0", torch.zeros(p, dtype=torch.float64)),
                      ("w0 ~ N(0, I)", torch.randn(p, generator=g, dtype=torch.float64))):
        w = gradient_descent_lstsq(X, y, w0, steps)
        target = w_star + P_null @ w0
        rows.append({
            "init": label, "n": n, "p": p, "steps": steps,
            "residual_norm": torch.linalg.norm(X @ w - y).item(),
            "rel_err_vs_pinv": (torch.linalg.norm(w - w_star) / torch.linalg.norm(w_star)).item(),
            "rel_err_vs_pinv_plus_null_w0": (torch.linalg.norm(w - target) / torch.linalg.norm(target)).item(),
            "null_component_norm": torch.linalg.norm(P_null @ w).item(),
            "null_component_of_w0": torch.linalg.norm(P_null @ w0).item(),
            "norm_w": torch.linalg.norm(w).item(),
            "norm_pinv": torch.linalg.norm(w_star).item(),
        })
    return pd.DataFrame(rows)


def random_features_curve(data: tuple[torch.Tensor, ...], features: list[int], seeds: int = 5) -> pd.DataFrame:
    """Min-norm (= GD from 0, Thm 11.10) regression on ``p`` random ReLU features, labels ±1."""
    X_tr, y_tr, X_te, y_te = (t.double() for t in data)
    t_tr, t_te = 2 * y_tr - 1, 2 * y_te - 1
    rows = []
    for p in features:
        tr, te = [], []
        for s in range(seeds):
            g = torch.Generator().manual_seed(1000 + s)
            W = torch.randn(X_tr.shape[1], p, generator=g, dtype=torch.float64) / math.sqrt(X_tr.shape[1])
            F_tr, F_te = torch.relu(X_tr @ W), torch.relu(X_te @ W)
            w = torch.linalg.pinv(F_tr) @ t_tr
            tr.append(((F_tr @ w - t_tr) ** 2).mean().item())
            te.append(((F_te @ w - t_te) ** 2).mean().item())
        rows.append({"features": p, "p_over_n": p / X_tr.shape[0], "train_mse": float(np.mean(tr)),
                     "test_mse": float(np.median(te))})
    return pd.DataFrame(rows)


@EXPERIMENTS.register("double-descent",
                      help="double descent with MLP width (§11.10) and GD's min-norm implicit bias (Thm 11.10)")
def double_descent(out: Path, quick: bool) -> ExperimentResult:
    data = course_data()
    n_train = data[0].shape[0]
    widths = QUICK_WIDTHS if quick else COURSE_WIDTHS
    epochs = 200 if quick else 2000
    lr = 1e-2 if quick else 1e-3  # quick: fewer, larger steps to still reach ~0 train loss
    table = pd.DataFrame([train_and_eval(w, data, epochs=epochs, lr=lr) for w in widths])
    table["params_over_n"] = table["params"] / n_train

    bias = implicit_bias_table(steps=1000 if quick else 5000)
    bias.to_csv(out / "implicit_bias.csv", index=False)
    feats = [10, 40, 80, 120, 135, 140, 145, 160, 200, 300, 600] if quick else \
        sorted({int(v) for v in np.geomspace(5, 2000, 40)} | {n_train})
    rf = random_features_curve(data, feats, seeds=3 if quick else 10)
    rf.to_csv(out / "random_features.csv", index=False)

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ax = axes[0]
    ax.plot(table["params"], table["train_loss"], "-o", label="train")
    ax.plot(table["params"], table["test_loss"], "-s", label="test")
    ax.axvline(n_train, color="k", ls="--", lw=1, label=f"interpolation threshold (p = n = {n_train})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("BCE loss")
    ax.set_title(f"§11.10 MLP 20→w→w→1, {epochs} epochs" + (" (quick)" if quick else ""), fontsize=10)
    for r in table.itertuples():
        ax.annotate(str(r.width), (r.params, r.test_loss), fontsize=7, textcoords="offset points", xytext=(2, 4))
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(rf["features"], rf["train_mse"].clip(lower=1e-3), "-o", ms=3, label="train (shown ≥ 1e-3)")
    ax.plot(rf["features"], rf["test_mse"], "-s", ms=3, label="test (median over feature draws)")
    ax.axvline(n_train, color="k", ls="--", lw=1, label="p = n")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("random ReLU features p")
    ax.set_ylabel("MSE (labels ±1)")
    ax.set_title("min-norm X⁺y = GD limit from 0 (Thm 11.10)", fontsize=10)
    ax.legend(fontsize=7)
    fig_path = save_figure(fig, out / "double_descent.png")

    i_thr = int((table["params"] - n_train).abs().idxmin())
    i_peak = int(rf["test_mse"].idxmax())
    notes = ("Theorem 11.10 (GD on ½‖Xw−y‖², n < p):\n\n"
             + bias.to_string(index=False, float_format=lambda v: f"{v:.3g}")
             + "\n\nRandom-feature min-norm regression (test MSE peak at p = "
             + f"{int(rf['features'][i_peak])}, n = {n_train}):\n\n"
             + rf.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    extra = {
        "n_train": n_train,
        "threshold_width": int(table["width"][i_thr]),
        "gd_rel_err_vs_pinv": float(bias["rel_err_vs_pinv"][0]),
        "gd_rel_err_nonzero_init": float(bias["rel_err_vs_pinv_plus_null_w0"][1]),
        "rf_peak_features": int(rf["features"][i_peak]),
    }
    return ExperimentResult(table=table, figures=[fig_path], notes=notes, extra=extra)


# --------------------------------------------------------------------------------------
# gradient clipping (§2.6.2)
# --------------------------------------------------------------------------------------


def deep_linear_chain(depth: int = 10, width: int = 16, d_in: int = 8, gain: float = 1.6,
                      seed: int = 0) -> nn.Sequential:
    """Linear layers with ``std = gain/√fan_in``: each layer multiplies norms by ≈ gain > 1."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for i in range(depth):
        lin = nn.Linear(d_in if i == 0 else width, 1 if i == depth - 1 else width, bias=False)
        with torch.no_grad():
            lin.weight.normal_(0.0, gain / math.sqrt(lin.in_features), generator=g)
        layers.append(lin)
    return nn.Sequential(*layers)


def train_clipped(max_norm: float | None, steps: int, lr: float = 0.01, seed: int = 0) -> dict:
    """SGD on a linear regression target through the exploding chain, optionally clipped."""
    g = torch.Generator().manual_seed(seed + 1)
    X = torch.randn(128, 8, generator=g)
    y = X @ torch.randn(8, 1, generator=g)
    model = deep_linear_chain(seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses, norms = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), y)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        loss.backward()
        # returns the norm *before* clipping; inf threshold = no clipping
        norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm else float("inf"))
        norms.append(norm.item())
        opt.step()
    return {"losses": losses, "grad_norms": norms}


@EXPERIMENTS.register("gradient-clipping", help="exploding gradients and clip_grad_norm_ (course §2.6.2)")
def gradient_clipping(out: Path, quick: bool) -> ExperimentResult:
    steps = 100 if quick else 1000
    thresholds: list[float | None] = [None, 100.0, 10.0, 1.0, 0.1]
    runs = {c: train_clipped(c, steps) for c in thresholds}
    rows = []
    for c, r in runs.items():
        losses = np.array(r["losses"])
        finite = np.isfinite(losses)
        diverged = bool(not finite.all() or losses[-1] > losses[0])
        rows.append({
            "max_norm": "none" if c is None else c,
            "initial_loss": float(losses[0]),
            "final_loss": float(losses[-1]),
            "best_loss": float(losses[finite].min()),
            "steps_run": len(losses),
            "max_grad_norm": float(np.max(r["grad_norms"])) if r["grad_norms"] else float("nan"),
            "diverged": "yes" if diverged else "no",
        })
    table = pd.DataFrame(rows)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for c, r in runs.items():
        label = "no clipping" if c is None else f"clip {c:g}"
        loss = np.array(r["losses"], dtype=float)
        loss[~np.isfinite(loss)] = np.nan
        axes[0].plot(loss, label=label + (" (diverged)" if len(loss) < steps else ""))
        axes[1].plot(r["grad_norms"], label=label)
    for c in thresholds:
        if c is not None:
            axes[1].axhline(c, color="gray", lw=0.5, ls=":")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("SGD step")
    axes[0].set_ylabel("MSE loss")
    axes[0].set_title("deep linear chain (10 layers, gain 1.6), SGD lr 0.01")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("SGD step")
    axes[1].set_ylabel("‖g‖ before clipping")
    axes[1].set_title("gradient norms (dotted: thresholds c)")
    axes[0].legend(fontsize=7)
    fig_path = save_figure(fig, out / "gradient_clipping.png")
    notes = ("Clipping (§2.6.2): g ← c·g/‖g‖ when ‖g‖ > c, so each SGD step moves the weights by at "
             "most lr·c; without it the first gradient (‖g‖ ~ 1e4+) throws the chain to inf.")
    return ExperimentResult(table=table, figures=[fig_path], notes=notes)
