"""The ``attention-bottleneck`` experiment (course §6.1-6.3, exercise 6.1): ``--quick`` trains the
fixed-context seq2seq and the Bahdanau one at the same budget, and writes the table (exact match
per input-length bucket, consistent with the per-length file), the figure and the attention heatmap
of the longest held-out input; the bucket and verdict helpers are checked on hand-made numbers."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from PIL import Image

import profond.experiments.seq2seq_attention as exp
from profond.registry import EXPERIMENTS, MODELS
from tests.conftest import run_quick_experiment

pytest.importorskip("num2words")


@pytest.fixture(scope="module")
def quick_out(tmp_path_factory):
    torch.set_num_threads(1)
    return run_quick_experiment("attention-bottleneck", tmp_path_factory)


def test_registered_and_attentions_are_the_course_ones():
    from profond.experiments import MODULES

    assert "attention-bottleneck" in EXPERIMENTS.names() and "seq2seq_attention" in MODULES  # `profond experiment`
    # §6.1 fixed context, §6.2 Bahdanau (6.2-6.4), §6.3 Luong scores (6.6)-(6.8)
    assert exp.ATTENTIONS == ("none", "bahdanau", "luong-dot", "luong-general", "luong-concat")
    assert exp.ATTENTIONS_QUICK == ("none", "bahdanau")
    # one budget for all: the overrides differ only in model.attention
    a, b = exp.overrides("none", False), exp.overrides("luong-dot", False)
    assert [x for x in a if x not in b] == ["model.attention=none"]
    assert "train.threads=1" in a and "method.direction=words2digits" in a


def test_bucket_helpers_weight_lengths_by_count():
    by = {"1": 1.0, "3": 0.5, "5": 0.0, "6": 1.0, "9": 0.25, "12": 0.75}
    counts = {"1": 1, "3": 3, "5": 2, "6": 2, "9": 3, "12": 1}
    s = exp.bucket_scores(by, counts)
    assert list(s) == ["1-4", "5-6", "7-8", "9+"]
    assert s["1-4"] == pytest.approx((1.0 + 1.5) / 4) and s["5-6"] == pytest.approx(0.5)
    assert math.isnan(s["7-8"]) and s["9+"] == pytest.approx((0.75 + 0.75) / 4)
    assert exp.bucket_counts(counts) == {"1-4": 4, "5-6": 4, "7-8": 0, "9+": 4}


def _table(none_short, none_long, att_short, att_long):
    cols = ["em_1_4", "em_5_6", "em_7_8", "em_9plus"]
    rows = [{"attention": "none", **dict(zip(cols, [none_short, 0.5, 0.5, none_long], strict=True))},
            {"attention": "bahdanau", **dict(zip(cols, [att_short, 0.9, 0.9, att_long], strict=True))}]
    return pd.DataFrame(rows)


def test_verdict_follows_the_measured_drop():
    counts = {"1-4": 10, "5-6": 10, "7-8": 10, "9+": 10}
    b = exp.budget(True)
    notes, shows = exp._notes(_table(0.95, 0.45, 1.0, 0.99), counts, b)
    assert shows and "bottleneck shows" in notes and "drop +0.500" in notes
    # no-attention uniformly worse, but no drop with length: not the bottleneck
    assert not exp._notes(_table(0.5, 0.5, 1.0, 1.0), counts, b)[1]
    # both drop alike: not attributable to the fixed context
    assert not exp._notes(_table(0.9, 0.4, 0.9, 0.45), counts, b)[1]


def test_quick_table_and_learning(quick_out):
    table = pd.read_csv(quick_out / "table.csv")
    assert list(table.attention) == ["none", "bahdanau"]
    assert {"params", "test_exact_match", "em_1_4", "em_5_6", "em_7_8", "em_9plus", "train_s"} <= set(table.columns)
    summary = json.loads((quick_out / "summary.json").read_text())
    b = summary["budget"]
    for row in table.itertuples(index=False):
        run = json.loads((quick_out / "runs" / row.attention / "summary.json").read_text())
        # the reloaded last checkpoint scores what the loop's final test evaluation scored
        assert row.test_exact_match == pytest.approx(run["final"]["test_exact_match"], abs=1e-4)
        # the real parameter count of the built model
        model = MODELS.build("seq2seq", src_vocab=run["src_vocab"], tgt_vocab=run["tgt_vocab"],
                             embed_dim=b["embed_dim"], hidden_size=b["hidden_size"], attention=row.attention)
        assert row.params == sum(p.numel() for p in model.parameters())
        # both learnt something on held-out numbers: well above the majority-token baseline
        assert row.test_token_accuracy > run["final"]["test_majority_token_accuracy"] + 0.15, row
    none, bahd = table.iloc[0], table.iloc[1]
    assert bahd.params > none.params
    assert bahd.test_exact_match >= 0.03 and bahd.test_token_accuracy > none.test_token_accuracy


def test_quick_buckets_match_per_length_file(quick_out):
    table = pd.read_csv(quick_out / "table.csv").set_index("attention")
    by_len = pd.read_csv(quick_out / "by_length.csv")
    summary = json.loads((quick_out / "summary.json").read_text())
    n_test = summary["budget"]["n_test"]
    assert sum(summary["bucket_counts"].values()) == n_test
    for attention, g in by_len.groupby("attention"):
        assert g["count"].sum() == n_test and g["length"].min() >= 1
        hits = (g["count"] * g["exact_match"])
        assert hits.sum() / n_test == pytest.approx(table.loc[attention, "test_exact_match"], abs=1e-3)
        long = g[g["length"] >= 9]
        assert (long["count"] * long["exact_match"]).sum() / long["count"].sum() == pytest.approx(
            table.loc[attention, "em_9plus"], abs=1e-3)
    assert isinstance(summary["bottleneck_shows"], bool) and "bottleneck" in (quick_out / "table.md").read_text()


def test_quick_figures_and_heatmap_of_longest_input(quick_out):
    summary = json.loads((quick_out / "summary.json").read_text())
    assert [p.split("/")[-1] for p in summary["figures"]] == ["exact_match_by_length.png", "attention_heatmap.png"]
    assert Image.open(quick_out / "exact_match_by_length.png").size[0] > 300
    meta = json.loads(Image.open(quick_out / "attention_heatmap.png").text["attention"])
    ex = summary["heatmap_example"]
    assert summary["heatmap_model"] == "bahdanau" and meta["source"] == ex["input"]
    assert ex["words"] == pd.read_csv(quick_out / "by_length.csv")["length"].max()
    m = torch.tensor(meta["matrix"])
    assert m.shape == (len(meta["target"]), len(ex["input"]))
    assert torch.allclose(m.sum(1), torch.ones(m.shape[0]), atol=1e-4) and (m >= 0).all()
    assert "".join(meta["target"]).startswith(ex["output"])


def test_reverse_direction_rows_at_a_tiny_budget(tmp_path):
    """The full mode's digits -> words comparison, at a tiny budget: one row per attention, exact
    match per input length in digits (the test numbers have 3 to 6), consistent with the overall."""
    torch.set_num_threads(1)
    b = dict(exp.budget(True), n_train=200, n_val=20, n_test=60, epochs=1, hidden_size=8, embed_dim=8)
    rev = exp.reverse_comparison(tmp_path, b)
    assert list(rev.attention) == list(exp.REVERSE_ATTENTIONS) == ["none", "bahdanau"]
    for row in rev.itertuples(index=False):
        run = json.loads((tmp_path / "runs" / f"reverse-{row.attention}" / "summary.json").read_text())
        assert run["direction"] == "digits2words" and run["final"]["test_exact_match"] == pytest.approx(
            row.test_exact_match, abs=1e-4)
        counts = dict(kv.split(":") for kv in row.counts.split())
        assert sorted(counts) == ["3d", "4d", "5d", "6d"] and sum(int(c) for c in counts.values()) == 60
        per = sum(getattr(row, f"em_{k}") * int(c) for k, c in counts.items()) / 60
        assert per == pytest.approx(row.test_exact_match, abs=1e-3)
    assert rev.params.iloc[1] > rev.params.iloc[0]
