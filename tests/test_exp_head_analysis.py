"""``head-analysis`` (exercise 7.6): offset statistics of synthetic maps, head kinds, the
verdicts (they can fail), pruning of a transformer-classifier, and the quick run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import profond.experiments.head_analysis as ha
from profond.data import text as T
from profond.registry import EXPERIMENTS, MODELS
from tests.conftest import run_quick_experiment

needs_fortunes = pytest.mark.skipif(not (T.FORTUNE_DIRS[0] / "computers").is_file(),
                                    reason="fortunes not installed (apt-get install fortunes fortunes-min)")


def _maps(t: int) -> torch.Tensor:
    """Four heads over [CLS] + t tokens: previous token, next token, all on [CLS], uniform."""
    n = t + 1
    prev, nxt, cls = torch.zeros(n, n), torch.zeros(n, n), torch.zeros(n, n)
    prev[0, 0] = nxt[0, 0] = 1
    prev[1, 1] = 1  # the first token has no previous one: itself
    prev[torch.arange(2, n), torch.arange(1, n - 1)] = 1
    nxt[n - 1, n - 1] = 1
    nxt[torch.arange(1, n - 1), torch.arange(2, n)] = 1
    cls[:, 0] = 1
    return torch.stack([prev, nxt, cls, torch.full((n, n), 1 / n)])  # (4, N, N)


def test_offset_stats_of_known_patterns():
    t = 5
    rows = ha.offset_stats({"layer 0": _maps(t)}, cls=True)
    prev, nxt, cls, uni = rows
    assert prev["prev_share"] == pytest.approx(1.0) and prev["next_share"] == 0 and prev["cls_share"] == 0
    assert prev["self_share"] == pytest.approx(1 / t) and prev["text_distance"] == pytest.approx((t - 1) / t)
    assert cls["text_distance"] == 0 and uni["text_distance"] > 1
    assert nxt["next_share"] == pytest.approx(1.0) and nxt["prev_share"] == 0
    assert cls["cls_share"] == pytest.approx(1.0) and cls["prev_share"] == cls["self_share"] == 0
    assert uni["cls_share"] == pytest.approx(1 / (t + 1)) and uni["prev_share"] == pytest.approx(1 / (t + 1))
    # without [CLS] the whole map is the text
    rows = ha.offset_stats({"layer 0": _maps(t)[:, 1:, 1:]}, cls=False)
    assert math.isnan(rows[0]["cls_share"]) and rows[0]["prev_share"] == pytest.approx(1.0)


def _heads(prev: float, dist: float, cls: float = 0.1) -> pd.DataFrame:
    return pd.DataFrame([{"layer": "layer 0", "head": 0, "text_distance": dist, "prev_share": prev, "next_share": 0.1,
                          "cls_share": cls},
                         {"layer": "layer 0", "head": 1, "text_distance": 1.0, "prev_share": 0.1, "next_share": 0.2,
                          "cls_share": cls}])


def test_classify_and_judge_follow_the_numbers():
    assert ha.classify(_heads(0.8, 1.0)).tolist() == ["previous token", "other"]
    assert ha.classify(_heads(0.8, 3.0, cls=0.7)).tolist() == ["cls", "cls"]  # far on average: not positional
    curve = pd.DataFrame({"heads_kept": [4, 3, 2, 1], "val_accuracy": [0.80, 0.79, 0.60, 0.3],
                          "test_accuracy": [0.8, 0.8, 0.6, 0.3]})
    _, v = ha.judge(_heads(0.8, 1.0), curve, 1000, control=_heads(0.1, 5.0))
    assert v == {"positional_heads_exist": "holds", "redundant_heads": "holds"}
    _, v = ha.judge(_heads(0.3, 1.0), curve.assign(val_accuracy=[0.8, 0.7, 0.6, 0.3]), 1000)
    assert v == {"positional_heads_exist": "does not hold", "redundant_heads": "does not hold"}


def test_encoder_heads_and_masks_of_a_transformer_classifier():
    torch.manual_seed(0)
    model = MODELS.build("transformer-classifier", vocab_size=30, num_classes=3, d_model=16, num_heads=4,
                         num_layers=2, max_len=16).eval()
    heads = ha._encoder_heads(model, 4)
    assert heads == [(layer, h) for layer in range(2) for h in range(4)]
    x = torch.randint(4, 30, (2, 7))
    ref = model(x)
    from profond.experiments import attention_heads as ah

    ah._apply(model, 4, set(heads), heads)  # every head masked: a different output
    assert not torch.allclose(model(x), ref)
    ah._apply(model, 4, set(), heads)
    torch.testing.assert_close(model(x), ref)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = run_quick_experiment("head-analysis", tmp_path_factory)
    return out, pd.read_csv(out / "table.csv")


def test_registered():
    assert "head-analysis" in EXPERIMENTS


@needs_fortunes
def test_quick_run(quick):
    out, t = quick
    b = ha.QUICK
    n = b.layers * b.heads
    assert len(t) == n and sorted(t["rank"]) == list(range(1, n + 1))
    assert t.groupby("layer")["head"].apply(list).tolist() == [list(range(b.heads))] * b.layers
    assert ((t.cls_share >= 0) & (t.cls_share <= 1) & (t.entropy >= -1e-9)).all()
    imp = pd.read_csv(out / "head_importance.csv")
    assert imp.importance.is_monotonic_decreasing
    prune = pd.read_csv(out / "pruning.csv")
    assert prune.heads_kept.tolist() == list(range(n, 0, -1))
    assert prune.val_accuracy.between(0, 1).all() and prune.test_accuracy.between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["claims"]) == {"positional_heads_exist", "redundant_heads"}
    names = {Path(f).name for f in summary["figures"]}
    assert names == {"maps_fortune-topics_0.png", "pruning.png"}
    assert all(Path(f).is_file() for f in summary["figures"])
