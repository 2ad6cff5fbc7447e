"""``efficient-attention`` (exercise 6.5): the per-call table's errors and memory columns, the
distance of the associative-recall query, the verdicts (they can fail), and the quick run."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import profond.experiments.efficient_attention as ea
from profond.registry import EXPERIMENTS
from tests.conftest import run_quick_experiment


def test_reference_is_softmax_attention():
    q, k, v = ea.inputs(70, 2, 8)
    ref = ea.reference(q, k, v, chunk=16)  # several chunks, the last one partial
    w = torch.softmax(q.double() @ k.double().transpose(-2, -1) / math.sqrt(8), -1)  # (6.9)
    torch.testing.assert_close(ref, w @ v.double())


def test_guess_rate():
    assert ea.guess_rate("a3 .. k7 .. x3 ?k") == 0.5  # values 3 and 7
    assert ea.guess_rate("a1 b2 c3 d4 ?a") == 0.25
    assert ea.guess_rate("qwertyCuiop") == 0.1  # needle task: the filler says nothing, chance


def test_recall_distance():
    # the value 7 is at index 7, the query's key at index 16 (or 1 when the query comes first)
    assert ea.recall_distance("a3 .. k7 .. x1 ?k") == 9
    assert ea.recall_distance("a3 ?a") == 3
    assert ea.recall_distance("?k a3 .. k7 .. x1") == 9
    # needle task: from a [CLS] token before the text (position 0) to the needle at index 6
    assert ea.recall_distance("qwertyCuiop") == 7


@pytest.mark.parametrize("b", [ea.FULL, ea.QUICK])
def test_part_b_trains_on_the_needle_task_with_needles_beyond_local_reach(b):
    from profond.data.text import assoc_recall

    assert b.task == "needle" and b.pool == "cls"
    over = ea.recall_overrides(b, "local", b.train_windows[0])
    assert f"model.window={b.train_windows[0]}" in over and "model.pool=cls" in over
    assert any(o.startswith("method.dataset={task: needle,") for o in over)
    d = assoc_recall(task="needle", n_train=0, n_val=0, n_test=b.n_test, length=b.length)
    reach = b.num_layers * (max(b.train_windows) - 1)
    far = sum(ea.recall_distance(t) > reach for t in d.texts("test"))
    assert far > b.n_test / 2  # most answers lie beyond every local window's reach
    assert b.buckets[0] == 0 and b.buckets[-1] > b.length  # the buckets cover every distance


def test_analytic_memory_scales_as_the_algorithms():
    mb = ea.analytic_mb
    assert mb("profond", None, 2048, 4, 64) == pytest.approx(4 * mb("profond", None, 1024, 4, 64))  # n²
    assert mb("tiled", None, 2048, 4, 64) == pytest.approx(2 * mb("tiled", None, 1024, 4, 64))  # n
    assert mb("local", 16, 2048, 4, 64) == pytest.approx(2 * mb("local", 16, 1024, 4, 64), rel=1e-3)
    assert mb("linear", None, 8192, 4, 64) == mb("linear", None, 128, 4, 64)  # no n
    assert math.isnan(mb("sdpa", None, 128, 4, 64))


def test_memory_measurement_sees_the_n_squared_matrix():
    """The explicit path's measured peak grows with n² (about 2 H n² floats), tiled's does not."""
    specs = [{"impl": impl, "window": None, "n": n, "heads": 2, "d_head": 16}
             for impl in ("profond", "tiled") for n in (512, 1024)]
    mb = ea.measure_memory(specs)
    if any(math.isnan(x) for x in mb):
        pytest.skip("no /proc/self/clear_refs here")
    explicit_1024 = ea.analytic_mb("profond", None, 1024, 2, 16)  # 16 MB
    assert mb[1] >= 0.8 * explicit_1024
    assert mb[1] > 2.5 * mb[0]
    assert mb[3] < mb[1] / 3


def _calls(err_tiled: float = 1e-7, own: float = 1e-7, tiled_mb: float = 1.0) -> pd.DataFrame:
    rows = [
        {"n": 512, "impl": "sdpa", "max_err_exact": 1e-7, "max_err_own": math.nan, "peak_mb": 0.5, "attn_mb": math.nan},
        {"n": 512, "impl": "profond", "max_err_exact": 1e-7, "max_err_own": math.nan, "peak_mb": 6.0, "attn_mb": 4.0},
        {"n": 512, "impl": "tiled", "max_err_exact": err_tiled, "max_err_own": math.nan, "peak_mb": tiled_mb,
         "attn_mb": 1.0},
        {"n": 512, "impl": "linear", "max_err_exact": 0.4, "max_err_own": own, "peak_mb": 0.3, "attn_mb": 0.01},
        {"n": 512, "impl": "local-16", "max_err_exact": 1.5, "max_err_own": 1e-7, "peak_mb": 1.0, "attn_mb": 0.4},
    ]
    return pd.DataFrame(rows)


def _recall(lin: float, local_far: float, exact_far: float, n: int = 400) -> tuple[pd.DataFrame, dict]:
    """A fake part (b): half the test pairs beyond local-16's reach (30)."""
    dist = [10] * (n // 2) + [100] * (n // 2)
    labels = [i % 10 for i in range(n)]

    def correct(near: float, far: float) -> list[int]:
        k_near, k_far = int(near * n / 2), int(far * n / 2)
        return [1] * k_near + [0] * (n // 2 - k_near) + [1] * k_far + [0] * (n // 2 - k_far)

    per = {"sdpa": {"distance": dist, "labels": labels, "correct": correct(0.9, exact_far), "guess": [0.25] * n},
           "linear": {"distance": dist, "labels": labels, "correct": correct(lin, lin)},
           "local-16": {"distance": dist, "labels": labels, "correct": correct(0.9, local_far)}}
    acc = {k: sum(v["correct"]) / n for k, v in per.items()}
    df = pd.DataFrame([{"impl": k, "reach": 30.0 if k.startswith("local") else math.nan, "test_accuracy": a}
                       for k, a in acc.items()])
    return df, per


def test_judge_follows_the_numbers():
    recall, per = _recall(lin=0.3, local_far=0.3, exact_far=0.9)  # local: a guess among 4 values
    _, v = ea.judge(_calls(), recall, per)
    assert v == {"exact_methods_agree": "holds", "fast_equals_own_definition": "holds",
                 "tiled_less_memory": "holds", "exact_learns_recall": "holds", "local_fails_beyond_window": "holds",
                 "linear_loses_expressiveness": "holds"}
    # an inexact tiled kernel, a wrong linear kernel, tiled using more memory
    _, v = ea.judge(_calls(err_tiled=1e-2, own=1e-2, tiled_mb=9.0))
    assert v["exact_methods_agree"] == v["fast_equals_own_definition"] == v["tiled_less_memory"] == "does not hold"
    # local as good as exact beyond its reach; linear as good as exact
    recall, per = _recall(lin=0.9, local_far=0.9, exact_far=0.9)
    _, v = ea.judge(_calls(), recall, per)
    assert v["local_fails_beyond_window"] == v["linear_loses_expressiveness"] == "does not hold"
    # exact attention no better than local beyond the reach: the failure is not shown
    recall, per = _recall(lin=0.1, local_far=0.1, exact_far=0.1)
    _, v = ea.judge(_calls(), recall, per)
    assert v["local_fails_beyond_window"] == "does not hold"
    # exact attention at the level of a guess among the values present: no recall learnt, said so
    per["sdpa"]["correct"] = [1] * 100 + [0] * 300
    recall.loc[recall.impl == "sdpa", "test_accuracy"] = 0.25
    lines, v = ea.judge(_calls(), recall, per)
    assert v["exact_learns_recall"] == "does not hold" and "no recall was learnt" in lines[-1]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = run_quick_experiment("efficient-attention", tmp_path_factory)
    return out, pd.read_csv(out / "table.csv"), pd.read_csv(out / "calls.csv")


def test_registered():
    assert "efficient-attention" in EXPERIMENTS


def test_quick_tables(quick):
    out, recall, calls = quick
    b = ea.QUICK
    assert len(calls) == len(b.ns) * len(ea.methods(b))
    assert set(calls.n) == set(b.ns)
    exact = calls[calls.impl.isin(["sdpa", "profond", "tiled"])]
    assert (exact.max_err_exact < ea.EXACT_TOL).all()  # the exact methods are exact
    fast = calls[calls.impl.str.startswith(("linear", "local"))]
    assert (fast.max_err_own < ea.EXACT_TOL).all()  # equal to their own definitions
    assert (fast.max_err_exact > 1e-2).all()  # ... which are not softmax attention
    assert (calls.time_ms > 0).all()
    big = calls[calls.n == max(b.ns)].set_index("impl")
    assert big.attn_mb["profond"] > big.attn_mb["tiled"] > big.attn_mb["linear"]

    assert list(recall.impl) == ["sdpa", "tiled", "linear", *(f"local-{w}" for w in b.train_windows)]
    assert recall.test_accuracy.between(0, 1).all()
    # tiled attention is the same function as sdpa: same parameters, same data, same seed
    by = recall.set_index("impl")
    assert by.params["tiled"] == by.params["sdpa"]
    buckets = [c for c in recall.columns if c.startswith("acc_d")]
    assert len(buckets) == len(b.buckets) - 1
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["claims"]) >= {"exact_methods_agree", "local_fails_beyond_window",
                                      "linear_loses_expressiveness"}
    assert (out / "time_memory.png").is_file() and (out / "recall_by_distance.png").is_file()
    notes = (out / "table.md").read_text()
    assert "holds" in notes
