"""Lottery tickets by iterative magnitude pruning (issue 19, course §11.7): ``lottery-ticket``.

Course §11.7, theorem 11.17 (Frankle & Carbin 2019, the lottery ticket hypothesis): a randomly
initialised dense net contains a sub-network (the *winning ticket*) that, trained in isolation
from the *same* initial weights, reaches the accuracy of the full net in a comparable number of
iterations. Remark 11.18: the ticket is found by iterative magnitude pruning (IMP) — train,
remove the weights of smallest magnitude, reset the survivors to their initial values, repeat.

The experiment runs IMP on an ``mlp`` (LeNet-300-100 in full mode): round 0 trains the dense
net; round r ≥ 1 removes 20% of the weights that remain in each layer (the output layer at half
that rate, 10%, as Frankle & Carbin do for LeNet; masks of :mod:`profond.metrics.pruning`,
over the Linear weights only, biases never pruned), so after r rounds about ``0.8^r`` of the
weights are left. Each round trains four nets at the same sparsity:

* ``ticket`` — the mask of this IMP chain, weights rewound to the original initialisation θ₀;
* ``rewind`` — an IMP chain of its own that rewinds to the weights θ_k of the dense run after
  k steps instead of θ₀ ("late resetting", Frankle et al. 2019); its training budget is the
  same number of epochs as every other run;
* ``reinit`` — the ``ticket`` mask with a fresh random initialisation (same distribution,
  PyTorch's default, another seed): the control that tells whether θ₀ matters;
* ``random`` — a random mask with the ``ticket`` mask's number of weights in each layer, from
  θ₀: the control that tells whether the mask matters.

Every training goes through the one loop (:func:`~profond.experiments.run_training`) with a
:class:`MaskCallback` that loads the starting weights times the mask at ``on_train_start``,
multiplies the weights by the mask after every optimizer step (so pruned weights stay exactly 0
although Adam's moments would move them), snapshots the weights after step k (the rewind
point), and records validation loss / accuracy and test accuracy at the end of each epoch. The
*early-stopping iteration* is the step of the epoch of minimum validation loss (Frankle &
Carbin's measure of learning speed), and ``test_accuracy`` is the test accuracy at that epoch;
``final_test_accuracy`` is the loop's at the end of training. All runs share ``train.seed=0``:
same initialisation θ₀, same validation split, same order of batches.

Claims judged (anchor: Frankle & Carbin, LeNet-300-100 on MNIST) at the ticket round nearest
the anchor's fraction (only when it is within a factor 1.25 of it; otherwise "not tested"):
at ~21% the ticket reaches at least the dense accuracy (within two binomial standard errors of
the test set) and its early-stopping iteration is earlier than the dense net's; at ~3.6% it is
back to about the dense accuracy (within two standard errors); tickets beat the random
re-initialisation of their mask (mean test-accuracy gap > 0 over the rounds with ≤ 50% of the
weights left, and a positive gap at the sparsest round). The notes say where each curve
crosses the dense accuracy (log-linear interpolation between the two rounds around it).

Budgets: ``--quick`` (CI): sklearn digits (8x8; 1,238 training images after 200 are held out
for validation, 359 test images), ``mlp`` 64-32, batch 64, 5 epochs (20 steps each), Adam 3e-3,
4 rounds (down to 42% of the weights: the 21% and 3.6% claims are "not tested" there, and every
run's validation loss is still falling at its last epoch, so the early-stop iteration is that
epoch's), rewind to step 10, one thread (17 trainings). Full: Fashion-MNIST, and MNIST
when its files load (skipped with a note otherwise), LeNet-300-100, batch 60, 12 epochs (917
steps each), Adam 1.2e-3 (Frankle & Carbin's optimizer for LeNet), 17 rounds (down to ~2%),
rewind to step 500, two threads: 69 trainings per data set (hours on a 2-core CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..contract import Callback  # noqa: E402
from ..metrics.pruning import (  # noqa: E402
    apply_masks,
    full_masks,
    layer_fractions,
    magnitude_masks,
    random_masks,
    remaining_fraction,
)
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, optional_dataset, run_training, two_se, verdict  # noqa: E402


@dataclass(frozen=True)
class Budget:
    widths: list[int]
    batch: int
    epochs: int
    lr: float
    rounds: int
    rewind_step: int
    threads: int
    val_size: int


QUICK = Budget(widths=[64, 32], batch=64, epochs=5, lr=3e-3, rounds=4, rewind_step=10, threads=1, val_size=200)
FULL = Budget(widths=[300, 100], batch=60, epochs=12, lr=1.2e-3, rounds=17, rewind_step=500, threads=2,
              val_size=5000)
#: fraction of the remaining weights removed per round (course remark 11.18; Frankle & Carbin's 20%)
RATE = 0.2
#: the output layer is pruned at half the rate (Frankle & Carbin, LeNet)
HEAD_RATE = 0.1
VARIANTS = ("ticket", "rewind", "reinit", "random")
#: Frankle & Carbin's anchors (fraction of weights remaining)
ANCHOR_BETTER, ANCHOR_BACK = 0.21, 0.036
#: a round is "at" an anchor when its fraction is within this factor of it
ANCHOR_FACTOR = 1.25


class MaskCallback(Callback):
    """Masked training through the loop: start from ``init`` (a state dict; ``None``: the net's
    own initialisation) times ``masks``; with ``reinit_seed``, draw a fresh initialisation first
    (``reset_parameters`` of every layer under that seed, the RNG of the run untouched); keep the
    pruned weights at exactly 0 after every step; copy the weights after step ``snapshot_step``;
    record ``val_loss``, ``val_accuracy`` and ``test_accuracy`` after each epoch; copy the final
    weights when training ends."""

    def __init__(self, init: Mapping[str, torch.Tensor] | None = None, masks: Mapping[str, torch.Tensor] | None = None,
                 *, reinit_seed: int | None = None, snapshot_step: int | None = None):
        self.init, self.masks, self.reinit_seed, self.snapshot_step = init, masks, reinit_seed, snapshot_step
        self.start: dict[str, torch.Tensor] | None = None  # the weights of step 0 (after masking)
        self.snapshot: dict[str, torch.Tensor] | None = None
        self.final: dict[str, torch.Tensor] | None = None
        self.epochs: list[dict[str, float]] = []
        self._test: Any = None
        self.dense_masks: dict[str, torch.Tensor] = {}

    @staticmethod
    def _net(loop: Any) -> torch.nn.Module:
        return loop.method.raw_nets["model"]

    @staticmethod
    def _copy(net: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}

    def on_train_start(self, loop: Any) -> None:
        if loop.step != 0:
            raise RuntimeError("MaskCallback: a resumed run cannot restart from the ticket's weights")
        net = self._net(loop)
        if self.init is not None:
            net.load_state_dict(self.init)
        if self.reinit_seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.reinit_seed)
                for m in net.modules():
                    if m is not net and hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        if self.masks is not None:
            apply_masks(net, self.masks)
        self.dense_masks = full_masks(net)
        self.start = self._copy(net)
        self._test = loop.method.test_data()

    def on_step_end(self, loop: Any, step: int, metrics: dict[str, float]) -> None:
        if self.masks is not None:
            apply_masks(self._net(loop), self.masks)
        if step == self.snapshot_step:
            self.snapshot = self._copy(self._net(loop))

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        test = loop.evaluate(self._test) if self._test is not None else {}
        self.epochs.append({"epoch": epoch + 1, "step": int(metrics["step"]),
                            "val_loss": float(metrics.get("val_loss", math.nan)),
                            "val_accuracy": float(metrics.get("val_accuracy", math.nan)),
                            "test_accuracy": float(test.get("accuracy", math.nan))})

    def on_train_end(self, loop: Any) -> None:
        self.final = self._copy(self._net(loop))

    def early_stop(self) -> dict[str, float]:
        """The epoch of minimum validation loss: its step, and the accuracies there."""
        best = min(self.epochs, key=lambda r: r["val_loss"])
        return {"early_stop_step": best["step"], "early_stop_epoch": best["epoch"],
                "val_accuracy": best["val_accuracy"], "test_accuracy": best["test_accuracy"],
                "best_val_accuracy": max(r["val_accuracy"] for r in self.epochs)}


def _rates(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """20% per layer, the output layer (``head``) 10%."""
    return {k: HEAD_RATE if k.startswith("head.") else RATE for k in masks}


def _train(out: Path, name: str, dataset: str, b: Budget, cb: MaskCallback) -> dict[str, Any]:
    overrides = [f"data.name={dataset}", f"data.val_size={b.val_size}", f"data.batch_size={b.batch}",
                 f"model.widths=[{','.join(map(str, b.widths))}]", f"optim.lr={b.lr}",
                 f"train.epochs={b.epochs}", f"train.threads={b.threads}"]
    res, wall = run_training(out, name, overrides, callbacks=[cb])
    if cb.final is None or not cb.epochs:
        raise RuntimeError(f"{name}: the run did not finish ({res.summary.get('status')})")
    return {**cb.early_stop(), "final_test_accuracy": float(res.summary["final"].get("test_accuracy", math.nan)),
            "train_s": round(float(res.summary["train_time_s"]), 2), "wall_s": round(wall, 2),
            "test_examples": int(res.summary.get("test_examples") or 0)}


def _check_zero(state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], name: str) -> None:
    for k, m in masks.items():
        if bool((state[k][~m] != 0).any()):
            raise RuntimeError(f"{name}: pruned weights of {k} are not zero after training")


def imp_table(out: Path, dataset: str, b: Budget) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """All rounds of IMP on ``dataset``: the dense row, then one row per variant and round;
    and the last round's ticket masks."""
    rows: list[dict[str, Any]] = []
    dense = MaskCallback(snapshot_step=b.rewind_step)
    r0 = _train(out, f"{dataset}-dense", dataset, b, dense)
    assert dense.start is not None and dense.final is not None
    if dense.snapshot is None:
        raise RuntimeError(f"the dense run has fewer than {b.rewind_step} steps: lower rewind_step")
    theta0, theta_k = dense.start, dense.snapshot
    masks0 = dense.dense_masks
    base = {"dataset": dataset, "round": 0, "remaining": 1.0}
    rows.append({**base, "variant": "dense", **r0})
    chain = {"ticket": (masks0, dense.final), "rewind": (masks0, dense.final)}
    g = torch.Generator().manual_seed(0)
    for rnd in range(1, b.rounds + 1):
        new = {}
        # course §11.7, remark 11.18: one IMP round per chain, pruning the smallest magnitudes of its own
        # trained weights, then resetting the survivors (to θ0, or to θ_k for the rewind chain)
        for v in ("ticket", "rewind"):
            m_prev, w_prev = chain[v]
            new[v] = magnitude_masks({k: w_prev[k] for k in m_prev}, m_prev, _rates(m_prev))
        rand = random_masks(new["ticket"], g)
        runs = {"ticket": MaskCallback(theta0, new["ticket"]),  # theorem 11.17: same initial weights θ0
                "rewind": MaskCallback(theta_k, new["rewind"]),
                "reinit": MaskCallback(theta0, new["ticket"], reinit_seed=1000 + rnd),
                "random": MaskCallback(theta0, rand)}
        for v, cb in runs.items():
            r = _train(out, f"{dataset}-r{rnd:02d}-{v}", dataset, b, cb)
            assert cb.masks is not None and cb.final is not None
            _check_zero(cb.final, cb.masks, f"{dataset} round {rnd} {v}")
            rows.append({**base, "round": rnd, "remaining": round(remaining_fraction(cb.masks), 5), "variant": v, **r})
            if v in chain:
                chain[v] = (cb.masks, cb.final)
    return pd.DataFrame(rows), chain["ticket"][0]


def crossing(pruned: pd.DataFrame, level: float) -> float | None:
    """Where the accuracy curve of the pruned rounds (rows ``remaining``, ``test_accuracy``)
    falls below ``level`` for good: the remaining fraction found by log-linear interpolation
    between the last round at or above ``level`` and the next (sparser) one. ``None`` when no
    pruned round reaches ``level``; ``0.0`` when the sparsest round is still at or above it."""
    pts = sorted(zip(pruned["remaining"], pruned["test_accuracy"], strict=True), reverse=True)
    above = [i for i, (_, a) in enumerate(pts) if a >= level]
    if not above:
        return None
    i = above[-1]
    if i == len(pts) - 1:
        return 0.0
    (f1, a1), (f2, a2) = pts[i], pts[i + 1]
    t = (a1 - level) / max(a1 - a2, 1e-12)
    return float(math.exp(math.log(f1) + t * (math.log(f2) - math.log(f1))))


def _nearest(t: pd.DataFrame, variant: str, target: float) -> pd.Series | None:
    sub = t[t["variant"] == variant]
    row = sub.iloc[int(np.argmin(np.abs(np.log(sub["remaining"].to_numpy()) - math.log(target))))]
    return row if max(row["remaining"] / target, target / row["remaining"]) <= ANCHOR_FACTOR else None


def judge(t: pd.DataFrame) -> tuple[dict[str, str], dict[str, Any], list[str]]:
    """The claims on one data set's table: verdicts, the numbers behind them, note lines."""
    d = t[t["variant"] == "dense"].iloc[0]
    dense_acc, dense_step = float(d["test_accuracy"]), int(d["early_stop_step"])
    tol = two_se(dense_acc, int(d["test_examples"]))
    nums: dict[str, Any] = {"dense_test_accuracy": dense_acc, "dense_early_stop_step": dense_step, "two_se": tol}
    lines = [f"- dense: test accuracy {dense_acc:.4f} (2 SE = {tol:.4f}), early-stop iteration {dense_step}"]
    at21, at36 = _nearest(t, "ticket", ANCHOR_BETTER), _nearest(t, "ticket", ANCHOR_BACK)
    acc21 = None if at21 is None else bool(at21["test_accuracy"] >= dense_acc - tol)
    fast21 = None if at21 is None else bool(at21["early_stop_step"] < dense_step)
    back36 = None if at36 is None else bool(abs(at36["test_accuracy"] - dense_acc) <= tol)
    for label, row in (("~21%", at21), ("~3.6%", at36)):
        if row is None:
            lines.append(f"- ticket at {label}: no round within a factor {ANCHOR_FACTOR} of it (sparsest "
                         f"{t['remaining'].min():.3g}): not tested")
        else:
            lines.append(f"- ticket at {row['remaining']:.3g} ({label}): test accuracy {row['test_accuracy']:.4f}, "
                         f"early-stop iteration {int(row['early_stop_step'])}")
            nums[f"ticket_{label}"] = {"remaining": float(row["remaining"]), "test_accuracy": float(row["test_accuracy"]),
                                       "early_stop_step": int(row["early_stop_step"])}
    tk = t[t["variant"] == "ticket"].set_index("round")
    ri = t[t["variant"] == "reinit"].set_index("round")
    rp = t[t["variant"] == "random"].set_index("round")
    sparse = tk.index[tk["remaining"] <= 0.5]
    if len(sparse):
        gap = tk.loc[sparse, "test_accuracy"] - ri.loc[sparse, "test_accuracy"]
        gap_rand = tk.loc[sparse, "test_accuracy"] - rp.loc[sparse, "test_accuracy"]
        beats = bool(gap.mean() > 0 and gap.iloc[-1] > 0)
        beats_rand = bool(gap_rand.mean() > 0 and gap_rand.iloc[-1] > 0)
        nums.update({"gap_vs_reinit_mean": float(gap.mean()), "gap_vs_reinit_sparsest": float(gap.iloc[-1]),
                     "gap_vs_random_mean": float(gap_rand.mean()), "gap_vs_random_sparsest": float(gap_rand.iloc[-1])})
        lines.append(f"- ticket − reinit test accuracy over the {len(sparse)} round(s) with ≤ 50% left: mean "
                     f"{gap.mean():+.4f}, at the sparsest ({tk.loc[sparse[-1], 'remaining']:.3g}) {gap.iloc[-1]:+.4f}; "
                     f"ticket − random pruning: mean {gap_rand.mean():+.4f}, sparsest {gap_rand.iloc[-1]:+.4f}")
    else:
        beats = beats_rand = None
    cross = {}
    for v in VARIANTS:
        c = crossing(t[t["variant"] == v], dense_acc)
        cross[v] = c
        lines.append(f"- {v}: " + ("below the dense accuracy from the first round on" if c is None else
                                   "never falls below the dense accuracy down to "
                                   f"{t['remaining'].min():.3g}" if c == 0.0 else
                                   f"crosses the dense accuracy at ≈ {c:.3g} of the weights"))
    nums["crosses_dense_at"] = cross
    claims = {
        "winning ticket at ~21% reaches at least the dense accuracy": verdict(acc21),
        "winning ticket at ~21% learns faster (earlier early-stop iteration)": verdict(fast21),
        "winning ticket at ~3.6% falls back to about the dense accuracy": verdict(back36),
        "tickets beat random re-initialisation at the same sparsity": verdict(beats),
        "tickets beat random pruning at the same sparsity": verdict(beats_rand),
    }
    return claims, nums, lines


def _plot(table: pd.DataFrame, path: Path) -> Path:
    sets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(len(sets), 2, figsize=(12, 4.2 * len(sets)), squeeze=False)
    colors = {"ticket": "tab:blue", "rewind": "tab:green", "reinit": "tab:orange", "random": "tab:red"}
    for (ax_acc, ax_it), ds in zip(axes, sets, strict=True):
        t = table[table["dataset"] == ds]
        d = t[t["variant"] == "dense"]
        for v in VARIANTS:
            sub = pd.concat([d, t[t["variant"] == v]]).sort_values("remaining", ascending=False)
            ax_acc.plot(sub["remaining"] * 100, sub["test_accuracy"], "o-", ms=3, color=colors[v], label=v)
            ax_it.plot(sub["remaining"] * 100, sub["early_stop_step"], "o-", ms=3, color=colors[v], label=v)
        ax_acc.axhline(float(d["test_accuracy"].iloc[0]), color="gray", ls=":", label="dense")
        ax_it.axhline(float(d["early_stop_step"].iloc[0]), color="gray", ls=":", label="dense")
        ticks = sorted(set(t["remaining"] * 100), reverse=True)[::2]
        for ax, yl in ((ax_acc, "test accuracy (at early stop)"), (ax_it, "early-stop iteration (min val loss)")):
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{x:.3g}" for x in ticks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.invert_xaxis()
            ax.set_xlabel("weights remaining (%)")
            ax.set_ylabel(yl)
            ax.set_title(ds, fontsize=10)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
    fig.suptitle("Iterative magnitude pruning: winning tickets vs controls (course §11.7, Frankle & Carbin 2019)")
    return save_figure(fig, path)


@EXPERIMENTS.register("lottery-ticket", help="iterative magnitude pruning: winning tickets, rewinding, random "
                      "re-init and random pruning vs remaining weights (§11.7)")
def lottery_ticket(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    skipped: list[str] = []
    if quick:
        sets = ["digits"]
    else:
        sets = ["fashion-mnist"]
        why = optional_dataset("mnist")[1]
        sets += ["mnist"] if why is None else []
        skipped += [why] if why else []
    tables, claims_by, nums_by, lines, fractions = [], {}, {}, [], {}
    with num_threads(b.threads):
        for ds in sets:
            t, last = imp_table(out, ds, b)
            fractions[ds] = {k: round(f, 5) for k, f in layer_fractions(last).items()}
            tables.append(t)
            claims, nums, ls = judge(t)
            claims_by[ds], nums_by[ds] = claims, nums
            lines += [f"**{ds}**", *ls, *[f"- {c}: **{v}**" for c, v in claims.items()], ""]
    table = pd.concat(tables, ignore_index=True)
    table.insert(3, "remaining_pct", (table["remaining"] * 100).round(2))
    fig = _plot(table, out / "lottery.png")
    notes = "\n".join([
        f"IMP, {int(RATE * 100)}% of the remaining weights per round per layer (output layer {int(HEAD_RATE * 100)}%), "
        f"mlp {'-'.join(map(str, b.widths))}, {b.epochs} epochs of batch {b.batch}, Adam {b.lr}, rewind to step "
        f"{b.rewind_step}; test accuracy at the early-stopping epoch (min val loss). Claims (course §11.7; anchors of "
        "Frankle & Carbin on MNIST; thresholds in the module docstring):", "", *lines, *skipped])
    first = claims_by[sets[0]]
    return ExperimentResult(table=table, figures=[fig], notes=notes,
                            extra={"claims": first, "claims_by_dataset": claims_by, "numbers": nums_by,
                                   "skipped": skipped, "ticket_layer_fractions_last_round": fractions})


__all__ = ["lottery_ticket", "MaskCallback", "imp_table", "judge", "crossing", "QUICK", "FULL", "RATE", "HEAD_RATE"]
