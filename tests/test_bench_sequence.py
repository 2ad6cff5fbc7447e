"""benchmarks/sequence.py: its speed part compares equal layers, its targets read the rows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def seqbench(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("sequence", None)
    import sequence

    monkeypatch.setattr(sequence, "MD_PATH", tmp_path / "sequence.md")
    return sequence


def test_speed_part_times_the_same_function(seqbench):
    rows = seqbench.bench_speed(repeats=2, batch=4, steps=20, d_x=5, d_h=16)
    assert [r["kind"] for r in rows] == ["lstm", "gru"]
    for r in rows:
        assert r["max_output_gap"] < 1e-5  # ours and nn.* compute the same layer
        assert r["torch_ms"] > 0 and r["ours_ms"] > 0
        assert r["ratio_ours_over_torch"] == pytest.approx(r["ours_ms"] / r["torch_ms"], rel=0.1)  # ms rounded to 0.01


def test_targets_and_table(seqbench):
    data = {
        "translate": {"command": "c", "load": "l", "rows": [
            {"recipe": "numbers-fr-attention", "test_exact_match": 0.995, "exact_match_by_length": {"3": 1.0},
             "count_by_length": {"3": 10}, "train_s": 1.0},
            {"recipe": "numbers-fr-noattn", "test_exact_match": 0.5, "exact_match_by_length": {"3": 0.9},
             "count_by_length": {"3": 10}, "train_s": 1.0}]},
        "charlm": {"command": "c", "load": "l", "row": {"recipe": "r", "test_bpc": 3.9, "unigram_bpc": 4.8,
                                                        "bigram_bpc": 3.7, "train_s": 1.0}},
        "copy": {"command": "c", "load": "l", "delay": 100, "rows": [
            {"model": "rnn", "symbol_accuracy": 0.13, "exact_copy_rate": 0.0, "steps": 5, "train_s": 1.0},
            {"model": "lstm", "symbol_accuracy": 0.97, "exact_copy_rate": 0.8, "steps": 5, "train_s": 1.0}]},
    }
    t = seqbench.targets(data)
    assert t["translation_attention_exact_match_>=_0.99"] is True
    assert t["charlm_bpc_below_bigram"] is False  # 3.9 > 3.7
    assert t["copy_lstm_solves_(>=0.95)_rnn_fails_(<0.5)"] is True
    data["copy"]["rows"][0]["symbol_accuracy"] = 0.6
    assert seqbench.targets(data)["copy_lstm_solves_(>=0.95)_rnn_fails_(<0.5)"] is False
    seqbench.write_md(data)
    md = seqbench.MD_PATH.read_text()
    assert "| numbers-fr-attention | 0.995 | 1.0 | 1.0 |" in md
    assert "delay T = 100" in md
