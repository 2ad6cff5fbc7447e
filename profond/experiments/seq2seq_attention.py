"""The fixed-context bottleneck of seq2seq and what attention changes (course §6.1-6.3, exercise 6.1).

``attention-bottleneck`` trains the encoder-decoder LSTM of :mod:`profond.models.seq2seq`
on French number words -> digits (``"cent vingt-trois" -> "123"``, the ``french-numbers``
dataset, whose val / test numbers never occur in training) once per attention:

* ``none`` — the fixed context of §6.1: the source reaches the decoder only through the
  encoder's final state (eq. 6.1, ``c = h_T``; with the bidirectional encoder
  ``s_0 = [→h_S ; ←h_1]``, 2 x 32 numbers for a source of up to ~70 characters), the
  "goulot d'étranglement" of §6.1.1;
* ``bahdanau`` — additive attention, eqs. (6.2)-(6.4);
* ``luong-dot`` / ``luong-general`` / ``luong-concat`` — the scores (6.6) / (6.7) / (6.8) of §6.3.

Every run has the *same budget*: same data, embedding and hidden sizes (a small BiLSTM,
``hidden_size`` 32, so that the fixed context is tight: a wider encoder hides the
bottleneck on these short inputs), optimizer, epochs and seed,
through the one training loop (:func:`~profond.experiments.run_training`, 1 thread).
Attention adds parameters (the score network, and Bahdanau's/Luong's wider decoder
input); the table reports each model's real count.

After training, the last checkpoint is reloaded and evaluated on the held-out test set with
greedy decoding: overall exact match and exact match per input-length bucket (input
length in number words, "vingt-trois" counting 2, as
:meth:`~profond.data.text.FrenchNumbers.input_lengths`). §6.1.1 predicts that the
fixed-context model degrades as inputs get longer while attention does not; the notes
state whether that holds here, from the measured drop between the shortest and the
longest bucket.

Outputs: ``table.csv`` / ``table.md`` (attention, params, test exact match overall and per
bucket, token accuracy, train time), ``exact_match_by_length.png`` (exact match against
input length, one line per attention; lengths with fewer than :data:`MIN_COUNT` test
numbers are left out of the figure), ``by_length.csv`` (every length, with its count), and
``attention_heatmap.png``: the attention matrix ``α_{t,j}`` (exercise 6.1.3) of the best
attention model (by validation exact match) on the longest held-out input, drawn by
:func:`profond.methods.seq2seq.draw_attention` (the plot of ``profond translate
--attention-png``).

The full mode also trains ``none`` and ``bahdanau`` in the reverse direction, digits ->
words (:func:`reverse_comparison`: short inputs, outputs of up to ~70 characters), at the
same budget: ``reverse.csv`` / ``reverse.md``, exact match per input length in digits.

``--quick`` (CI-sized): ``none`` and ``bahdanau`` only (no reverse
direction), a tiny model (hidden 24) on 1,500 training numbers for 2 epochs, 300 test numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..base.io import atomic_write_text  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, finite, run_training, to_markdown  # noqa: E402

ATTENTIONS = ("none", "bahdanau", "luong-dot", "luong-general", "luong-concat")
ATTENTIONS_QUICK = ("none", "bahdanau")
#: attentions also trained in the reverse direction (digits -> words, long outputs), full mode only
REVERSE_ATTENTIONS = ("none", "bahdanau")
#: input-length buckets in number words (inclusive bounds; the last one is open-ended)
BUCKETS: tuple[tuple[int, int], ...] = ((1, 4), (5, 6), (7, 8), (9, 10**6))
#: the figure leaves out lengths with fewer test numbers than this (too noisy)
MIN_COUNT = 10


def bucket_label(lo: int, hi: int) -> str:
    return f"{lo}+" if hi >= 10**6 else f"{lo}-{hi}"


def budget(quick: bool) -> dict[str, Any]:
    """The one budget shared by every attention (data, sizes, epochs)."""
    if quick:
        return {"n_train": 1500, "n_val": 100, "n_test": 300, "hidden_size": 24, "embed_dim": 24,
                "epochs": 2, "lr": 0.01, "batch_size": 32}
    return {"n_train": 6000, "n_val": 300, "n_test": 2000, "hidden_size": 32, "embed_dim": 32,
            "epochs": 6, "lr": 0.005, "batch_size": 64}


def overrides(attention: str, quick: bool, direction: str = "words2digits",
              b: dict[str, Any] | None = None) -> list[str]:
    """``profond train`` overrides of one run (the numbers-fr recipes, resized by :func:`budget`)."""
    b = b or budget(quick)
    return [
        "model.name=seq2seq", "model.kind=lstm", "model.bidirectional=true",
        f"model.embed_dim={b['embed_dim']}", f"model.hidden_size={b['hidden_size']}",
        f"model.attention={attention}",
        "data.name=french-numbers", f"data.batch_size={b['batch_size']}", "data.eval_batch_size=500",
        "method.name=seq2seq", f"method.direction={direction}",
        "method.teacher_forcing_start=1.0", "method.teacher_forcing_end=0.7",
        f"method.dataset={{n_train: {b['n_train']}, n_val: {b['n_val']}, n_test: {b['n_test']}}}",
        "optim.name=adam", f"optim.lr={b['lr']}", f"train.epochs={b['epochs']}",
        "train.clip_grad_norm=1.0", "train.threads=1", "train.seed=0",
    ]


def bucket_scores(by_length: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """Exact match per :data:`BUCKETS` bucket, weighted by the count of each length (NaN if empty)."""
    out = {}
    for lo, hi in BUCKETS:
        keys = [k for k in counts if lo <= int(k) <= hi]
        n = sum(counts[k] for k in keys)
        out[bucket_label(lo, hi)] = sum(by_length[k] * counts[k] for k in keys) / n if n else math.nan
    return out


def bucket_counts(counts: dict[str, int]) -> dict[str, int]:
    return {bucket_label(lo, hi): sum(c for k, c in counts.items() if lo <= int(k) <= hi) for lo, hi in BUCKETS}


def _evaluate(run_dir: Path) -> tuple[Any, dict[str, Any]]:
    """Reload the run's last checkpoint; detailed test metrics (exact match by length)."""
    from ..train.loop import load_run

    method, trainer = load_run(run_dir, device="cpu")
    return method, trainer.evaluate(method.test_data(), detailed=True)


def _train_eval(out: Path, name: str, args: list[str]) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Train one run, reload it, evaluate it in detail: (method, test metrics, table columns)."""
    res, wall = run_training(out, name, args)
    method, m = _evaluate(res.run_dir)
    final = res.summary["final"]
    cols = {"params": int(res.summary["parameters"]["model"]["total"]),
            "val_exact_match": round(finite(final.get("val_exact_match")), 4),
            "test_exact_match": round(float(m["exact_match"]), 4),
            "test_token_accuracy": round(float(m["token_accuracy"]), 4),
            "train_s": round(res.summary["train_time_s"], 1), "wall_s": round(wall, 1)}
    return method, m, cols


def reverse_comparison(out: Path, b: dict[str, Any], attentions: tuple[str, ...] = REVERSE_ATTENTIONS
                       ) -> pd.DataFrame:
    """digits -> words (``"398778"`` -> 65 characters of words) at budget ``b``: one row per
    attention, exact match per input length in digits (``em_3d`` ... ``em_6d``)."""
    rows = []
    for attention in attentions:
        _, m, cols = _train_eval(out, f"reverse-{attention}", overrides(attention, False, "digits2words", b))
        per = {f"em_{k}d": round(v, 4) for k, v in m["exact_match_by_length"].items()}
        rows.append({"attention": attention, **cols, **per,
                     "counts": " ".join(f"{k}d:{c}" for k, c in m["count_by_length"].items())})
    return pd.DataFrame(rows)


def _figure(by_len: pd.DataFrame, out: Path, quick: bool) -> Path:
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    for attention, g in by_len.groupby("attention", sort=False):
        g = g[g["count"] >= MIN_COUNT].sort_values("length")
        ax.plot(g["length"], g["exact_match"], marker="o", lw=2 if attention == "none" else 1.3,
                ls="--" if attention == "none" else "-", label=attention)
    ax.set(xlabel="input length (number words)", ylabel="test exact match", ylim=(-0.03, 1.03),
           title="French words -> digits: fixed context vs attention (course §6.1-6.3)" + (" — quick" if quick else ""))
    ax.grid(alpha=0.3)
    ax.legend(title="attention")
    return save_figure(fig, out / "exact_match_by_length.png")


def _heatmap(method: Any, out: Path, attention: str) -> tuple[Path, dict[str, Any]]:
    """Attention matrix of the model on the longest held-out input (words, then characters)."""
    from ..methods.seq2seq import draw_attention

    pairs = method.pairs("test")
    lengths = method.input_lengths("test")
    i = max(range(len(pairs)), key=lambda j: (lengths[j], len(pairs[j][0]), -j))
    src, ref = pairs[i]
    outputs, attn = method.translate([src], beam=1)
    labels = method.output_tokens(outputs[0], attn[0].shape[0])
    ok = "correct" if outputs[0] == ref else f"wrong, target {ref}"
    path = draw_attention(attn[0], src, labels, out / "attention_heatmap.png",
                          title=f"{attention}: {src} -> {outputs[0]} ({ok})")
    return path, {"input": src, "target": ref, "output": outputs[0], "words": lengths[i]}


def _notes(table: pd.DataFrame, counts: dict[str, int], b: dict[str, Any]) -> tuple[str, bool]:
    """The verdict from the measured numbers: drop of exact match from the shortest to the longest bucket."""
    first, last = bucket_label(*BUCKETS[0]), bucket_label(*BUCKETS[-1])
    drop = {r.attention: getattr(r, "em_" + _col(first)) - getattr(r, "em_" + _col(last))
            for r in table.itertuples(index=False)}
    none = table[table.attention == "none"].iloc[0]
    att = table[table.attention != "none"]
    worst_att_drop = max(drop[a] for a in att.attention)
    worst_att_long = float(att["em_" + _col(last)].min())
    shows = bool(drop["none"] >= 0.1 and drop["none"] >= worst_att_drop + 0.1
                 and float(none["em_" + _col(last)]) <= worst_att_long - 0.1)
    lines = [
        f"Budget (same for every attention): BiLSTM hidden {b['hidden_size']}, embedding {b['embed_dim']}, "
        f"{b['n_train']} + 100 training numbers, {b['epochs']} epochs, Adam lr {b['lr']}, batch {b['batch_size']}, "
        f"greedy decoding; {b['n_test']} held-out test numbers, per bucket (number words): "
        + ", ".join(f"{k}: {v}" for k, v in counts.items()) + ".",
        f"Exact match from the shortest ({first} words) to the longest ({last} words) bucket: "
        + "; ".join(f"{a} {getattr(r, 'em_' + _col(first)):.3f} -> {getattr(r, 'em_' + _col(last)):.3f} "
                    f"(drop {drop[a]:+.3f})" for a, r in zip(table.attention, table.itertuples(index=False),
                                                              strict=True)) + ".",
    ]
    if shows:
        lines.append(f"The §6.1 bottleneck shows: without attention exact match falls by {drop['none']:.3f} from "
                     f"short to long inputs, while the attention models lose at most {worst_att_drop:.3f} and keep "
                     f">= {worst_att_long:.3f} on the longest inputs.")
    else:
        lines.append(f"The §6.1 bottleneck does NOT show clearly at this budget: the no-attention drop "
                     f"({drop['none']:+.3f}) is not at least 0.1 larger than the attention models' "
                     f"(worst {worst_att_drop:+.3f}), or its long-input exact match is not 0.1 below theirs.")
    return "\n\n".join(lines), shows


def _col(label: str) -> str:
    return label.replace("-", "_").replace("+", "plus")


@EXPERIMENTS.register("attention-bottleneck", help="seq2seq words->digits: fixed-context bottleneck vs "
                      "Bahdanau / Luong attention, exact match by input length (course §6.1-6.3, ex. 6.1)")
def attention_bottleneck(out: Path, quick: bool) -> ExperimentResult:
    b = budget(quick)
    attentions = ATTENTIONS_QUICK if quick else ATTENTIONS
    rows, by_len_rows, methods = [], [], {}
    counts: dict[str, int] = {}
    for attention in attentions:
        method, m, cols = _train_eval(out, attention, overrides(attention, quick))
        methods[attention] = method
        counts = bucket_counts(m["count_by_length"])
        buckets = bucket_scores(m["exact_match_by_length"], m["count_by_length"])
        rows.append({"attention": attention, **{k: cols[k] for k in ("params", "val_exact_match", "test_exact_match")},
                     **{"em_" + _col(k): round(v, 4) for k, v in buckets.items()},
                     **{k: cols[k] for k in ("test_token_accuracy", "train_s", "wall_s")}})
        for k, v in m["exact_match_by_length"].items():
            by_len_rows.append({"attention": attention, "length": int(k), "count": m["count_by_length"][k],
                                "exact_match": round(v, 4)})
    table = pd.DataFrame(rows)
    by_len = pd.DataFrame(by_len_rows)
    by_len.to_csv(out / "by_length.csv", index=False)
    figures = [_figure(by_len, out, quick)]

    att = table[table.attention != "none"]
    best = str(att.sort_values(["val_exact_match", "test_exact_match"], ascending=False).iloc[0].attention)
    heat_path, example = _heatmap(methods[best], out, best)
    figures.append(heat_path)

    notes, shows = _notes(table, counts, b)
    notes += (f"\n\nAttention heatmap: {best} (best by validation exact match) on the longest held-out input "
              f"({example['words']} words) \"{example['input']}\" -> \"{example['output']}\" "
              f"(target {example['target']}).")
    extra_rev: dict[str, Any] = {}
    if not quick:
        rev = reverse_comparison(out, b)
        rev.to_csv(out / "reverse.csv", index=False)
        atomic_write_text(out / "reverse.md", to_markdown(rev))
        em = dict(zip(rev.attention, rev.test_exact_match, strict=True))
        notes += ("\n\nReverse direction, digits -> words (outputs of up to ~70 characters, input length in "
                  "digits), same budget (reverse.csv): test exact match "
                  + ", ".join(f"{a} {v:.3f}" for a, v in em.items()) + ".\n\n" + to_markdown(rev))
        extra_rev = {"reverse": json.loads(rev.to_json(orient="records"))}
    return ExperimentResult(table=table, figures=figures, notes=notes,
                            extra={"attentions": list(attentions), "budget": b, "bucket_counts": counts, **extra_rev,
                                   "bottleneck_shows": shows, "heatmap_model": best, "heatmap_example": example})
