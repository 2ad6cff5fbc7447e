"""Character and byte-pair tokenizers (profond.data.tokenize): round trips, merges, files."""

from __future__ import annotations

import codecs
import json
import this  # the Zen of Python, ROT13-encoded in the standard library: a small real text

import pytest
import torch

from profond.data.tokenize import (
    BPETokenizer,
    CharTokenizer,
    learn_merges,
    load_tokenizer,
    pad_batch,
    pretokenize,
)
from profond.errors import DatasetError

ZEN = codecs.decode(this.s, "rot13")
TRAIN = "\n".join([ZEN, CharTokenizer.__doc__ or "", BPETokenizer.train.__doc__ or ""] * 3)
UNSEEN = (
    "Readability counts, they say; naïve café owners disagree!\n"
    "\tTabs, ünïcödé, 中文 and emoji 🙂 never seen in training.  Double  spaces too."
)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TRAIN, vocab_size=4 + 256 + 150)


# -- characters ---------------------------------------------------------------------------


def test_char_specials_first_and_round_trip():
    tok = CharTokenizer.fit("hello world")
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.chars == sorted(set("hello world"))
    assert tok.vocab_size == 4 + len(set("hello world"))
    ids = tok.encode("hello", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "hello"
    assert tok.decode(ids, skip_specials=False) == "<bos>hello<eos>"


def test_char_unknown_policy_and_min_count():
    tok = CharTokenizer.fit("aaab", min_count=2)  # "b" seen once: unknown
    assert tok.chars == ["a"]
    assert tok.encode("abz") == [tok.stoi["a"], tok.unk_id, tok.unk_id]
    assert tok.count_unknown("abz") == 2
    assert tok.decode(tok.encode("abz")) == "a"  # unknowns are dropped on decoding
    assert tok.encode_tensor("aa").dtype == torch.int64


def test_char_save_load_identical(tmp_path):
    tok = CharTokenizer.fit(ZEN)
    tok.save(tmp_path / "run" / "tokenizer.json")
    back = load_tokenizer(tmp_path / "run" / "tokenizer.json")
    assert isinstance(back, CharTokenizer) and back == tok
    assert back.encode(ZEN) == tok.encode(ZEN)


# -- byte-pair encoding -------------------------------------------------------------------


def test_pretokens_cover_the_text():
    for text in (ZEN, UNSEEN, "", "  a\n\n b!?"):
        assert "".join(pretokenize(text)) == text


def test_learn_merges_most_frequent_pair_first():
    # "ab" occurs 3 times in each of two words, "bc" twice: a+b is merged first.
    merges = learn_merges("abab abab bcbc", num_merges=2, min_frequency=1)
    assert merges[0] == (ord("a"), ord("b"))
    assert learn_merges("abab abab bcbc", 2, 1) == merges  # deterministic
    assert learn_merges("xyz", 10, min_frequency=2) == []  # no pair occurs twice


def test_bpe_round_trip_exact_on_unseen_text(bpe):
    for text in (UNSEEN, ZEN, "", " ", "\n\n", "🙂"):
        assert bpe.decode(bpe.encode(text)) == text
    ids = bpe.encode(UNSEEN, bos=True, eos=True)
    assert ids[0] == bpe.bos_id and ids[-1] == bpe.eos_id
    assert all(0 <= i < bpe.vocab_size for i in ids)


def test_bpe_merges_reduce_token_count(bpe):
    assert bpe.vocab_size == 4 + 256 + 150 and len(bpe.merges) == 150
    unseen_english = "Beautiful is better than ugly, and readability counts in the namespace."
    n_bpe = len(bpe.encode(unseen_english))
    assert n_bpe < 0.6 * len(unseen_english)  # fewer tokens than characters
    assert len(bpe.encode(ZEN)) < 0.5 * len(ZEN.encode())
    assert bpe.token(bpe.encode(" the")[0]) == " the"  # a frequent word is one token


def test_bpe_save_load_identical(bpe, tmp_path):
    bpe.save(tmp_path / "bpe.json")
    d = json.loads((tmp_path / "bpe.json").read_text())
    assert d["type"] == "bpe" and len(d["merges"]) == 150
    back = load_tokenizer(tmp_path / "bpe.json")
    assert isinstance(back, BPETokenizer) and back == bpe
    assert back.encode(UNSEEN) == bpe.encode(UNSEEN)
    assert BPETokenizer.train(TRAIN, vocab_size=4 + 256 + 150) == bpe  # training is deterministic


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a tokenizer"):
        load_tokenizer(tmp_path / "bad.json")
    (tmp_path / "kind.json").write_text('{"type": "wordpiece"}')
    with pytest.raises(DatasetError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path / "kind.json")


def test_pad_batch():
    x, lengths = pad_batch([[5, 6, 7], [8], []], pad_id=0)
    assert x.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert lengths.tolist() == [3, 1, 0]
    x, lengths = pad_batch([[1, 2, 3, 4]], max_len=2)
    assert x.tolist() == [[1, 2]] and lengths.tolist() == [2]
