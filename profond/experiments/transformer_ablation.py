r"""Ablation study of the Transformer text classifier (course §7.9, table 7.1, remark 7.12).

``transformer-ablation`` has two parts:

(a) Table 7.1's twelve rows, every one the ``fortune-topics-transformer`` recipe (encoder of
    course §7.2, [CLS] pooling, AdamW, linear warm-up then cosine decay) with only
    ``model.norm_first`` / ``model.num_layers`` / ``model.num_heads`` / ``model.d_ff``
    changed, through the one loop (method ``text-classifier``). The course trains on IMDB
    (2 classes, reviews); it is not available offline, so the substitute is
    ``fortune-topics`` (12 topics of English fortunes, BPE tokens): the accuracies are not
    comparable in level, only in their ordering. Rows other than "Base (Pre-Norm)" change one
    factor of the first row, "Base (Post-Norm)" (eq. 7.9), as the table lists them. Each row
    is trained with :attr:`Budget.seeds` seeds (model initialisation and batch order); the
    table holds the parameter count of the built model, the mean and standard deviation over
    seeds of the test accuracy, the mean macro-F1 (12 classes: rare topics weigh as much as
    frequent ones), the mean training seconds and the course's accuracy (IMDB, %).
(b) The instability of Post-Norm without warm-up: Post-Norm (eq. 7.9) and Pre-Norm
    (eq. 7.10), each with a constant learning rate (no warm-up) and with the recipe's
    warm-up + cosine, at :attr:`Budget.unstable_lr` (larger than the recipe's); the training
    loss of every optimizer step is recorded by a loop callback (the run folders only log
    per-epoch metrics) into ``warmup_steps.csv`` and drawn in ``warmup_loss.png``.

The notes judge remark 7.12's four claims from the numbers, with margins of two binomial
standard errors of the test accuracy (:func:`~profond.experiments.two_se`): (1) Pre-Norm beats
Post-Norm without a fine warm-up (part (b): the constant-lr Pre-Norm run's test accuracy above
the constant-lr Post-Norm one by more than 2 SE, and in table 7.1's base rows Pre-Norm not
below Post-Norm by more than 2 SE); (2) more than 6 layers adds little (8 layers at most
2 SE above 6 layers); (3) ``d_ff`` matters significantly (its four values span more than
2 SE); (4) one head is clearly insufficient (below the best of 2, 4 and 8 heads by more than
2 SE). Part (b) is judged too: without warm-up Post-Norm ends with a higher training loss
(mean of the last fifth of its steps) than both Post-Norm with warm-up and Pre-Norm without,
by more than two standard errors of those means.

``--quick`` (CI): the same twelve rows and four warm-up runs with ``d_model = 16`` and every
``d_ff`` divided by 8, no dropout, at most 12 texts per topic, characters (no BPE to fit) cut to
32, one seed, one thread, one epoch (three for part (b), the first one of warm-up): it checks
the plumbing, not the claims.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..contract import Callback  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, finite, run_training, two_se, verdict  # noqa: E402

RECIPE = "fortune-topics-transformer"


@dataclass(frozen=True)
class Config:
    name: str
    layers: int
    heads: int
    d_ff: int
    norm_first: bool
    course_accuracy: float  # table 7.1, IMDB test accuracy (%)


#: table 7.1, in the course's order
CONFIGS: tuple[Config, ...] = (
    Config("Base (Post-Norm)", 4, 4, 512, False, 86.3),
    Config("Base (Pre-Norm)", 4, 4, 512, True, 87.1),
    Config("1 layer", 1, 4, 512, False, 82.5),
    Config("2 layers", 2, 4, 512, False, 85.4),
    Config("6 layers", 6, 4, 512, False, 87.4),
    Config("8 layers", 8, 4, 512, False, 87.2),
    Config("1 head", 4, 1, 512, False, 84.8),
    Config("2 heads", 4, 2, 512, False, 86.0),
    Config("8 heads", 4, 8, 512, False, 87.3),
    Config("d_ff = 128", 4, 4, 128, False, 84.1),
    Config("d_ff = 256", 4, 4, 256, False, 85.9),
    Config("d_ff = 1024", 4, 4, 1024, False, 87.5),
)  # fmt: skip
BASE = CONFIGS[0].name
#: part (b): (norm_first, schedule) of the four warm-up runs
WARMUP_RUNS: tuple[tuple[bool, str], ...] = (
    (False, "constant"), (False, "warmup-cosine"), (True, "constant"), (True, "warmup-cosine"))
#: the training loss of a run is summarised by the mean of this last fraction of its steps
TAIL = 0.2


@dataclass(frozen=True)
class Budget:
    d_model: int
    max_len: int
    epochs: int
    seeds: int
    lr: float
    unstable_lr: float
    unstable_epochs: int
    warmup_epochs: float  # part (b)'s warm-up runs
    d_ff_div: int  # every d_ff of the table divided by this (quick: sizes scaled with d_model)
    overrides: tuple[str, ...]


FULL = Budget(d_model=64, max_len=64, epochs=3, seeds=3, lr=1e-3, unstable_lr=3e-3, unstable_epochs=2,
              warmup_epochs=0.3, d_ff_div=1, overrides=("method.baseline=false",))
QUICK = Budget(d_model=16, max_len=32, epochs=1, seeds=1, lr=1e-3, unstable_lr=1e-2, unstable_epochs=3,
               warmup_epochs=1.0, d_ff_div=8,
               overrides=("method.baseline=false", "method.tokenizer=char", "method.dataset={max_per_class: 12}",
                          "model.dropout=0.0", "train.threads=1"))


def norm_label(norm_first: bool) -> str:
    return "Pre-Norm" if norm_first else "Post-Norm"


def train_overrides(c: Config, b: Budget, seed: int) -> list[str]:
    return [f"model.d_model={b.d_model}", f"model.num_layers={c.layers}", f"model.num_heads={c.heads}",
            f"model.d_ff={c.d_ff // b.d_ff_div}", f"model.norm_first={'true' if c.norm_first else 'false'}",
            f"model.max_len={b.max_len}", f"method.max_len={b.max_len}", f"train.epochs={b.epochs}",
            f"optim.lr={b.lr}", f"train.seed={seed}", *b.overrides]


# ----------------------------------------------------------------------------------------
# (a) table 7.1


def _ablation(out: Path, b: Budget) -> pd.DataFrame:
    rows = []
    for i, c in enumerate(CONFIGS):
        runs = []
        for seed in range(b.seeds):
            res, _ = run_training(out, f"row{i:02d}-seed{seed}", train_overrides(c, b, seed), recipe=RECIPE)
            s, final = res.summary, res.summary["final"]
            runs.append({"acc": finite(final.get("test_accuracy")), "f1": finite(final.get("test_macro_f1")),
                         "train_s": float(s["train_time_s"]), "params": int(s["parameters"]["model"]["total"]),
                         "n": int(s.get("test_examples", 0))})
        accs = [r["acc"] for r in runs]
        rows.append({
            "config": c.name, "norm": norm_label(c.norm_first), "layers": c.layers, "heads": c.heads,
            "d_ff": c.d_ff // b.d_ff_div, "params": runs[0]["params"], "seeds": b.seeds,
            "test_accuracy": round(statistics.fmean(accs), 4),
            "test_accuracy_sd": round(statistics.stdev(accs), 4) if len(accs) > 1 else math.nan,
            "test_macro_f1": round(statistics.fmean(r["f1"] for r in runs), 4),
            "train_s": round(statistics.fmean(r["train_s"] for r in runs), 2),
            "test_examples": runs[0]["n"], "course_accuracy": c.course_accuracy,
        })
    return pd.DataFrame(rows)


def _plot_table(df: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8.0, 4.2))
    x = range(len(df))
    ax.errorbar(x, df.test_accuracy, yerr=df.test_accuracy_sd.fillna(0), fmt="o", capsize=3,
                label="fortune-topics (ours, mean ± sd over seeds)")
    ax2 = ax.twinx()
    ax2.plot(x, df.course_accuracy, "s", color="tab:red", alpha=0.6, label="course, IMDB (right axis, %)")
    ax.set_xticks(list(x), df.config, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy", title="Transformer ablation (course §7.9, table 7.1)")
    ax2.set_ylabel("course accuracy (%)")
    ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# (b) Post-Norm / Pre-Norm with and without warm-up


class StepLosses(Callback):
    """The training loss and learning rate of every optimizer step (the loop's metrics files
    hold one row per epoch). The loop steps the scheduler before this hook, so the rate used
    by a step is the one read after the previous step (or at the start)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._lr = math.nan

    def on_train_start(self, loop: Any) -> None:
        self._lr = loop.lr()

    def on_step_end(self, loop: Any, step: int, metrics: dict[str, float]) -> None:
        self.rows.append({"step": step, "loss": finite(metrics.get("loss")), "lr": self._lr})
        self._lr = loop.lr()


def tail_stats(losses: list[float], frac: float = TAIL) -> tuple[float, float]:
    """``(mean, standard error)`` of the last ``frac`` of a run's step losses (NaN: diverged)."""
    tail = losses[-max(2, math.ceil(frac * len(losses))):]
    if not tail or any(math.isnan(v) for v in tail):
        return math.nan, math.nan
    return statistics.fmean(tail), statistics.stdev(tail) / math.sqrt(len(tail)) if len(tail) > 1 else 0.0


def _warmup_runs(out: Path, b: Budget) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, steps = [], []
    base = Config(BASE, 4, 4, 512, False, math.nan)
    for norm_first, sched in WARMUP_RUNS:
        cb = StepLosses()
        c = Config(base.name, base.layers, base.heads, base.d_ff, norm_first, math.nan)
        over = [*train_overrides(c, b, 0), f"optim.lr={b.unstable_lr}", f"train.epochs={b.unstable_epochs}",
                f"sched.name={sched}", f"sched.warmup_epochs={0 if sched == 'constant' else b.warmup_epochs}"]
        res, _ = run_training(out, f"warmup-{norm_label(norm_first).lower()}-{sched}", over, recipe=RECIPE,
                              callbacks=[cb])
        final = res.summary["final"]
        mean, se = tail_stats([r["loss"] for r in cb.rows])
        rows.append({"norm": norm_label(norm_first), "schedule": sched, "lr": b.unstable_lr, "steps": len(cb.rows),
                     "final_loss": round(mean, 4), "final_loss_se": round(se, 4),
                     "max_loss": round(max((r["loss"] for r in cb.rows), default=math.nan), 4),
                     "test_accuracy": round(finite(final.get("test_accuracy")), 4),
                     "test_examples": int(res.summary.get("test_examples", 0))})
        steps += [{"norm": norm_label(norm_first), "schedule": sched, **r} for r in cb.rows]
    return pd.DataFrame(rows), pd.DataFrame(steps)


def _plot_warmup(steps: pd.DataFrame, lr: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for (norm, sched), g in steps.groupby(["norm", "schedule"], sort=False):
        ls = "-" if sched == "constant" else "--"
        color = "tab:red" if norm == "Post-Norm" else "tab:blue"
        smooth = g.loss.rolling(max(1, len(g) // 20), min_periods=1).mean()
        ax.plot(g.step, g.loss, ls=ls, color=color, alpha=0.2, lw=0.8)
        ax.plot(g.step, smooth, ls=ls, color=color, label=f"{norm}, {sched}")
    ax.set(xlabel="optimizer step", ylabel="training loss (cross-entropy)",
           title=f"Post-Norm vs Pre-Norm, with and without warm-up (lr {lr:g})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# verdicts


def judge(table: pd.DataFrame, warm: pd.DataFrame | None = None) -> tuple[list[str], dict[str, str]]:
    """Remark 7.12's four claims (and part (b)'s instability) against the numbers."""
    t = table.set_index("config")
    n = int(t.test_examples.iloc[0])
    acc = t.test_accuracy
    lines, v = [], {}

    def tie(p: float) -> float:
        return two_se(p, n)

    post, pre = float(acc[BASE]), float(acc["Base (Pre-Norm)"])
    table_ok = pre >= post - tie(post)
    ok1, part = None, "no warm-up runs"
    if warm is not None and len(warm):
        w = warm.set_index(["norm", "schedule"]).test_accuracy
        if ("Post-Norm", "constant") in w.index and ("Pre-Norm", "constant") in w.index:
            wpost, wpre = float(w["Post-Norm", "constant"]), float(w["Pre-Norm", "constant"])
            wn = int(warm.test_examples.iloc[0])
            gap = wpre - wpost
            ok1 = bool(gap > two_se(wpost, wn) and table_ok)
            part = (f"without warm-up (constant lr) Pre-Norm {wpre:.4f} vs Post-Norm {wpost:.4f}, "
                    f"gap {gap:+.4f} (2 SE {two_se(wpost, wn):.4f})")
    v["pre_norm_beats_post_norm_without_warmup"] = verdict(ok1)
    lines.append(f"1. Pre-Norm > Post-Norm without fine warm-up: {part}; table 7.1's base rows (with warm-up) "
                 f"Pre-Norm {pre:.4f} vs Post-Norm {post:.4f} (Pre-Norm not worse by > 2 SE: "
                 f"{'yes' if table_ok else 'no'}) → **{v['pre_norm_beats_post_norm_without_warmup']}**.")

    a6, a8 = float(acc["6 layers"]), float(acc["8 layers"])
    ok2 = a8 - a6 <= tie(a6)
    v["beyond_6_layers_adds_little"] = verdict(ok2)
    lines.append(f"2. More than 6 layers adds little: 8 layers {a8:.4f} vs 6 layers {a6:.4f}, gain "
                 f"{a8 - a6:+.4f} (at most 2 SE {tie(a6):.4f}) → **{v['beyond_6_layers_adds_little']}**.")

    dff = {128: float(acc["d_ff = 128"]), 256: float(acc["d_ff = 256"]), 512: post, 1024: float(acc["d_ff = 1024"])}
    hi, lo = max(dff, key=dff.get), min(dff, key=dff.get)
    ok3 = dff[hi] - dff[lo] > tie(dff[lo])
    v["d_ff_matters"] = verdict(ok3)
    lines.append("3. d_ff matters significantly: " + ", ".join(f"{k}: {a:.4f}" for k, a in dff.items())
                 + f"; spread {dff[hi] - dff[lo]:.4f} (d_ff {hi} vs {lo}; more than 2 SE {tie(dff[lo]):.4f}) "
                 f"→ **{v['d_ff_matters']}**.")

    heads = {2: float(acc["2 heads"]), 4: post, 8: float(acc["8 heads"])}
    best = max(heads, key=heads.get)
    one = float(acc["1 head"])
    ok4 = heads[best] - one > tie(one)
    v["one_head_insufficient"] = verdict(ok4)
    lines.append(f"4. One head is clearly insufficient: 1 head {one:.4f} vs the best of 2/4/8 heads "
                 f"{heads[best]:.4f} (h = {best}), gap {heads[best] - one:+.4f} (more than 2 SE {tie(one):.4f}) "
                 f"→ **{v['one_head_insufficient']}**.")

    if warm is not None and len(warm):
        w = warm.set_index(["norm", "schedule"])
        keys = [("Post-Norm", "constant"), ("Post-Norm", "warmup-cosine"), ("Pre-Norm", "constant")]
        if all(k in w.index for k in keys):
            (m0, s0), (m1, s1), (m2, s2) = ((float(w.final_loss[k]), float(w.final_loss_se[k])) for k in keys)
            worse_than = [m0 - m > 2 * math.hypot(s0, s) for m, s in ((m1, s1), (m2, s2))]
            diverged = math.isnan(m0) and not (math.isnan(m1) or math.isnan(m2))
            ok5 = diverged or all(worse_than)
            v["post_norm_unstable_without_warmup"] = verdict(ok5)
            lines.append(f"Part (b), Post-Norm is unstable without warm-up: final training loss (mean of the last "
                         f"{TAIL:.0%} of steps ± SE) Post-Norm constant {m0:.4f} ± {s0:.4f}, Post-Norm warm-up "
                         f"{m1:.4f} ± {s1:.4f}, Pre-Norm constant {m2:.4f} ± {s2:.4f} (higher than both by more "
                         f"than 2 SE, or diverged alone) → **{v['post_norm_unstable_without_warmup']}**.")
    return lines, v


# ----------------------------------------------------------------------------------------


@EXPERIMENTS.register("transformer-ablation", help="table 7.1: Post/Pre-Norm, layers, heads, d_ff of a "
                      "Transformer text classifier, and Post-Norm without warm-up (§7.9, remark 7.12)")
def transformer_ablation(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    table = _ablation(out, b)
    warm, steps = _warmup_runs(out, b)
    warm.to_csv(out / "warmup.csv", index=False)
    steps.to_csv(out / "warmup_steps.csv", index=False)
    figures = [_plot_table(table, out / "ablation.png"), _plot_warmup(steps, b.unstable_lr, out / "warmup_loss.png")]
    claims, verdicts = judge(table, warm)
    notes = "\n\n".join([
        f"Data: fortune-topics (12 topics, {'characters' if quick else 'BPE'}), an offline substitute for the "
        f"course's IMDB: compare the ordering of the rows, not the levels. Recipe {RECIPE} with d_model "
        f"{b.d_model}, texts cut to {b.max_len} tokens, {b.epochs} epoch(s), lr {b.lr:g}, {b.seeds} seed(s) per "
        f"row (model initialisation and batch order); rows other than the Pre-Norm base change one factor of "
        f"{BASE}. Margins: 2 binomial SE of the test accuracy ({int(table.test_examples.iloc[0])} texts).",
        f"Part (b): 4 layers, 4 heads, d_ff {512 // b.d_ff_div}, lr {b.unstable_lr:g}, {b.unstable_epochs} "
        f"epoch(s), constant (no warm-up) vs warmup-cosine ({b.warmup_epochs:g} epoch(s) of warm-up); per-step "
        f"losses in warmup_steps.csv, warmup_loss.png.",
        "Remark 7.12, judged from the numbers:\n\n" + "\n".join(claims),
    ])
    extra = {"claims": verdicts, "warmup_runs": warm.to_dict(orient="records"),
             "budget": {"d_model": b.d_model, "max_len": b.max_len, "epochs": b.epochs, "seeds": b.seeds,
                        "lr": b.lr, "unstable_lr": b.unstable_lr, "unstable_epochs": b.unstable_epochs}}
    return ExperimentResult(table=table, figures=figures, notes=notes, extra=extra)
