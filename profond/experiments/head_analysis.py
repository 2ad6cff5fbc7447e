r"""Attention-head analysis of a 4-layer, 8-head Transformer classifier (course exercise 7.6).

``head-analysis`` trains ``transformer-classifier`` (Pre-Norm, eq. 7.10, [CLS] pooling; the
``fortune-topics-transformer`` recipe with 4 layers and 8 heads) on ``fortune-topics`` (BPE
tokens), then:

* draws the attention map of every head for short test texts (``maps_fortune-topics_<i>.png``,
  :func:`profond.experiments.attention_heads.maps_and_stats`);
* measures per head, averaged over validation texts, the row entropy (nats), the mean distance
  ``Σ_j α_ij |i - j|`` looked at, the largest cosine similarity to another head of the layer
  (:func:`~profond.experiments.attention_heads.head_stats`), and (:func:`offset_stats`) the
  share of attention on the [CLS] token, on the previous token (``j = i - 1``), on the next one
  (``j = i + 1``) and on itself, over the text's rows (``heads.csv``);
* ranks the heads by importance, the drop of validation accuracy when the head alone is masked
  (``set_head_mask``), and removes them least important first, measuring validation and test
  accuracy for every number of heads kept
  (:func:`~profond.experiments.attention_heads.prune`; ``head_importance.csv``,
  ``pruning.csv``, ``pruning.png``). Importance is measured on validation only, so the test
  column is not selected on.

A head is called positional (exercise 7.6's "position" specialisation) when it looks at a
fixed neighbour: its mean distance among text tokens is at most :data:`POSITIONAL_DISTANCE` and its previous- or
next-token share at least :data:`POSITIONAL_SHARE`; a [CLS] head puts at least
:data:`CLS_SHARE` of its attention on [CLS]. The notes judge, from the numbers: positional
heads exist (at least one head of the trained model; the same statistics of a freshly
initialised model of the same architecture are reported next to it as a control); and heads are
redundant (at least one head can be removed costing at most two binomial standard errors of
validation accuracy, :func:`~profond.experiments.two_se`), with how many can.

``--quick`` (CI): 2 layers x 4 heads (a grid of 32 maps takes matplotlib long to lay out),
``d_model = 16``, at most 12 texts per topic, characters cut to 32, one epoch: it checks the
plumbing, not the claims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pandas as pd
import torch

from ..registry import EXPERIMENTS
from . import ExperimentResult, finite, run_training, two_se, verdict
from . import attention_heads as ah

RECIPE = "fortune-topics-transformer"
DATASET = "fortune-topics"
#: a positional head looks at most this far on average ...
POSITIONAL_DISTANCE = 1.5
#: ... and puts at least this share of its attention on the previous or the next token
POSITIONAL_SHARE = 0.5
#: a [CLS] head puts at least this share of its attention on [CLS]
CLS_SHARE = 0.5


@dataclass(frozen=True)
class Budget:
    layers: int
    heads: int
    examples: int  # texts drawn (attention_heads.maps_and_stats reads ``examples``)
    texts: int  # validation texts the statistics are averaged over
    overrides: tuple[str, ...]


FULL = Budget(layers=4, heads=8, examples=3, texts=64, overrides=("method.baseline=false",))
QUICK = Budget(layers=2, heads=4, examples=1, texts=8, overrides=(
    "model.d_model=16", "model.d_ff=32", "model.max_len=32", "method.max_len=32", "method.tokenizer=char",
    "method.dataset={max_per_class: 12}", "method.baseline=false", "train.epochs=1", "train.threads=1"))


def offset_stats(maps: dict[str, torch.Tensor], cls: bool) -> list[dict[str, Any]]:
    """Per head of one text's maps ``{layer: (H, N, N)}`` (``[CLS]`` first when ``cls``): the mean
    share of attention of the text's rows on [CLS], on the previous token, the next one and itself,
    and the mean distance ``Σ_j α_ij |i - j| / Σ_j α_ij`` over the text's columns only (attention to
    [CLS], at distance ``i`` of row ``i``, would hide a neighbour pattern). The [CLS] row and column
    are left out of all but the first."""
    out = []
    for layer, a in maps.items():
        a = torch.as_tensor(a, dtype=torch.float64)  # (H, N, N)
        cls_share = a[:, 1:, 0].mean(-1) if cls and a.shape[-1] > 1 else torch.full((a.shape[0],), math.nan)
        t = a[:, 1:, 1:] if cls else a  # (H, T, T) text rows and columns
        n = t.shape[-1]
        prev = t.diagonal(-1, -2, -1).sum(-1) / max(n - 1, 1) if n > 1 else torch.full((a.shape[0],), math.nan)
        nxt = t.diagonal(1, -2, -1).sum(-1) / max(n - 1, 1) if n > 1 else torch.full((a.shape[0],), math.nan)
        self_share = t.diagonal(0, -2, -1).mean(-1)
        idx = torch.arange(n, dtype=torch.float64)
        dist = (idx[None, :] - idx[:, None]).abs()  # (T, T) |i - j|
        text_dist = ((t * dist).sum(-1) / t.sum(-1).clamp_min(1e-12)).mean(-1)  # (H,) renormalised on the text
        for h in range(a.shape[0]):
            out.append({"layer": layer, "head": h, "cls_share": float(cls_share[h]), "prev_share": float(prev[h]),
                        "next_share": float(nxt[h]), "self_share": float(self_share[h]),
                        "text_distance": float(text_dist[h])})
    return out


def head_table(method: Any, model: Any, texts: int) -> pd.DataFrame:
    """Per head, averaged over the first ``texts`` validation texts: the statistics of
    :func:`~profond.experiments.attention_heads.head_stats` and of :func:`offset_stats`."""
    rows = []
    cls = model.pool == "cls"
    for ids in method.encode(method.data.texts("val"))[:texts]:
        maps = ah._maps(model, ids)
        rows += [{**a, **b} for a, b in zip(ah.head_stats(maps), offset_stats(maps, cls), strict=True)]
    return pd.DataFrame(rows).groupby(["layer", "head"], sort=False).mean(numeric_only=True).reset_index()


def classify(heads: pd.DataFrame) -> pd.Series:
    """The kind of each head: positional (previous / next token), cls, or other."""
    near = heads.text_distance <= POSITIONAL_DISTANCE
    prev = near & (heads.prev_share >= POSITIONAL_SHARE) & (heads.prev_share >= heads.next_share)
    nxt = near & (heads.next_share >= POSITIONAL_SHARE) & ~prev
    kind = pd.Series("other", index=heads.index)
    kind[heads.cls_share >= CLS_SHARE] = "cls"
    kind[prev] = "previous token"
    kind[nxt] = "next token"
    return kind


def untrained(run_dir: Path, method: Any) -> Any:
    """A freshly initialised model of the run's architecture (seed 0): the control for the
    statistics of the trained heads."""
    from ..config import RunConfig
    from ..registry import MODELS

    cfg = RunConfig.load(run_dir / "config.yaml")
    torch.manual_seed(0)
    return MODELS.build(cfg.model.name, vocab_size=method.tokenizer.vocab_size, num_classes=len(method.classes),
                        **cfg.model.args).eval()


def _encoder_heads(model: Any, h: int) -> list[tuple[int, int]]:
    """Every ``(layer, head)`` of a ``transformer-classifier`` (its blocks are ``model.body.blocks``)."""
    return [(layer, head) for layer in range(len(model.body.blocks)) for head in range(h)]


def prune(run_dir: Path, h: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`attention_heads.prune` on a ``transformer-classifier`` run."""
    with mock.patch.object(ah, "_heads_of", _encoder_heads):
        return ah.prune(run_dir, h)


def judge(heads: pd.DataFrame, curve: pd.DataFrame, val_size: int,
          control: pd.DataFrame | None = None) -> tuple[list[str], dict[str, str]]:
    """Exercise 7.6's questions against the numbers: positional heads, redundant heads."""
    lines, v = [], {}
    kinds = classify(heads)
    pos = heads[kinds.isin(["previous token", "next token"])]
    v["positional_heads_exist"] = verdict(len(pos) > 0)
    names = ", ".join(f"{r['layer']} head {int(r['head'])} ({kinds[i]}: prev {r['prev_share']:.2f}, next "
                      f"{r['next_share']:.2f}, text distance {r['text_distance']:.2f})" for i, r in pos.iterrows())
    ctrl = ""
    if control is not None and len(control):
        ck = classify(control)
        ctrl = (f"; untrained control: {int(ck.isin(['previous token', 'next token']).sum())} positional, "
                f"largest prev/next share {float(control[['prev_share', 'next_share']].max().max()):.2f}")
    lines.append(f"Positional heads (mean distance among text tokens ≤ {POSITIONAL_DISTANCE}, previous- or next-token share ≥ "
                 f"{POSITIONAL_SHARE}): {len(pos)} of {len(heads)}" + (f": {names}" if names else "")
                 + f"; [CLS] heads (share ≥ {CLS_SHARE}): {int((kinds == 'cls').sum())}{ctrl} "
                 f"→ **{v['positional_heads_exist']}**.")
    g = curve.sort_values("heads_kept", ascending=False)
    full = float(g.val_accuracy.iloc[0])
    tie = two_se(full, val_size)
    ok = g[g.val_accuracy >= full - tie]
    removable = int(g.heads_kept.iloc[0] - ok.heads_kept.min())
    v["redundant_heads"] = verdict(removable >= 1)
    half = g[g.heads_kept == int(g.heads_kept.iloc[0]) // 2]
    half_txt = (f"; with half the heads kept: val {float(half.val_accuracy.iloc[0]):.4f}, test "
                f"{float(half.test_accuracy.iloc[0]):.4f} (all heads: test {float(g.test_accuracy.iloc[0]):.4f})"
                if len(half) else "")
    lines.append(f"Redundant heads: {removable} of {int(g.heads_kept.iloc[0])} heads removable (least important "
                 f"first) within 2 SE ({tie:.4f}) of the validation accuracy {full:.4f}{half_txt} "
                 f"→ **{v['redundant_heads']}**.")
    return lines, v


@EXPERIMENTS.register("head-analysis", help="exercise 7.6: attention maps, importance, pruning and "
                      "statistics of the heads of a 4-layer 8-head Transformer classifier")
def head_analysis(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    over = ["model.name=transformer-classifier", f"model.num_layers={b.layers}", f"model.num_heads={b.heads}",
            *b.overrides]
    res, wall = run_training(out, f"transformer-{b.layers}x{b.heads}", over, recipe=RECIPE)
    figures, _ = ah.maps_and_stats(out, DATASET, res.run_dir, b.heads, b, quick)
    method, _ = ah._load(res.run_dir)
    texts = b.texts
    heads = head_table(method, method.nets["model"].eval(), texts)
    heads["kind"] = classify(heads)
    control = head_table(method, untrained(res.run_dir, method), texts)

    importance, curve = prune(res.run_dir, b.heads)
    importance = importance.sort_values(["importance", "layer", "head"], ascending=[False, True, True])
    importance.insert(0, "rank", range(1, len(importance) + 1))
    importance.to_csv(out / "head_importance.csv", index=False)
    heads = heads.merge(importance[["layer", "head", "importance", "rank"]].assign(
        layer=lambda d: "layer " + d.layer.astype(str)), on=["layer", "head"])
    heads.to_csv(out / "heads.csv", index=False)
    curve.to_csv(out / "pruning.csv", index=False)
    figures.append(ah._plot_pruning(curve.assign(dataset=DATASET), out / "pruning.png"))

    claims, verdicts = judge(heads, curve, len(method.data.val), control)
    final = res.summary["final"]
    table = heads[["layer", "head", "kind", "rank", "importance", "entropy", "mean_distance", "text_distance", "cls_share",
                   "prev_share", "next_share", "self_share", "max_cos_other"]]
    notes = "\n\n".join([
        f"transformer-classifier, {b.layers} layers x {b.heads} heads ({RECIPE}: "
        + ", ".join(over[3:]) + f"), test accuracy {finite(final.get('test_accuracy')):.4f}, "
        f"{res.summary['train_time_s']:.1f} s of training. Statistics averaged over {texts} validation texts; "
        "importance = validation accuracy drop when the head alone is masked.",
        "Exercise 7.6, judged from the numbers:\n\n" + "\n".join(claims),
    ])
    extra = {"claims": verdicts, "test_accuracy": round(finite(final.get("test_accuracy")), 4),
             "wall_s": round(wall, 2), "kinds": heads.kind.value_counts().to_dict()}
    return ExperimentResult(table=table, figures=figures, notes=notes, extra=extra)
