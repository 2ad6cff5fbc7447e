"""Geometry of the loss landscape (issue 19, course §11.8): ``loss-landscape``.

Course §11.8.1 (proposition 11.19, definition 11.20, fig. 11.2) pictures minima as flat or
sharp and argues that flat ones generalise better; this experiment looks at the landscape of
real trained nets in the three ways of the literature:

* **1-D linear interpolation** ``θ(α) = (1−α) θ_a + α θ_b`` (Goodfellow et al. 2015) for
  ``α ∈ [−0.25, 1.25]``: from the initialisation to the solution (training loss and test
  accuracy along the path; the claim judged is that this path is *monotone*, no bump), and
  from the solution of seed 0 to that of seed 1 (the *barrier* is ``max_α L(θ(α)) −
  max(L(θ_a), L(θ_b))``; the claim judged is that two solutions of different seeds are
  separated by one). The whole state is interpolated, BatchNorm running statistics included,
  so ``α = 0`` and ``α = 1`` are exactly the two nets.
* **2-D filter-normalised contour** (Li et al. 2018): ``L(θ* + a δ + b η)`` on a grid of
  ``a, b ∈ [−1, 1]``, with ``δ, η`` Gaussian directions in which each filter (a row of a
  Linear weight, an output channel of a Conv kernel) is rescaled to the norm of the same
  filter of the solution, and biases / normalisation parameters are zero
  (:func:`filter_normalized_direction`); the running statistics stay the solution's.
* **Sharpness**: the top eigenvalue of the Hessian of the training loss at each solution, on a
  fixed batch (course §11.8.1, exercise 11.6 item 3), by power iteration on Hessian-vector
  products (:func:`profond.metrics.curvature.top_hessian_eigenvalue`).

**Skip connections.** No model of :mod:`profond.models` has a skip connection that can be
switched off, so the pair compared is ``plain`` = ``mlp`` with 6 hidden layers (no skip, no
normalisation) against ``residual`` = ``resnet8`` (a CIFAR ResNet with one BasicBlock per stage:
identity / projection shortcuts, BatchNorm). The two differ in more than the skips
(convolutions, BatchNorm), so the third claim ("skip connections give a smoother,
lower-curvature landscape", Li et al. 2018) is judged on this pair only, and its verdict says
"residual conv net vs deep plain MLP", not "skip vs no skip with all else equal".

Every net is trained through the one loop (:func:`~profond.experiments.run_training`); the
initial weights are captured by a callback at ``on_train_start`` (before the first step) and
saved as ``init_<net>.pt``; the trained nets are reopened with
:func:`profond.train.load_run`. Only evaluation (the loss at given weights) is done here.

Outputs: ``table.csv`` (one row per net: test accuracy, training loss, initial loss, loss at
``α = 0.5`` on the init→solution path, monotonicity, the pair's barrier and midpoint loss,
sharpness), ``interpolation.csv`` and ``interpolation.png`` (the 1-D curves), ``contour.csv`` and
``contour.png`` (the 2-D grids, one panel per model, seed 0). The loop's validation split is
seeded by ``train.seed``, so each net's init→solution path, training loss and sharpness are on
its own training split; the seed-0 → seed-1 path and the grid are on the seed-0 run's.

Budgets: ``--quick`` (CI): 8x8 digits (1,597 training images, 200 of them held out for
validation), 2 seeds × 2 models, 20 epochs (MLP) / 8 epochs (ResNet), an 11x11 grid, 13-point
1-D paths (step 0.125, so α = 0, 0.5, 1 are on it), 20 power iterations, one thread (about 23 s on
a loaded 2-core machine). Full: Fashion-MNIST (60,000 images; losses of the paths and
grid on a fixed 10,000-image training subset), 20 / 10 epochs, a 31x31 grid, 31-point paths
(step 0.05), 50
power iterations, two threads (not timed here: an estimate of tens of minutes on 2 cores).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from ..contract import Callback  # noqa: E402
from ..metrics.curvature import module_loss_fn, top_hessian_eigenvalue  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, run_training, verdict  # noqa: E402


@dataclass(frozen=True)
class Budget:
    data: list[str]
    epochs: dict[str, int]
    grid: int
    alphas: int
    power_iters: int
    eval_examples: int  # training examples the path / grid losses are computed on (0: all)
    threads: int
    mlp_width: int
    resnet_width: int


QUICK = Budget(data=["data.name=digits", "data.val_size=200"], epochs={"plain": 20, "residual": 8}, grid=11, alphas=13,
               power_iters=20, eval_examples=0, threads=1, mlp_width=32, resnet_width=4)
FULL = Budget(data=["data.name=fashion-mnist", "data.val_size=5000"], epochs={"plain": 20, "residual": 10}, grid=31, alphas=31,
              power_iters=50, eval_examples=10_000, threads=2, mlp_width=128, resnet_width=16)
SEEDS = (0, 1)
MODELS = ("plain", "residual")
#: examples of the fixed batch the Hessian's top eigenvalue is measured on
HESSIAN_BATCH = 512
#: a rise of the loss between consecutive α larger than this (nats) is a bump
BUMP_TOL = 1e-3
#: a barrier higher than this (nats) separates two solutions
BARRIER_TOL = 0.05


#: Adam's step (the loop's default optimizer), larger than its 1e-3 default for these short runs
LR = "optim.lr=3e-3"


def model_overrides(kind: str, b: Budget) -> list[str]:
    if kind == "plain":
        return [LR, "model.name=mlp", f"model.widths=[{','.join([str(b.mlp_width)] * 6)}]"]
    return [LR, "model.name=resnet8", f"model.width={b.resnet_width}"]


# -- directions and losses ----------------------------------------------------------------
def filter_normalized_direction(params: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A Gaussian direction with each filter rescaled to the solution's (Li et al. 2018, §4).

    For a parameter of 2 dimensions or more (Linear weight ``[out, in]``, Conv kernel
    ``[out, in, k, k]``), filter ``i`` is the slice ``[i]``: ``d_i ← d_i · ‖θ_i‖ / ‖d_i‖``.
    Parameters of fewer dimensions (biases, BatchNorm / LayerNorm weights and biases) get a
    zero direction, as in the paper.
    """
    out = {}
    for name, p in params.items():
        if p.dim() < 2:
            out[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype)
        dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
        pn = p.detach().flatten(1).norm(dim=1)
        out[name] = d * (pn / dn).view(-1, *([1] * (p.dim() - 1)))
    return out


def filter_norms(t: torch.Tensor) -> torch.Tensor:
    """The norm of each filter (slice along dimension 0) of a weight."""
    return t.flatten(1).norm(dim=1)


def interpolate(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """``(1−α) a + α b`` entry by entry on floating tensors; integer buffers (BatchNorm's step
    counter) are taken from ``a``. Outside ``[0, 1]`` a BatchNorm running variance can come out
    negative: it is clamped at 0 (BatchNorm's ``eps`` keeps the division finite)."""
    out = {}
    for k, v in a.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        t = (1 - alpha) * v + alpha * b[k]
        out[k] = t.clamp_min(0) if k.endswith("running_var") else t
    return out


@torch.no_grad()
def loss_and_accuracy(net: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                      chunk: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``net`` with the weights / buffers ``state`` (eval mode:
    BatchNorm uses the running statistics of ``state``), the training method's loss."""
    net.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        logits = functional_call(net, dict(state), (x[i:i + chunk],)).float()
        loss += F.cross_entropy(logits, y[i:i + chunk], reduction="sum").item()
        correct += int((logits.argmax(1) == y[i:i + chunk]).sum())
    return loss / len(x), correct / len(x)


def tensors(batches: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All (normalised) images and labels of a loader, concatenated (order of epoch 0)."""
    xs, ys = zip(*[(x, y) for x, y in batches.batches(0)], strict=True)
    return torch.cat(xs).float(), torch.cat(ys)


def sharpness(net: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
              iters: int) -> float:
    """Top eigenvalue of the Hessian of the training loss in the parameters at ``state``
    (course §11.8.1, exercise 11.6: the "sharpness" of the minimum), buffers held fixed."""
    lam, _ = top_hessian_eigenvalue(*module_loss_fn(net, state, x, y), iters=iters, seed=0, tol=1e-3)
    return lam


def path_stats(points: list[dict[str, float]]) -> dict[str, float]:
    """Of a 1-D path (rows with ``alpha``, ``train_loss``) restricted to ``α ∈ [0, 1]``: the end
    losses, the loss at ``α = 0.5``, the largest rise between consecutive points (``max_rise``;
    ``monotone`` when it is at most ``BUMP_TOL``) and the barrier ``max_α L − max(L(0), L(1))``."""
    inside = sorted((p["alpha"], p["train_loss"]) for p in points if -1e-9 <= p["alpha"] <= 1 + 1e-9)
    losses = np.array([lo for _, lo in inside])
    half = min(inside, key=lambda p: abs(p[0] - 0.5))
    rise = float(max(np.diff(losses).max(), 0.0))
    return {"start_loss": float(losses[0]), "end_loss": float(losses[-1]), "loss_alpha05": float(half[1]),
            "max_rise": rise, "monotone": bool(rise <= BUMP_TOL),
            "barrier": float(losses.max() - max(losses[0], losses[-1]))}


class InitCapture(Callback):
    """Copies the net's state when training starts, before any step: the real initialisation."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None
        self.step: int | None = None

    def on_train_start(self, loop: Any) -> None:
        self.step = int(loop.step)
        self.state = copy.deepcopy({k: v.detach().cpu() for k, v in loop.method.nets["model"].state_dict().items()})


# -- figures ------------------------------------------------------------------------------
def _plot_interpolation(curves: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    styles = {"plain": "tab:blue", "residual": "tab:orange"}
    for (kind, seed), sub in curves[curves["path"] == "init->solution"].groupby(["model", "seed"]):
        ls = "-" if seed == 0 else "--"
        axes[0].plot(sub["alpha"], sub["train_loss"], ls, color=styles[kind], label=f"{kind}, seed {seed}")
        axes[1].plot(sub["alpha"], sub["test_accuracy"], ls, color=styles[kind], label=f"{kind}, seed {seed}")
    for kind, sub in curves[curves["path"] == "seed0->seed1"].groupby("model"):
        axes[2].plot(sub["alpha"], sub["train_loss"], "-o", ms=3, color=styles[kind], label=kind)
    titles = ("init → solution: training loss", "init → solution: test accuracy",
              "solution seed 0 → seed 1: training loss")
    for ax, t in zip(axes, titles, strict=True):
        ax.set_title(t, fontsize=10)
        ax.set_xlabel("α")
        for a in (0, 1):
            ax.axvline(a, color="gray", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[2].set_yscale("log")
    fig.suptitle("1-D linear interpolation θ(α) = (1−α)θ_a + αθ_b (Goodfellow et al. 2015; course §11.8)")
    return save_figure(fig, path)


def _plot_contour(grids: dict[str, np.ndarray], coords: np.ndarray, path: Path) -> Path:
    fig, axes = plt.subplots(1, len(grids), figsize=(5.4 * len(grids), 4.6))
    for ax, (kind, z) in zip(np.atleast_1d(axes), grids.items(), strict=True):
        levels = np.linspace(z.min(), min(z.max(), z.min() + 5.0), 25)
        cs = ax.contour(coords, coords, z.T, levels=levels, cmap="viridis")
        ax.clabel(cs, cs.levels[::4], fontsize=7, fmt="%.2f")
        ax.plot(0, 0, "r*", ms=10)
        ax.set_title(f"{kind}: L(θ* + aδ + bη), seed 0", fontsize=10)
        ax.set_xlabel("a (δ)")
        ax.set_ylabel("b (η)")
    fig.suptitle("Filter-normalised 2-D loss contour (Li et al. 2018)")
    return save_figure(fig, path)


# -- the experiment -----------------------------------------------------------------------
@EXPERIMENTS.register("loss-landscape", help="1-D interpolation, filter-normalised 2-D contour and sharpness "
                      "of trained nets, plain MLP vs ResNet (§11.8)")
def loss_landscape(out: Path, quick: bool) -> ExperimentResult:
    from ..train import load_run

    b = QUICK if quick else FULL
    alphas = np.linspace(-0.25, 1.25, b.alphas)
    coords = np.linspace(-1.0, 1.0, b.grid)
    rows, curves, grids = [], [], {}
    with num_threads(b.threads):
        for kind in MODELS:
            sols, nets, inits, train_sets = {}, {}, {}, {}
            for seed in SEEDS:
                name = f"{kind}-seed{seed}"
                cap = InitCapture()
                res, _ = run_training(out, name, [*b.data, *model_overrides(kind, b), f"train.epochs={b.epochs[kind]}",
                                                  f"train.threads={b.threads}", f"train.seed={seed}"],
                                      callbacks=[cap])
                if cap.state is None or cap.step != 0:  # the init must be the state before the first step
                    raise RuntimeError(f"{name}: the initial weights were not captured before the first step")
                torch.save(cap.state, out / f"init_{name}.pt")
                method, _ = load_run(res.run_dir, device="cpu")
                net = method.nets["model"]
                # each run's own training split (the validation split is seeded by train.seed)
                if getattr(method, "train_data", None) is None:  # opened for evaluation: no loaders yet
                    method._build_loaders()
                xs, ys = tensors(method.train_data)
                train_sets[seed] = (xs[:b.eval_examples], ys[:b.eval_examples]) if b.eval_examples else (xs, ys)
                xte, yte = tensors(method.test_data())
                nets[seed] = net
                sols[seed] = {k: v.detach().clone() for k, v in net.state_dict().items()}
                inits[seed] = cap.state
            net = nets[SEEDS[0]]
            params = sum(p.numel() for p in net.parameters())
            per_seed = {}
            for seed in SEEDS:  # init -> solution, course §11.8 (Goodfellow et al. 2015)
                xtr, ytr = train_sets[seed]
                for a in alphas:
                    st = interpolate(inits[seed], sols[seed], float(a))
                    curves.append({"model": kind, "seed": seed, "path": "init->solution", "alpha": round(float(a), 4),
                                   "train_loss": loss_and_accuracy(net, st, xtr, ytr)[0],
                                   "test_accuracy": loss_and_accuracy(net, st, xte, yte)[1]})
                per_seed[seed] = path_stats([c for c in curves if c["model"] == kind and c["seed"] == seed
                                             and c["path"] == "init->solution"])
            # seed 0 -> seed 1: the barrier, and the 2-D grid, on the seed-0 run's training split
            xtr, ytr = train_sets[SEEDS[0]]
            for a in alphas:
                st = interpolate(sols[SEEDS[0]], sols[SEEDS[1]], float(a))
                curves.append({"model": kind, "seed": -1, "path": "seed0->seed1", "alpha": round(float(a), 4),
                               "train_loss": loss_and_accuracy(net, st, xtr, ytr)[0], "test_accuracy": math.nan})
            pair = path_stats([c for c in curves if c["model"] == kind and c["path"] == "seed0->seed1"])
            barrier, mid = pair["barrier"], pair["loss_alpha05"]
            # 2-D filter-normalised contour around the seed-0 solution (Li et al. 2018)
            sol = sols[SEEDS[0]]
            pnames = [n for n, _ in net.named_parameters()]
            g = torch.Generator().manual_seed(0)
            d1 = filter_normalized_direction({n: sol[n] for n in pnames}, g)
            d2 = filter_normalized_direction({n: sol[n] for n in pnames}, g)
            z = np.zeros((b.grid, b.grid))
            for i, u in enumerate(coords):
                for j, v in enumerate(coords):
                    st = {k: (t + u * d1[k] + v * d2[k]) if k in d1 else t for k, t in sol.items()}
                    z[i, j] = loss_and_accuracy(net, st, xtr, ytr)[0]
            grids[kind] = z
            for seed in SEEDS:
                xtr, ytr = train_sets[seed]
                hb = min(HESSIAN_BATCH, len(xtr))
                lam = sharpness(nets[seed], sols[seed], xtr[:hb], ytr[:hb], b.power_iters)
                tr_loss, _ = loss_and_accuracy(nets[seed], sols[seed], xtr, ytr)
                _, te_acc = loss_and_accuracy(nets[seed], sols[seed], xte, yte)
                rows.append({"model": kind, "net": "mlp 6x" + str(b.mlp_width) if kind == "plain"
                             else f"resnet8 w{b.resnet_width}", "skip": kind == "residual", "seed": seed,
                             "params": params, "test_accuracy": round(te_acc, 4), "train_loss": round(tr_loss, 4),
                             "init_loss": round(per_seed[seed]["start_loss"], 4),
                             "loss_alpha05": round(per_seed[seed]["loss_alpha05"], 4),
                             "max_rise": round(per_seed[seed]["max_rise"], 5),
                             "monotone": per_seed[seed]["monotone"],
                             "barrier": round(barrier, 4), "pair_mid_loss": round(mid, 4),
                             "grid_center_loss": round(float(z[b.grid // 2, b.grid // 2]), 4),
                             "grid_mean_loss": round(float(z.mean()), 4),
                             "sharpness": round(lam, 3)})
    table = pd.DataFrame(rows)
    cdf = pd.DataFrame(curves)
    cdf.to_csv(out / "interpolation.csv", index=False)
    pd.DataFrame([{"model": k, "a": float(coords[i]), "b": float(coords[j]), "train_loss": float(z[i, j])}
                  for k, z in grids.items() for i in range(b.grid) for j in range(b.grid)]).to_csv(
        out / "contour.csv", index=False)
    figs = [_plot_interpolation(cdf, out / "interpolation.png"), _plot_contour(grids, coords, out / "contour.png")]

    monotone = bool(table["monotone"].all())
    barriers = table.groupby("model")["barrier"].first()
    separated = bool((barriers > BARRIER_TOL).all())
    sharp = table.groupby("model")["sharpness"].mean()
    smoother = bool(sharp["residual"] < sharp["plain"])
    claims = {
        "init->solution path is monotone (no bump), Goodfellow et al. 2015": verdict(monotone),
        "two solutions of different seeds are separated by a barrier": verdict(separated),
        "skip connections give a lower-curvature landscape (residual conv net vs deep plain MLP)": verdict(smoother),
    }
    notes = "\n".join([
        "Claims (course §11.8; sizes and thresholds in the module docstring):",
        f"- init→solution path monotone on α ∈ [0, 1] for every net (largest rise between consecutive α "
        f"{table['max_rise'].max():.2g} nats, tolerance {BUMP_TOL}): **{claims[next(iter(claims))]}**",
        f"- barrier between the two seeds' solutions > {BARRIER_TOL} nats for every model "
        f"(plain {barriers['plain']:.3g}, residual {barriers['residual']:.3g}): "
        f"**{claims['two solutions of different seeds are separated by a barrier']}**",
        f"- lower top Hessian eigenvalue with skips (mean over seeds: residual {sharp['residual']:.3g}, "
        f"plain {sharp['plain']:.3g}; the pair differs in convolutions and BatchNorm too, and sharpness "
        f"is not invariant to rescalings of the weights): **{list(claims.values())[2]}**",
    ])
    return ExperimentResult(table=table, figures=figs, notes=notes, extra={"claims": claims})


__all__ = ["loss_landscape", "filter_normalized_direction", "filter_norms", "interpolate", "loss_and_accuracy",
           "sharpness", "InitCapture", "QUICK", "FULL"]
