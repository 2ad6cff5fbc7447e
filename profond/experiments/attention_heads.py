r"""Number of heads and dimension per head (course §6.11, remark 6.10, exercise 6.3).

``attention-heads`` has four parts:

(a) The table of §6.11: :class:`~profond.nn.attention.MultiHeadAttention` (no biases, as in
    remark 6.10, default ``impl``: PyTorch's SDPA kernel) for the nine ``(d_model, h)`` of the
    course, with its input shapes (batch 32, length 128): the real parameter count, next to
    the closed form ``4 d_model²`` (the projections ``W_Q, W_K, W_V, W_O``, eq. 6.12-6.13),
    and the median wall time of one forward pass on one CPU thread (the course timed a GPU;
    its numbers are in the ``course_*`` columns). The file is ``mha_benchmark.csv``.
(b) Exercise 6.3.1-2: the self-attention text classifier ``attn-classifier`` at
    ``d_model = 256`` with ``h ∈ {1, 2, 4, 8, 16}`` (so ``d_k = d_model / h`` from 256 to 16;
    the full mode adds ``h = 32``, ``d_k = 8``, to test remark 6.10's third observation) on
    ``fortune-topics`` (BPE tokens) and ``fortune-languages`` (characters), every run with the
    same budget through the one loop (``text-classifier`` method): test accuracy, best
    validation accuracy, convergence speed (the first epoch, and its optimizer step, whose
    validation accuracy reaches :data:`CONVERGED` of the run's best) and training time. This
    is the experiment's main table.
(c) Exercise 6.3.3: the attention maps of every head of the best run of each dataset (by
    validation accuracy) on short test texts, drawn by
    :func:`profond.viz.attention.draw_attention_maps` (``maps_<dataset>_<i>.png``), and per head,
    averaged over validation texts, the entropy of its rows (in nats: ``log T`` is uniform
    attention, 0 a single token), the mean distance ``Σ_j α_ij |i - j|`` it looks at, and its
    largest cosine similarity to another head of the same layer (near 1: the same pattern);
    the file is ``heads.csv``.
(d) Exercise 6.3.4: head pruning of the ``h = 8`` run (the largest ``h`` in quick mode). The
    importance of a head is the drop of validation accuracy when that head alone is masked
    (``set_head_mask``); heads are then removed least important first and the validation and
    test accuracies measured for every number of heads kept (``pruning.csv``,
    ``pruning.png``). Importance is measured on validation only, so the test column is not
    selected on.

The notes judge the four observations of remark 6.10 from the numbers (each "holds" or
"does not hold", or "not tested" when the run lacks what it needs): (1) the parameter count
does not depend on ``h`` (every ``d_model = 512`` row equals ``4 d_model²``); (2) the time is
nearly constant in ``h`` (``h ≤ 16`` within :data:`FLAT_TIME` of their median) with a slight
rise at ``h = 32`` (slower than every ``h ≤ 16``, by less than 50 %); (3) ``d_k < 16`` is too
small (``h = 32``, ``d_k = 8``, more than 2 standard errors below the best test accuracy of
its dataset, on both datasets); (4) ``h = 8`` is a good default (within 2 standard errors of
the best on both datasets; at ``d_model = 256`` this is ``d_k = 32``, not the Transformer's
64). Exercise 6.3.4's redundancy is judged too: at least one head of the pruned run can be
removed costing at most 2 standard errors of validation accuracy.

``--quick`` (CI): part (a) with batch 4, length 32 and 2 timed runs; part (b) with
``h ∈ {1, 4}``, ``d_model = 32``, 20 texts per class, 32 characters, one epoch; (c) and (d) on
those runs. It checks the plumbing, not the claims.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, finite, num_threads, run_training, to_markdown, two_se, verdict  # noqa: E402

#: the nine configurations of the §6.11 table with the course's params and GPU time (ms)
COURSE_TABLE: tuple[tuple[int, int, int, float], ...] = (
    (512, 1, 1048576, 3.24), (512, 2, 1048576, 3.18), (512, 4, 1048576, 3.15),
    (512, 8, 1048576, 3.21), (512, 16, 1048576, 3.34), (512, 32, 1048576, 3.82),
    (256, 8, 262144, 1.12), (768, 8, 2359296, 6.45), (1024, 8, 4194304, 10.87),
)  # fmt: skip
#: a run has converged at the first epoch whose validation accuracy reaches this fraction of its best
CONVERGED = 0.9
#: remark 6.10 (2): times for h <= 16 within this relative distance of their median count as constant
FLAT_TIME = 0.25
DATASETS = ("fortune-topics", "fortune-languages")


@dataclass(frozen=True)
class Budget:
    batch: int  # part (a) shapes
    length: int
    runs: int
    warmup: int
    d_model: int  # part (b)
    heads: tuple[int, ...]
    epochs: int
    prune_heads: int
    examples: int  # texts drawn in part (c)
    baseline: bool  # fit the TF-IDF baseline in each dataset's first run
    overrides: dict[str, tuple[str, ...]]


_COMMON = ("model.num_layers=1", "model.pos=learned", "model.pool=mean", "model.dropout=0.1",
           "optim.name=adamw", "optim.lr=0.001", "optim.weight_decay=0.05", "sched.name=cosine",
           "data.batch_size=32", "data.eval_batch_size=256", "train.clip_grad_norm=1.0")
FULL = Budget(
    batch=32, length=128, runs=50, warmup=5, d_model=256, heads=(1, 2, 4, 8, 16, 32), epochs=6,
    prune_heads=8, examples=2, baseline=True, overrides={
        "fortune-topics": (*_COMMON, "model.d_ff=512", "model.max_len=128", "method.tokenizer=bpe",
                           "method.max_len=128"),
        "fortune-languages": (*_COMMON, "model.d_ff=512", "model.max_len=128", "method.tokenizer=char",
                              "method.max_len=100", "method.dataset={max_per_class: 1000}"),
    })
QUICK = Budget(
    batch=4, length=32, runs=2, warmup=1, d_model=32, heads=(1, 4), epochs=1, prune_heads=4, examples=1, baseline=False,
    overrides={ds: (*_COMMON, "model.d_ff=64", "model.max_len=32", "method.tokenizer=char", "method.max_len=32",
                    "method.dataset={max_per_class: 20}") for ds in DATASETS})


# ----------------------------------------------------------------------------------------
# (a) parameters and time of MultiHeadAttention


def mha_params_formula(d_model: int) -> int:
    """``4 d_model²``: W_Q, W_K, W_V, W_O without biases (remark 6.10), whatever ``h``."""
    return 4 * d_model * d_model


def time_forward(module: torch.nn.Module, x: torch.Tensor, runs: int, warmup: int) -> float:
    """Median wall milliseconds of ``module(x)`` (self-attention) over ``runs`` after ``warmup``."""
    times = []
    with torch.no_grad():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            module(x)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def mha_benchmark(b: Budget, threads: int = 1) -> pd.DataFrame:
    """Part (a): one row per §6.11 configuration (params, formula, median time, course's numbers)."""
    from ..nn.attention import MultiHeadAttention

    rows = []
    with num_threads(threads):
        for d_model, h, c_params, c_ms in COURSE_TABLE:
            torch.manual_seed(0)
            mha = MultiHeadAttention(d_model, h).eval()
            x = torch.randn(b.batch, b.length, d_model)  # (B, N, d)
            params = sum(p.numel() for p in mha.parameters())
            rows.append({"d_model": d_model, "num_heads": h, "d_k": d_model // h, "params": params,
                         "params_4d2": mha_params_formula(d_model),
                         "time_ms": round(time_forward(mha, x, b.runs, b.warmup), 3),
                         "course_params": c_params, "course_time_ms": c_ms})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------
# (b) training


def convergence(history: list[dict[str, Any]], frac: float = CONVERGED) -> tuple[float, float]:
    """``(epoch, step)`` of the first evaluation reaching ``frac`` of the run's best validation
    accuracy (the loop's epochs, counted from 1); NaNs when the run has no validation accuracy."""
    rows = [r for r in history if isinstance(r.get("val_accuracy"), (int, float))]
    if not rows:
        return math.nan, math.nan
    best = max(float(r["val_accuracy"]) for r in rows)
    for r in rows:
        if float(r["val_accuracy"]) >= frac * best:
            return float(r["epoch"]), float(r["step"])
    return math.nan, math.nan  # pragma: no cover - the best row always qualifies


def train_overrides(dataset: str, h: int, b: Budget, baseline: bool) -> list[str]:
    return ["model.name=attn-classifier", f"model.d_model={b.d_model}", f"model.num_heads={h}",
            f"data.name={dataset}", "method.name=text-classifier", f"train.epochs={b.epochs}",
            f"method.baseline={'true' if baseline else 'false'}", *b.overrides[dataset]]


def _train_all(out: Path, b: Budget) -> tuple[pd.DataFrame, dict[tuple[str, int], Path], dict[str, float]]:
    rows, runs, baselines = [], {}, {}
    for dataset in DATASETS:
        for i, h in enumerate(b.heads):
            res, wall = run_training(out, f"{dataset}-h{h}", train_overrides(dataset, h, b, baseline=b.baseline and i == 0))
            s, final = res.summary, res.summary["final"]
            if i == 0:
                baselines[dataset] = finite(final.get("test_baseline_accuracy"))
            vals = [float(r["val_accuracy"]) for r in res.history if isinstance(r.get("val_accuracy"), (int, float))]
            ep, step = convergence(res.history)
            runs[(dataset, h)] = res.run_dir
            rows.append({
                "dataset": dataset, "num_heads": h, "d_k": b.d_model // h,
                "params": int(s["parameters"]["model"]["total"]),
                "test_accuracy": round(finite(final.get("test_accuracy")), 4),
                "test_macro_f1": round(finite(final.get("test_macro_f1")), 4),
                "best_val_accuracy": round(max(vals), 4) if vals else math.nan,
                f"epoch_to_{int(CONVERGED * 100)}pct": ep, f"step_to_{int(CONVERGED * 100)}pct": step,
                "train_s": round(s["train_time_s"], 1), "wall_s": round(wall, 1),
                "test_examples": int(s.get("test_examples", 0)),
            })
    return pd.DataFrame(rows), runs, baselines


# ----------------------------------------------------------------------------------------
# (c) attention maps and per-head statistics


def _load(run_dir: Path) -> tuple[Any, Any]:
    from ..train.loop import load_run

    method, trainer = load_run(run_dir, device="cpu")
    method.opts.baseline = False  # masked / pruned evaluations: the model only
    return method, trainer


def _token_labels(method: Any, ids: list[int]) -> list[str]:
    tok = method.tokenizer
    return [tok.token(i) if hasattr(tok, "token") else tok.decode([i], skip_specials=False) for i in ids]


def _maps(model: Any, ids: list[int]) -> dict[str, torch.Tensor]:
    tokens = torch.tensor([ids], dtype=torch.int64)  # (1, T)
    with torch.no_grad():
        return model.attention_maps(tokens, torch.tensor([len(ids)]))


def head_stats(maps: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Per head of one text's maps ``{layer: (H, T, T)}``: row entropy, mean distance looked at,
    largest cosine similarity to another head of the same layer."""
    out = []
    for layer, a in maps.items():
        a = torch.as_tensor(a, dtype=torch.float64)  # (H, T, T)
        h, t, _ = a.shape
        idx = torch.arange(t, dtype=torch.float64)
        dist = (idx[None, :] - idx[:, None]).abs()  # (T, T) |i - j|
        entropy = -(a * a.clamp_min(1e-12).log()).sum(-1).mean(-1)  # (H,)
        mean_dist = (a * dist).sum(-1).mean(-1)  # (H,)
        flat = torch.nn.functional.normalize(a.reshape(h, -1), dim=1)
        cos = flat @ flat.T - 2 * torch.eye(h, dtype=torch.float64)  # self excluded
        for i in range(h):
            out.append({"layer": layer, "head": i, "entropy": float(entropy[i]), "mean_distance": float(mean_dist[i]),
                        "max_cos_other": float(cos[i].max()) if h > 1 else math.nan, "tokens": t})
    return out


def maps_and_stats(out: Path, dataset: str, run_dir: Path, h: int, b: Budget, quick: bool
                   ) -> tuple[list[Path], pd.DataFrame]:
    """Part (c) for one run: figures of short test texts and per-head statistics on val texts."""
    from ..viz.attention import draw_attention_maps

    method, _ = _load(run_dir)
    model = method.nets["model"].eval()
    test = [ids for ids in method.encode(method.data.texts("test")) if 8 <= len(ids) <= 24]
    test = test or method.encode(method.data.texts("test"))[: b.examples]
    figures = []
    for i, ids in enumerate(test[: b.examples]):
        labels = _token_labels(method, ids)
        maps = _maps(model, ids)
        if next(iter(maps.values())).shape[-1] == len(ids) + 1:  # pool=cls: the [CLS] token comes first
            labels = ["[CLS]", *labels]
        figures.append(draw_attention_maps(
            maps, labels, labels, out / f"maps_{dataset}_{i}.png",
            title=f"{dataset}, h = {h} (best by validation accuracy): "
                  f"{method.tokenizer.decode(ids)[:60]!r}"))
    stats = []
    for ids in method.encode(method.data.texts("val"))[: 8 if quick else 64]:
        stats += head_stats(_maps(model, ids))
    df = pd.DataFrame(stats).groupby(["layer", "head"], sort=False).mean(numeric_only=True).reset_index()
    return figures, df.assign(dataset=dataset, num_heads=h).round(4)


# ----------------------------------------------------------------------------------------
# (d) head pruning


def _accuracy(trainer: Any, method: Any, split: str) -> float:
    return float(trainer.evaluate(method.loader(split, shuffle=False))["accuracy"])


def _heads_of(model: Any, h: int) -> list[tuple[int, int]]:
    """Every ``(layer, head)`` of an ``attn-classifier``."""
    return [(layer, head) for layer in range(len(model.blocks)) for head in range(h)]


def _apply(model: Any, h: int, removed: set[tuple[int, int]], heads: list[tuple[int, int]]) -> None:
    for layer in sorted({lay for lay, _ in heads}):
        mask = torch.tensor([0.0 if (layer, i) in removed else 1.0 for i in range(h)])
        model.set_head_mask(layer, mask)


def prune(run_dir: Path, h: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Part (d): ``(importance per head, accuracy vs heads kept)`` of one run."""
    method, trainer = _load(run_dir)
    model = method.nets["model"]
    heads = _heads_of(model, h)
    base = _accuracy(trainer, method, "val")
    imp = []
    for head in heads:
        _apply(model, h, {head}, heads)
        imp.append({"layer": head[0], "head": head[1], "val_accuracy_masked": _accuracy(trainer, method, "val")})
        imp[-1]["importance"] = round(base - imp[-1]["val_accuracy_masked"], 4)
    importance = pd.DataFrame(imp)
    order = [heads[i] for i in sorted(range(len(heads)), key=lambda i: (imp[i]["importance"], i))]
    curve, removed = [], set()
    for k in range(len(heads)):  # remove k heads, least important first; at least one kept
        removed = set(order[:k])
        _apply(model, h, removed, heads)
        curve.append({"heads_kept": len(heads) - k, "val_accuracy": round(_accuracy(trainer, method, "val"), 4),
                      "test_accuracy": round(_accuracy(trainer, method, "test"), 4)})
    _apply(model, h, set(), heads)
    return importance, pd.DataFrame(curve)


def _plot_pruning(curves: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for dataset, g in curves.groupby("dataset", sort=False):
        line = ax.plot(g["heads_kept"], g["test_accuracy"], marker="o", label=f"{dataset} (test)")
        ax.plot(g["heads_kept"], g["val_accuracy"], ls="--", color=line[0].get_color(), label=f"{dataset} (val)")
    ax.invert_xaxis()
    ax.set(xlabel="heads kept (least important removed first)", ylabel="accuracy",
           title="head pruning (exercise 6.3.4)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _plot_heads(df: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.8))
    for dataset, g in df.groupby("dataset", sort=False):
        axes[0].plot(g["num_heads"], g["test_accuracy"], marker="o", label=dataset)
        axes[1].plot(g["num_heads"], g["train_s"], marker="o", label=dataset)
    for ax, ylabel in zip(axes, ("test accuracy", "training seconds"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set(xlabel="heads h (d_model fixed, d_k = d_model / h)", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("self-attention classifier vs number of heads (exercise 6.3)")
    return save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# verdicts



def judge(bench: pd.DataFrame, runs: pd.DataFrame, curves: pd.DataFrame | None = None,
          val_sizes: dict[str, int] | None = None) -> tuple[list[str], dict[str, str]]:
    """Remark 6.10's four observations (and exercise 6.3.4's redundancy) against the numbers."""
    lines, v = [], {}
    d512 = bench[bench.d_model == 512].set_index("num_heads")
    ok1 = bool((bench.params == bench.params_4d2).all() and d512.params.nunique() == 1)
    v["params_independent_of_h"] = verdict(ok1)
    lines.append(f"1. Parameters do not depend on h: d_model = 512 gives {sorted(set(d512.params))} for "
                 f"h = {list(d512.index)}, every row = 4 d_model² → **{v['params_independent_of_h']}**.")

    small = d512[d512.index <= 16].time_ms
    med = float(small.median())
    spread = float((small.max() - small.min()) / med)
    t32 = float(d512.time_ms.get(32, math.nan))
    flat = spread <= FLAT_TIME
    rise = bool(t32 > small.max() and t32 <= 1.5 * med)
    ok2 = flat and rise
    v["time_constant_slight_rise_32"] = verdict(ok2)
    lines.append(f"2. Time nearly constant in h, slightly higher at h = 32: h ≤ 16 spread {spread:.0%} of the "
                 f"median {med:.2f} ms (constant if ≤ {FLAT_TIME:.0%}: {'yes' if flat else 'no'}), h = 32 "
                 f"{t32:.2f} ms = {t32 / med:.2f}x the median (slight rise if above every h ≤ 16 and < 1.5x: "
                 f"{'yes' if rise else 'no'}) → **{v['time_constant_slight_rise_32']}** (CPU, one thread).")

    ok3s, ok4s, parts3, parts4 = [], [], [], []
    for dataset, g in runs.groupby("dataset", sort=False):
        g = g.set_index("num_heads")
        best = float(g.test_accuracy.max())
        tie = two_se(best, int(g.test_examples.iloc[0]))
        small_dk = g[g.d_k < 16]
        if len(small_dk):
            worst_gap = float(best - small_dk.test_accuracy.max())
            ok3s.append(worst_gap > tie)
            parts3.append(f"{dataset}: d_k {int(small_dk.d_k.max())} is {worst_gap:+.4f} below the best "
                          f"(2 SE {tie:.4f})")
        if 8 in g.index:
            gap8 = float(best - g.test_accuracy[8])
            ok4s.append(gap8 <= tie)
            parts4.append(f"{dataset}: h = 8 (d_k {int(g.d_k[8])}) {float(g.test_accuracy[8]):.4f}, best "
                          f"{best:.4f} at h = {int(g.test_accuracy.idxmax())}, gap {gap8:.4f} (2 SE {tie:.4f})")
    ok3 = all(ok3s) if ok3s else None
    v["dk_below_16_too_small"] = verdict(ok3)
    lines.append("3. d_k < 16 too small: " + ("; ".join(parts3) if parts3 else "no run with d_k < 16")
                 + f" → **{v['dk_below_16_too_small']}**.")
    ok4 = all(ok4s) if ok4s else None
    v["h8_good_default"] = verdict(ok4)
    lines.append("4. h = 8 is the standard choice (judged: within 2 SE of the best here): "
                 + ("; ".join(parts4) if parts4 else "no h = 8 run") + f" → **{v['h8_good_default']}**.")

    if curves is not None and len(curves):
        parts, oks = [], []
        for dataset, g in curves.groupby("dataset", sort=False):
            g = g.sort_values("heads_kept", ascending=False)
            full = float(g.val_accuracy.iloc[0])
            tie = two_se(full, (val_sizes or {}).get(dataset, 0))
            ok = g[g.val_accuracy >= full - tie]
            removable = int(g.heads_kept.iloc[0] - ok.heads_kept.min())
            oks.append(removable >= 1)
            parts.append(f"{dataset}: {removable} of {int(g.heads_kept.iloc[0])} heads removable within 2 SE "
                         f"({tie:.4f}) of the validation accuracy {full:.4f}")
        v["redundant_heads"] = verdict(all(oks))
        lines.append("Exercise 6.3.4, redundant heads exist: " + "; ".join(parts)
                     + f" → **{v['redundant_heads']}**.")
    return lines, v


# ----------------------------------------------------------------------------------------


@EXPERIMENTS.register("attention-heads", help="multi-head attention: params/time of the §6.11 table, "
                      "attn-classifier with h = 1..16 heads, attention maps, head pruning (ex. 6.3)")
def attention_heads(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    bench = mha_benchmark(b)
    bench.to_csv(out / "mha_benchmark.csv", index=False)

    table, runs, baselines = _train_all(out, b)
    figures = [_plot_heads(table, out / "accuracy_vs_heads.png")]

    stats, curves, importances, val_sizes = [], [], [], {}
    for dataset in DATASETS:
        g = table[table.dataset == dataset]
        best_h = int(g.sort_values(["best_val_accuracy", "test_accuracy"], ascending=False).iloc[0].num_heads)
        figs, st = maps_and_stats(out, dataset, runs[(dataset, best_h)], best_h, b, quick)
        figures += figs
        stats.append(st)
        h_prune = b.prune_heads if (dataset, b.prune_heads) in runs else max(b.heads)
        imp, curve = prune(runs[(dataset, h_prune)], h_prune)
        importances.append(imp.assign(dataset=dataset, num_heads=h_prune))
        curves.append(curve.assign(dataset=dataset, num_heads=h_prune))
        method, _ = _load(runs[(dataset, h_prune)])
        val_sizes[dataset] = len(method.data.val)
    heads = pd.concat(stats, ignore_index=True)
    heads.to_csv(out / "heads.csv", index=False)
    pd.concat(importances, ignore_index=True).to_csv(out / "head_importance.csv", index=False)
    curves_df = pd.concat(curves, ignore_index=True)
    curves_df.to_csv(out / "pruning.csv", index=False)
    figures.append(_plot_pruning(curves_df, out / "pruning.png"))

    claims, verdicts = judge(bench, table, curves_df, val_sizes)
    ent = heads.groupby("dataset", sort=False).entropy.agg(["min", "max"])
    notes = "\n\n".join([
        f"(a) MultiHeadAttention (no biases, SDPA kernel), input (batch {b.batch}, length {b.length}), median of "
        f"{b.runs} forward passes after {b.warmup} warm-up ones, one CPU thread (course: a GPU; "
        f"mha_benchmark.csv):\n\n" + to_markdown(bench),
        f"(b) attn-classifier, d_model {b.d_model}, {b.epochs} epoch(s), same budget per h: "
        + "; ".join(f"{k}: {', '.join(v)}" for k, v in b.overrides.items())
        + ". TF-IDF + logistic-regression baseline (test accuracy): "
        + (", ".join(f"{k} {v:.4f}" for k, v in baselines.items()) if b.baseline else "not fitted (quick)") + ".",
        "(c) Per-head row entropy (nats) on validation texts, min-max per dataset: "
        + "; ".join(f"{d} {r['min']:.3f}-{r['max']:.3f}" for d, r in ent.iterrows())
        + " (heads.csv; different entropies and mean distances = different patterns).",
        "Remark 6.10 and exercise 6.3.4, judged from the numbers:\n\n" + "\n".join(claims),
    ])
    extra = {"claims": verdicts, "budget": {"d_model": b.d_model, "heads": list(b.heads), "epochs": b.epochs},
             "mha_benchmark": bench.to_dict(orient="records"),
             "baseline_test_accuracy": {k: round(v, 4) for k, v in baselines.items()}}
    return ExperimentResult(table=table, figures=figures, notes=notes, extra=extra)

