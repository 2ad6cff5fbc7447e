"""``attention-heads`` (§6.11, remark 6.10, exercise 6.3): the MHA benchmark's parameter counts,
convergence from a history, per-head statistics, the verdicts (they can fail), and the quick run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

import profond.experiments.attention_heads as ah
from profond.data import text as T
from profond.registry import EXPERIMENTS
from tests.conftest import run_quick_experiment

needs_fortunes = pytest.mark.skipif(
    not (T.FORTUNE_DIRS[0] / "computers").is_file() or not (T.FORTUNE_DIRS[0] / "de").is_dir(),
    reason="fortunes not installed (apt-get install fortunes fortunes-min fortunes-de ...)")


def test_params_are_4_d_squared_for_every_h():
    from profond.nn.attention import MultiHeadAttention

    for d, h in ((64, 1), (64, 8), (64, 64), (48, 3)):
        m = MultiHeadAttention(d, h)
        assert sum(p.numel() for p in m.parameters()) == ah.mha_params_formula(d) == 4 * d * d


def test_convergence_epoch_and_step():
    hist = [{"epoch": 1, "step": 10, "val_accuracy": 0.2}, {"epoch": 2, "step": 20, "val_accuracy": 0.7},
            {"epoch": 3, "step": 30, "val_accuracy": 0.8}, {"epoch": 4, "step": 40, "val_accuracy": 0.75}]
    assert ah.convergence(hist) == (3.0, 30.0)  # 0.9 x 0.8 = 0.72: epoch 3 first reaches it
    assert ah.convergence(hist, frac=0.5) == (2.0, 20.0)
    assert all(math.isnan(x) for x in ah.convergence([{"epoch": 1, "step": 5, "train_loss": 1.0}]))


def test_head_stats_tell_patterns_apart():
    t = 6
    uniform = torch.full((t, t), 1 / t)
    diagonal = torch.eye(t)
    previous = torch.zeros(t, t)
    previous[0, 0] = 1
    previous[torch.arange(1, t), torch.arange(t - 1)] = 1
    rows = ah.head_stats({"layer 0": torch.stack([uniform, diagonal, previous, diagonal])})
    assert [r["head"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["entropy"] == pytest.approx(math.log(t))
    assert rows[1]["entropy"] == pytest.approx(0, abs=1e-9) and rows[1]["mean_distance"] == 0
    assert rows[2]["mean_distance"] == pytest.approx((t - 1) / t)
    assert rows[1]["max_cos_other"] == pytest.approx(1.0)  # heads 1 and 3 are the same pattern
    assert rows[2]["max_cos_other"] < 0.5


def _bench(times: dict[int, float], params_ok: bool = True) -> pd.DataFrame:
    rows = []
    for d, h, _p, _ in ah.COURSE_TABLE:
        params = ah.mha_params_formula(d) + (0 if params_ok or h != 4 else h)
        rows.append({"d_model": d, "num_heads": h, "d_k": d // h, "params": params,
                     "params_4d2": ah.mha_params_formula(d), "time_ms": times.get(h, 1.0) if d == 512 else 1.0})
    return pd.DataFrame(rows)


def _runs(acc: dict[int, float], n: int = 1000) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": ds, "num_heads": h, "d_k": 256 // h, "test_accuracy": a, "test_examples": n}
                         for ds in ah.DATASETS for h, a in acc.items()])


def test_judge_follows_the_numbers():
    flat = {1: 3.2, 2: 3.1, 4: 3.1, 8: 3.2, 16: 3.3, 32: 3.8}
    acc = {1: 0.60, 2: 0.62, 4: 0.63, 8: 0.63, 16: 0.62, 32: 0.50}
    curves = pd.DataFrame([{"dataset": ds, "heads_kept": k, "val_accuracy": a}
                           for ds in ah.DATASETS for k, a in ((8, 0.63), (7, 0.63), (6, 0.60), (1, 0.3))])
    _, v = ah.judge(_bench(flat), _runs(acc), curves, {ds: 500 for ds in ah.DATASETS})
    assert v == {"params_independent_of_h": "holds", "time_constant_slight_rise_32": "holds",
                 "dk_below_16_too_small": "holds", "h8_good_default": "holds", "redundant_heads": "holds"}
    steep = {1: 9.0, 2: 5.0, 4: 3.0, 8: 3.2, 16: 3.3, 32: 3.0}
    bad = {1: 0.60, 2: 0.62, 4: 0.70, 8: 0.50, 16: 0.62, 32: 0.70}
    curves = curves.assign(val_accuracy=[0.63, 0.40, 0.30, 0.2] * 2)
    _, v = ah.judge(_bench(steep, params_ok=False), _runs(bad), curves, {ds: 500 for ds in ah.DATASETS})
    assert set(v.values()) == {"does not hold"}
    # without an h = 32 run (d_k < 16) nor an h = 8 one, observations 3 and 4 are not tested
    _, v = ah.judge(_bench(flat), _runs({1: 0.6, 4: 0.6}))
    assert v["dk_below_16_too_small"] == v["h8_good_default"] == "not tested"
    assert "redundant_heads" not in v


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = run_quick_experiment("attention-heads", tmp_path_factory)
    return out, pd.read_csv(out / "table.csv")


def test_registered():
    assert "attention-heads" in EXPERIMENTS


@needs_fortunes
def test_quick_tables(quick):
    out, t = quick
    b = ah.QUICK
    assert list(zip(t.dataset, t.num_heads, strict=True)) == [(ds, h) for ds in ah.DATASETS for h in b.heads]
    assert (t.d_k == b.d_model // t.num_heads).all()
    # the classifier's size does not depend on h either (attention 4 d² + biases, same FFN / embeddings)
    assert t.groupby("dataset").params.nunique().eq(1).all()
    assert t.test_accuracy.between(0, 1).all() and (t.train_s > 0).all()
    bench = pd.read_csv(out / "mha_benchmark.csv")
    assert len(bench) == 9 and (bench.params == bench.params_4d2).all() and (bench.params == bench.course_params).all()
    heads = pd.read_csv(out / "heads.csv")
    assert set(heads.dataset) == set(ah.DATASETS)
    assert (heads.entropy >= -1e-9).all() and (heads.entropy <= heads.tokens.apply(math.log) + 1e-6).all()
    prune = pd.read_csv(out / "pruning.csv")
    for ds in ah.DATASETS:
        kept = prune[prune.dataset == ds].heads_kept.tolist()
        assert kept == list(range(max(kept), 0, -1))  # every count of heads kept, down to one
    summary = json.loads((out / "summary.json").read_text())
    assert summary["claims"]["params_independent_of_h"] == "holds"
    assert any(str(f).endswith(f"maps_{ah.DATASETS[0]}_0.png") for f in summary["figures"])
    assert all(Path(f).is_file() for f in summary["figures"])
