"""The synthetic associative-recall dataset (``assoc-recall``, exercise 6.5): format, labels,
seeded disjoint splits, the distance option, and that the text-classifier method trains on it."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from profond.data import text as T
from profond.errors import ConfigError
from profond.registry import DATASETS

PAIR = re.compile(r"([a-z])(\d)")


def parse(text: str) -> tuple[dict[str, str], str, list[str]]:
    """(key -> value, queried key, the body's cells) of one text."""
    body, query = text.rsplit(" ?", 1)
    cells = body.split(" ")
    pairs = dict(PAIR.fullmatch(c).groups() for c in cells if c != T.RECALL_FILLER)
    return pairs, query, cells


def test_registered_and_returns_text_class_data():
    d = DATASETS.build("assoc-recall", n_train=30, n_val=5, n_test=7, length=64, num_pairs=4)
    assert isinstance(d, T.TextClassData)
    assert d.classes == [str(i) for i in range(10)]
    assert (len(d.train), len(d.val), len(d.test)) == (30, 5, 7)
    with pytest.raises(ConfigError):
        DATASETS.build("assoc-recall", lenght=64)


@settings(max_examples=25, deadline=None)
@given(length=st.integers(20, 300), num_pairs=st.integers(1, 6), seed=st.integers(0, 10**6))
def test_every_text_is_well_formed_and_labelled_by_its_query(length, num_pairs, seed):
    slots = (length - 2) // 3
    if slots < num_pairs:
        with pytest.raises(ConfigError, match="num_pairs"):
            T.assoc_recall(length=length, num_pairs=num_pairs)
        return
    d = T.assoc_recall(n_train=10, n_val=3, n_test=3, length=length, num_pairs=num_pairs, seed=seed)
    for split in T.SPLITS:
        for text, y in d.split(split):
            pairs, query, cells = parse(text)
            assert len(text) == 3 * slots + 2 <= length
            assert len(cells) == slots and len(pairs) == num_pairs  # distinct keys
            assert sum(c != T.RECALL_FILLER for c in cells) == num_pairs
            assert pairs[query] == str(y) == d.classes[y]


def test_min_distance_puts_the_queried_pair_out_of_a_window():
    d = T.assoc_recall(n_train=200, n_val=0, n_test=0, length=128, num_pairs=6, min_distance=60)
    dist = []
    for text, _ in d.train:
        value_at = text.index(text[-1]) + 1  # the queried key's first occurrence, then its digit
        dist.append(len(text) - 1 - value_at)
    assert min(dist) >= 60
    # without the option the queried pair is anywhere, also next to the query
    d0 = T.assoc_recall(n_train=300, n_val=0, n_test=0, length=128, num_pairs=6)
    near = [len(t) - 2 - t.index(t[-1]) for t, _ in d0.train]
    assert min(near) < 60
    with pytest.raises(ConfigError, match="min_distance"):
        T.assoc_recall(length=32, min_distance=40)


def test_query_first_layout_and_distance():
    d = T.assoc_recall(n_train=200, n_val=0, n_test=0, length=128, num_pairs=6, query_first=True,
                       min_distance=45)
    for text, y in d.train:
        assert text[0] == "?" and text[2] == " "
        pairs = dict(PAIR.fullmatch(c).groups() for c in text[3:].split(" ") if c != T.RECALL_FILLER)
        assert pairs[text[1]] == str(y)
        at = text.index(text[1], 2)  # the queried key in the body; its value follows
        assert T.recall_distance(text) == at >= 45  # from index 1 to the value at at + 1
    # the same draw at the end of the text: distance measured from the last character
    end = T.assoc_recall(n_train=50, n_val=0, n_test=0, length=128, num_pairs=6, min_distance=45)
    for text, _ in end.train:
        assert T.recall_distance(text) == len(text) - 2 - text.index(text[-1]) >= 45


def test_seeded_deterministic_disjoint_and_balanced():
    a = T.assoc_recall(n_train=400, n_val=50, n_test=100, length=40, num_pairs=3, seed=3)
    b = T.assoc_recall(n_train=400, n_val=50, n_test=100, length=40, num_pairs=3, seed=3)
    c = T.assoc_recall(n_train=400, n_val=50, n_test=100, length=40, num_pairs=3, seed=4)
    assert a.train == b.train and a.test == b.test
    assert a.train != c.train
    tr, va, te = (set(x.texts(s)) for x, s in ((a, "train"), (a, "val"), (a, "test")))
    assert not (tr & va or tr & te or va & te)
    counts = Counter(a.labels("train").tolist())
    assert set(counts) == set(range(10)) and max(counts.values()) < 3 * min(counts.values())
    # a tiny space of texts: duplicates are dropped, never shared between splits
    tiny = T.assoc_recall(n_train=200, n_val=50, n_test=50, length=5, num_pairs=1)
    assert tiny.dropped["duplicates"] > 0
    sets = [set(tiny.texts(s)) for s in T.SPLITS]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_text_classifier_method_reads_it(tmp_path):
    """The existing text-classifier method builds on it with a char tokenizer (a data check:
    the tokenizer sees the letters, digits, filler and query marks)."""
    from profond.config import resolve
    from profond.contract import Env
    from profond.methods.sequence import TextClassifier

    cfg = resolve(overrides=[
        "model.name=rnn-classifier", "model.embed_dim=8", "model.hidden_size=8",
        "data.name=assoc-recall", "data.batch_size=16", "method.name=text-classifier",
        "method.tokenizer=char", "method.baseline=false",
        "method.dataset={n_train: 64, n_val: 16, n_test: 16, length: 32, num_pairs: 3}",
        "train.quiet=true", "train.device=cpu", f"out={tmp_path}", "name=r",
    ])
    m = TextClassifier(cfg, Env(torch.device("cpu")))
    tokens, lengths, y = next(iter(m.train_data))
    assert tokens.shape[0] == 16 and int(lengths.max()) == 3 * 10 + 2
    assert y.max() < 10 and m.classes == [str(i) for i in range(10)]
    assert {"?", ".", " ", "a", "0"} <= set(m.tokenizer.chars)


# ----------------------------------------------------------------------------------------
# task="needle": one needle character among filler, found by one content lookup


@settings(max_examples=25, deadline=None)
@given(length=st.integers(1, 300), min_distance=st.integers(0, 300), seed=st.integers(0, 10**6))
def test_needle_texts_hold_one_needle_labelling_them(length, min_distance, seed):
    if min_distance > length:
        with pytest.raises(ConfigError, match="min_distance"):
            T.assoc_recall(task="needle", length=length, min_distance=min_distance)
        return
    d = T.assoc_recall(task="needle", n_train=10, n_val=3, n_test=3, length=length, min_distance=min_distance,
                       seed=seed)
    assert d.classes == [str(i) for i in range(10)]
    for split in T.SPLITS:
        for text, y in d.split(split):
            assert len(text) == length
            needles = [(i, c) for i, c in enumerate(text) if c in T.NEEDLES]
            assert len(needles) == 1  # exactly one, the rest is filler
            assert set(text) - {needles[0][1]} <= set(T.NEEDLE_FILLER)
            at, c = needles[0]
            assert T.NEEDLES.index(c) == y
            assert T.recall_distance(text) == at + 1 >= min_distance  # from a [CLS] before the text


def test_needle_positions_cover_the_text_and_labels_are_balanced():
    d = T.assoc_recall(task="needle", n_train=2000, n_val=100, n_test=100, length=64, seed=1)
    dist = [T.recall_distance(t) for t in d.texts("train")]
    assert min(dist) == 1 and max(dist) == 64  # first to last character
    counts = Counter(d.labels("train").tolist())
    assert set(counts) == set(range(10)) and max(counts.values()) < 1.5 * min(counts.values())
    far = T.assoc_recall(task="needle", n_train=300, n_val=0, n_test=0, length=64, min_distance=40)
    assert min(T.recall_distance(t) for t in far.texts("train")) >= 40
    tr, va, te = (set(d.texts(s)) for s in T.SPLITS)
    assert not (tr & va or tr & te or va & te)
    again = T.assoc_recall(task="needle", n_train=2000, n_val=100, n_test=100, length=64, seed=1)
    assert again.train == d.train and again.test == d.test


def test_kv_stays_the_default_and_bad_task_is_a_config_error():
    assert T.assoc_recall(n_train=5, n_val=0, n_test=0, length=40, num_pairs=2).train == \
        T.assoc_recall(task="kv", n_train=5, n_val=0, n_test=0, length=40, num_pairs=2).train
    with pytest.raises(ConfigError, match="task"):
        T.assoc_recall(task="needles")


def test_one_attention_layer_finds_the_needle_local_attention_cannot(tmp_path):
    """The needle task is solvable by one softmax layer reading from a [CLS] token, wherever the
    needle lies; a local layer of window 4 only sees the first 3 characters, so needles placed
    beyond them (min_distance 6) leave it at chance."""
    from profond.config import resolve
    from profond.train import train

    def run(impl: str, extra: list[str]) -> float:
        cfg = resolve(overrides=[
            "model.name=attn-classifier", "model.d_model=32", "model.num_heads=2", "model.num_layers=1",
            "model.d_ff=64", "model.pool=cls", "model.pos=sinusoidal", "model.max_len=16",
            f"model.attn_impl={impl}", *extra, "data.name=assoc-recall", "data.batch_size=32",
            "method.name=text-classifier", "method.tokenizer=char", "method.max_len=16", "method.baseline=false",
            "method.dataset={task: needle, n_train: 800, n_val: 50, n_test: 300, length: 16, min_distance: 6}",
            "optim.name=adamw", "optim.lr=0.003", "train.epochs=5", "train.quiet=true", "train.device=cpu",
            "train.threads=1", "train.seed=0", f"out={tmp_path}", f"name={impl}",
        ])
        return float(train(cfg).summary["final"]["test_accuracy"])

    assert run("sdpa", []) > 0.9
    assert run("local", ["model.window=4"]) < 0.25
