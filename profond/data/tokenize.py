"""Tokenizers for the sequence models of chapters 5 and 6: characters and byte-pair encoding.

Both tokenizers map text to lists of integer ids and back, and are saved to / loaded from
a small JSON file so that a run can store the exact vocabulary it was trained with
(:meth:`save`, :func:`load_tokenizer`).

Id layout (both tokenizers)
    The special tokens come first: ``<pad>`` = 0 (so ``nn.Embedding(..., padding_idx=0)``
    works as in the course's §5.8 listing), ``<unk>`` = 1, ``<bos>`` = 2, ``<eos>`` = 3.
    Then the characters (:class:`CharTokenizer`) or the 256 bytes followed by the merged
    tokens in merge order (:class:`BPETokenizer`). Special tokens are never produced by
    :meth:`encode` from text (a ``"<"`` in the text is just the character ``"<"``); add them
    yourself with ``encode(text, bos=True, eos=True)``.

:class:`CharTokenizer`
    One id per character seen (at least ``min_count`` times) in the training text;
    unknown-character policy: any other character encodes to ``<unk>`` (counted by
    :meth:`CharTokenizer.count_unknown`), so decoding is exact only for known characters.

:class:`BPETokenizer`
    Byte-level byte-pair encoding (Sennrich et al. 2016), our own implementation: text is
    cut into pre-tokens (a word with its leading space, a run of punctuation, a run of
    whitespace), each pre-token is a sequence of UTF-8 bytes, and training repeatedly
    merges the most frequent adjacent pair of tokens (ties: the smallest pair of ids),
    counted over pre-tokens weighted by frequency. Since every byte is in the base
    vocabulary, ``decode(encode(t)) == t`` for *any* text, including characters never
    seen in training. :func:`pad_batch` pads a list of id lists for ``pack_padded_sequence``.
"""

from __future__ import annotations

import heapq
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from ..errors import DatasetError

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, BOS, EOS)
FORMAT_VERSION = 1


class _Specials:
    """Shared handling of the special tokens, which take the first ids."""

    specials: tuple[str, ...]

    @property
    def pad_id(self) -> int:
        return self.specials.index(PAD)

    @property
    def unk_id(self) -> int:
        return self.specials.index(UNK)

    @property
    def bos_id(self) -> int:
        return self.specials.index(BOS)

    @property
    def eos_id(self) -> int:
        return self.specials.index(EOS)

    def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: a temporary file then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        tmp.replace(path)

    def to_dict(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError


def _check_specials(specials: Sequence[str]) -> tuple[str, ...]:
    specials = tuple(specials)
    missing = [s for s in SPECIALS if s not in specials]
    if missing or len(set(specials)) != len(specials):
        raise ValueError(f"specials must be distinct and contain {SPECIALS}, got {specials}")
    return specials


# ----------------------------------------------------------------------------------------
# Characters
# ----------------------------------------------------------------------------------------


class CharTokenizer(_Specials):
    """Character-level tokenizer (char-level LM, ch. 5; seq2seq of exercise 6.1): one id per char."""

    kind = "char"

    def __init__(self, chars: Iterable[str], specials: Sequence[str] = SPECIALS):
        self.specials = _check_specials(specials)
        self.chars: list[str] = list(chars)
        if any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError("chars must be distinct single characters")
        self.itos: list[str] = list(self.specials) + self.chars
        self.stoi: dict[str, int] = {c: i + len(self.specials) for i, c in enumerate(self.chars)}

    @classmethod
    def fit(
        cls, text: str | Iterable[str], min_count: int = 1, specials: Sequence[str] = SPECIALS
    ) -> CharTokenizer:
        """The characters of ``text`` seen at least ``min_count`` times, sorted by code point."""
        counts: Counter[str] = Counter()
        for piece in [text] if isinstance(text, str) else text:
            counts.update(piece)
        return cls(sorted(c for c, n in counts.items() if n >= min_count), specials)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of the characters of ``text``; unknown characters become ``<unk>``."""
        unk = self.unk_id
        return self._wrap([self.stoi.get(c, unk) for c in text], bos, eos)

    def encode_tensor(self, text: str) -> torch.Tensor:
        """``encode`` as an int64 tensor (a whole corpus at once)."""
        return torch.tensor(self.encode(text), dtype=torch.int64)

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """The text of ``ids``; special tokens are dropped (or written as ``<unk>``...)."""
        n_spec = len(self.specials)
        out = []
        for i in ids:
            i = int(i)
            if i >= n_spec:
                out.append(self.itos[i])
            elif not skip_specials:
                out.append(self.itos[i])
        return "".join(out)

    def count_unknown(self, text: str) -> int:
        """How many characters of ``text`` are outside the vocabulary."""
        return sum(1 for c in text if c not in self.stoi)

    def to_dict(self) -> dict:
        return {
            "type": self.kind,
            "version": FORMAT_VERSION,
            "specials": list(self.specials),
            "chars": self.chars,
        }

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        return cls(d["chars"], d["specials"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------------------
# Byte-pair encoding
# ----------------------------------------------------------------------------------------

#: Pre-tokens: a word with its optional leading space, a run of other non-space
#: characters with its optional leading space, or a run of whitespace. Together they
#: cover every character, so joining the pre-tokens gives back the text.
PRETOKEN = re.compile(r" ?\w+| ?[^\w\s]+|\s+")


def pretokenize(text: str) -> list[str]:
    """Cut ``text`` into pre-tokens; merges never cross their boundaries."""
    return PRETOKEN.findall(text)


Pair = tuple[int, int]


def _merge_word(word: tuple[int, ...], pair: Pair, new: int) -> tuple[int, ...]:
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _pairs(word: tuple[int, ...]) -> Counter[Pair]:
    return Counter(zip(word, word[1:], strict=False))


def learn_merges(text: str | Iterable[str], num_merges: int, min_frequency: int = 2) -> list[Pair]:
    """Learn up to ``num_merges`` byte-pair merges from ``text`` (byte ids 0..255).

    Token ``256 + k`` is the merge of pair ``k``. Pair counts are kept up to date
    incrementally: a merge only recounts the distinct pre-tokens that contain its pair.
    Stops early when no pair occurs ``min_frequency`` times.
    """
    freq: Counter[str] = Counter()
    for piece in [text] if isinstance(text, str) else text:
        freq.update(pretokenize(piece))
    words = [tuple(w.encode("utf-8")) for w in freq]
    counts = list(freq.values())
    pair_count: Counter[Pair] = Counter()
    where: dict[Pair, set[int]] = {}
    for wi, w in enumerate(words):
        for p, k in _pairs(w).items():
            pair_count[p] += k * counts[wi]
            where.setdefault(p, set()).add(wi)
    # A max-heap of (-count, pair), refreshed lazily: an entry is stale when its count
    # differs from pair_count; ties pop the smallest pair, so training is deterministic.
    heap = [(-n, p) for p, n in pair_count.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    while heap and len(merges) < num_merges:
        neg, best = heapq.heappop(heap)
        if pair_count.get(best, 0) != -neg:
            continue  # stale entry
        if -neg < min_frequency:
            break
        new = 256 + len(merges)
        merges.append(best)
        changed: set[Pair] = set()
        for wi in sorted(where.pop(best, ())):
            old = words[wi]
            merged = _merge_word(old, best, new)
            for p, k in _pairs(old).items():
                pair_count[p] -= k * counts[wi]
                changed.add(p)
                if p in where:
                    where[p].discard(wi)
            for p, k in _pairs(merged).items():
                pair_count[p] += k * counts[wi]
                changed.add(p)
                where.setdefault(p, set()).add(wi)
            words[wi] = merged
        for p in changed:
            if pair_count[p] > 0:
                heapq.heappush(heap, (-pair_count[p], p))
            else:
                del pair_count[p]
                where.pop(p, None)
    return merges


class BPETokenizer(_Specials):
    """Byte-level byte-pair encoding tokenizer (own implementation, see the module doc)."""

    kind = "bpe"

    def __init__(self, merges: Sequence[Sequence[int]], specials: Sequence[str] = SPECIALS):
        self.specials = _check_specials(specials)
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.rank: dict[Pair, int] = {p: k for k, p in enumerate(self.merges)}
        # The bytes of every token (base bytes, then merges in order).
        self.token_bytes: list[bytes] = [bytes([b]) for b in range(256)]
        for k, (a, b) in enumerate(self.merges):
            if not (a < 256 + k and b < 256 + k):
                raise ValueError(f"merge {k} ({a}, {b}) refers to a later token")
            self.token_bytes.append(self.token_bytes[a] + self.token_bytes[b])
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int = 1000,
        min_frequency: int = 2,
        specials: Sequence[str] = SPECIALS,
    ) -> BPETokenizer:
        """Learn merges until the vocabulary (specials + 256 bytes + merges) has ``vocab_size``."""
        specials = _check_specials(specials)
        num_merges = vocab_size - 256 - len(specials)
        if num_merges < 0:
            raise ValueError(f"vocab_size must be >= {256 + len(specials)}, got {vocab_size}")
        return cls(learn_merges(text, num_merges, min_frequency), specials)

    @property
    def vocab_size(self) -> int:
        return len(self.specials) + len(self.token_bytes)

    def __len__(self) -> int:
        return self.vocab_size

    def _encode_pretoken(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        word = tuple(piece.encode("utf-8"))
        while len(word) > 1:
            ranked = [
                (self.rank[p], p) for p in zip(word, word[1:], strict=False) if p in self.rank
            ]
            if not ranked:
                break
            k, pair = min(ranked)
            word = _merge_word(word, pair, 256 + k)
        ids = list(word)
        if len(self._cache) < 100_000:
            self._cache[piece] = ids
        return ids

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Ids of ``text``: merges applied in the order they were learned, per pre-token."""
        off = len(self.specials)
        ids = [i + off for piece in pretokenize(text) for i in self._encode_pretoken(piece)]
        return self._wrap(ids, bos, eos)

    def decode(self, ids: Iterable[int], skip_specials: bool = True) -> str:
        """The text of ``ids`` (invalid UTF-8, e.g. a cut multi-byte char, becomes U+FFFD)."""
        off = len(self.specials)
        out = bytearray()
        for i in ids:
            i = int(i)
            if i >= off:
                out += self.token_bytes[i - off]
            elif not skip_specials:
                out += self.specials[i].encode("utf-8")
        return out.decode("utf-8", errors="replace")

    def token(self, i: int) -> str:
        """A readable form of token ``i`` (for inspecting the vocabulary)."""
        off = len(self.specials)
        if i < off:
            return self.specials[i]
        return self.token_bytes[i - off].decode("utf-8", errors="backslashreplace")

    def to_dict(self) -> dict:
        return {
            "type": self.kind,
            "version": FORMAT_VERSION,
            "specials": list(self.specials),
            "merges": [list(p) for p in self.merges],
        }

    @classmethod
    def from_dict(cls, d: dict) -> BPETokenizer:
        return cls(d["merges"], d["specials"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)})"


Tokenizer = CharTokenizer | BPETokenizer
_KINDS = {"char": CharTokenizer, "bpe": BPETokenizer}


def tokenizer_from_dict(d: dict) -> Tokenizer:
    kind = d.get("type")
    if kind not in _KINDS:
        raise DatasetError(f"unknown tokenizer type {kind!r}; expected one of {sorted(_KINDS)}.")
    if d.get("version", FORMAT_VERSION) > FORMAT_VERSION:
        raise DatasetError(
            f"tokenizer format version {d['version']} is newer than this profond "
            f"({FORMAT_VERSION}); upgrade profond."
        )
    return _KINDS[kind].from_dict(d)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load a tokenizer written by ``save`` (the type is read from the file)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: tokenizer file not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not a tokenizer JSON file ({e}).") from None
    try:
        return tokenizer_from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: malformed tokenizer file ({e}).") from None


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int = 0, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into ``(B, T)`` int64 and return it with the ``(B,)`` lengths.

    Sequences longer than ``max_len`` are cut. The lengths are what
    ``nn.utils.rnn.pack_padded_sequence`` needs (§5.8).
    """
    if max_len is not None:
        seqs = [s[:max_len] for s in seqs]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    width = int(lengths.max()) if len(seqs) else 0
    out = torch.full((len(seqs), width), pad_id, dtype=torch.int64)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.int64)
    return out, lengths
