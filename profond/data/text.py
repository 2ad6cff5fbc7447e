"""Text data for the sequence models of chapters 5 and 6: fortunes and French numbers.

Fortunes (Debian packages ``fortunes``, ``fortunes-min``, ``fortunes-de``, ...)
    Each file of ``/usr/share/games/fortunes`` holds quotes separated by lines holding a
    single ``%`` (the ``strfile`` format; the ``.dat`` files are its binary indexes and
    the ``.u8`` names are UTF-8 aliases of the same files: both are ignored; every file
    of the packages is UTF-8, checked when this module was written). The ``off/``
    folders ("offensive" fortunes, ROT13 in some packages) are never read.

    * :func:`fortune_topics` - topic classification over :data:`TOPICS` (12 English
      topic files), the task of the course's BiLSTM classifier (§5.8);
    * :func:`fortune_languages` - language identification over :data:`LANGUAGES`
      (en, de, es, it, pt-br, pl, cs, ru);
    * :func:`char_corpus` - the English fortunes as train/val/test character streams for
      a character-level language model (chapter 5), with a :class:`CharTokenizer`
      fitted on the training text.

    Cleaning: ``\\r\\n`` -> ``\\n``, overstrike sequences ``X<BS>`` (old underlining) are
    removed, control characters are dropped (C0 except tab and newline, and C1, found only
    in a few doubly-encoded lines of ``computers``, ``law``, ``de/zitate``...), and each
    fortune is stripped of surrounding blank space. Deduplication: two fortunes are the
    same when they are equal after case folding and collapsing whitespace; the first
    occurrence (files in sorted order) is kept. In a labelled set a fortune found under
    two different labels is dropped altogether (its label is ambiguous).

    Split: deterministic by a seeded hash of the normalised text. Each fortune draws
    ``u = blake2b(f"{seed}:{text}") / 2**64`` in [0, 1); ``u < test_frac`` -> test,
    ``u < test_frac + val_frac`` -> val, otherwise train. A fortune keeps its split
    whatever other files are installed, and duplicates (which share the normalised text)
    always land in the same split, so no quote is in both train and test.

French numbers (exercise 6.1: "cent vingt-trois" -> "123")
    :func:`french_numbers` pairs every number 0..999 999 with its French spelling by
    ``num2words(n, lang="fr")``; see its docstring for the held-out split.

For method writers
    The registered builders (``profond list datasets``) return these dataclasses, not
    :class:`~profond.data.vision.ImageData`; build them with
    ``DATASETS.build(name, **options)``, options being the keyword arguments below:

    * ``fortune-topics``, ``fortune-languages`` -> :class:`TextClassData`: ``classes``,
      ``train``/``val``/``test`` lists of ``(text, label)``, ``texts(split)``,
      ``labels(split)`` (int64 tensor), ``counts()`` per class and split, ``dropped``;
    * ``fortune-chars`` -> :class:`CharCorpus`: ``train``/``val``/``test`` strings,
      ``tokenizer`` (:class:`~profond.data.tokenize.CharTokenizer`), ``encode(split)``
      (int64 tensor), ``unknown`` (out-of-vocabulary characters per split);
    * ``french-numbers`` -> :class:`FrenchNumbers`: ``pairs(split, direction)``,
      ``input_lengths(split, direction)``, ``texts()`` to fit a tokenizer.

    Tokenize with :mod:`profond.data.tokenize` (``pad_batch`` pads to ``(B, T)`` with
    the lengths for ``pack_padded_sequence``).

Missing packages raise :class:`~profond.errors.DatasetError` naming the apt package.
Where the fortunes are looked for, in order: ``data_dir/fortunes``, ``$PROFOND_DATA/
fortunes``, ``~/.cache/profond/fortunes``, then :data:`FORTUNE_DIRS` (the Debian folder);
the first existing folder is used (a copy must keep the Debian layout: ``de/``, ``es/``...).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..registry import DATASETS
from .tokenize import CharTokenizer
from .vision import cache_root

SPLITS = ("train", "val", "test")

#: Folders searched last for the fortunes (a list so tests can replace it).
FORTUNE_DIRS: list[Path] = [Path("/usr/share/games/fortunes")]

#: The English files of the packages ``fortunes`` and ``fortunes-min`` (top folder).
#: Explicit, so that the other packages' links in that folder (Italian files are linked
#: there by ``fortunes-it``, ``brasil`` comes from ``fortunes-br``) never leak in.
#: ``ascii-art`` is left out (pictures, not text).
ENGLISH_FILES: tuple[str, ...] = (
    "art", "computers", "cookie", "debian", "definitions", "disclaimer", "drugs",
    "education", "ethnic", "food", "fortunes", "goedel", "humorists", "kids", "knghtbrd",
    "law", "linux", "linuxcookie", "literature", "love", "magic", "medicine", "men-women",
    "miscellaneous", "news", "paradoxum", "people", "perl", "pets", "platitudes",
    "politics", "pratchett", "riddles", "science", "songs-poems", "sports", "startrek",
    "tao", "translate-me", "wisdom", "work", "zippy",
)  # fmt: skip
#: Files of ``fortunes-min``, the rest are in ``fortunes``.
MIN_FILES = ("fortunes", "literature", "riddles")

#: The topic classification classes: 12 English topic files of the ``fortunes`` package
#: with 147-1051 fortunes each (before deduplication), chosen for distinct subjects
#: (``people``, ``cookie``, ``miscellaneous``... are mixed bags and left out).
TOPICS: tuple[str, ...] = (
    "computers", "drugs", "education", "food", "law", "literature",
    "men-women", "politics", "science", "songs-poems", "sports", "startrek",
)  # fmt: skip


@dataclass(frozen=True)
class LanguageSource:
    """Where a language's fortunes are: a sub-folder (all its files) or listed files."""

    package: str  # the apt package providing them
    folder: str = ""  # relative to the fortunes root
    files: tuple[str, ...] = ()  # empty: every fortune file of the folder
    exclude: tuple[str, ...] = ()  # ASCII-art files, not language


#: Language identification: code -> source. Russian is read too (it parses cleanly).
LANGUAGES: dict[str, LanguageSource] = {
    "en": LanguageSource("fortunes", "", ENGLISH_FILES),
    "de": LanguageSource("fortunes-de", "de", exclude=("asciiart",)),
    "es": LanguageSource("fortunes-es", "es"),
    "it": LanguageSource("fortunes-it", "it", exclude=("banner",)),
    "pt-br": LanguageSource("fortunes-br", "", ("brasil",)),
    "pl": LanguageSource("fortunes-pl", "pl"),
    "cs": LanguageSource("fortunes-cs", "cs"),
    "ru": LanguageSource("fortunes-ru", "ru"),
}


# ----------------------------------------------------------------------------------------
# The %-separated format
# ----------------------------------------------------------------------------------------

_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)
_OVERSTRIKE = re.compile(r".\x08")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 but tab/newline, DEL, C1


def clean_fortune(text: str) -> str:
    """Normalise newlines, remove overstrikes and control characters, strip the ends."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _OVERSTRIKE.sub("", text)
    return _CONTROL.sub("", text).strip()


def parse_fortunes(text: str) -> list[str]:
    """Split a fortune file's text on its ``%`` lines into cleaned, non-empty fortunes."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts = (clean_fortune(p) for p in _SEPARATOR.split(text))
    return [p for p in parts if p]


def normalise(text: str) -> str:
    """The deduplication key: case-folded, whitespace runs collapsed to one space."""
    return " ".join(text.casefold().split())


def dedupe(texts: Iterable[str]) -> list[str]:
    """``texts`` without repeats (same :func:`normalise` key), first occurrences kept."""
    return [t for t, _ in _dedupe_keyed(texts)]


def _dedupe_keyed(texts: Iterable[str]) -> list[tuple[str, str]]:
    """``(text, key)`` for the first occurrence of each key (normalising each text once)."""
    seen: set[str] = set()
    out = []
    for t in texts:
        k = normalise(t)
        if k not in seen:
            seen.add(k)
            out.append((t, k))
    return out


def split_of(text: str, seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for ``text`` by a seeded hash (module doc)."""
    return _split_of_key(normalise(text), seed, val_frac, test_frac)


def _unit_hash(key: str, salt: str) -> float:
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split_of_key(key: str, seed: int, val_frac: float, test_frac: float) -> str:
    u = _unit_hash(key, str(seed))
    return "test" if u < test_frac else ("val" if u < test_frac + val_frac else "train")


def _check_fracs(val_frac: float, test_frac: float) -> None:
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise ConfigError(
            f"val_frac={val_frac} and test_frac={test_frac} must be >= 0 with a sum below 1."
        )


# ----------------------------------------------------------------------------------------
# Finding and reading the files
# ----------------------------------------------------------------------------------------


def fortune_places(data_dir: str | None = None) -> list[tuple[str, Path]]:
    """The ``(label, folder)`` places searched for the fortunes, in order."""
    places: list[tuple[str, Path]] = []
    if data_dir:
        root = Path(data_dir).expanduser()
        places.append(("--data-dir", root / "fortunes"))
        if root.name == "fortunes":
            places.append(("--data-dir", root))
    env = os.environ.get("PROFOND_DATA")
    if env:
        places.append(("$PROFOND_DATA", Path(env).expanduser() / "fortunes"))
    places.append(("user cache", cache_root() / "fortunes"))
    places += [("system", Path(d)) for d in FORTUNE_DIRS]
    return places


def fortune_root(data_dir: str | None = None, package: str = "fortunes") -> Path:
    """The first existing fortunes folder; a DatasetError naming ``package`` if none."""
    places = fortune_places(data_dir)
    for _label, folder in places:
        if folder.is_dir():
            return folder
    searched = "; ".join(f"{p} ({label})" for label, p in places)
    raise DatasetError(
        f"no fortunes found. Searched: {searched}. To get them: `sudo apt-get install "
        f"{package}` (Debian/Ubuntu), or pass --data-dir ROOT with ROOT/fortunes/ laid "
        "out like /usr/share/games/fortunes."
    )


def _is_fortune_file(p: Path) -> bool:
    return (
        p.is_file()
        and not p.name.endswith((".dat", ".u8"))
        and not p.name.startswith(".")
        and p.stat().st_size > 0
    )


@functools.lru_cache(maxsize=256)
def _read_file_cached(path: str, mtime: float) -> tuple[str, ...]:
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # never happens with the Debian files; be lenient
    return tuple(parse_fortunes(text))


def read_fortune_file(path: str | os.PathLike) -> list[str]:
    """The cleaned fortunes of one file (UTF-8; Latin-1 as a fallback). Cached per file."""
    p = Path(path)
    return list(_read_file_cached(str(p.resolve()), p.stat().st_mtime))


def language_files(code: str, data_dir: str | None = None) -> list[Path]:
    """The fortune files of language ``code``; a DatasetError naming the apt package."""
    if code not in LANGUAGES:
        raise ConfigError(f"unknown language {code!r}; valid: {', '.join(LANGUAGES)}.")
    src = LANGUAGES[code]
    root = fortune_root(data_dir, src.package)
    folder = root / src.folder
    hint = f"`sudo apt-get install {src.package}`"
    if src.files:
        paths = [folder / f for f in src.files]
        missing = [p for p in paths if not p.is_file()]
        if len(missing) == len(paths):
            raise DatasetError(
                f"{code} fortunes not found in {folder} (no {', '.join(src.files[:3])}...). "
                f"Install them: {hint}."
            )
        if code == "en" and any(p.name in MIN_FILES for p in missing):
            raise DatasetError(
                f"English fortunes incomplete in {folder}: "
                f"{', '.join(p.name for p in missing)} missing. Install them: "
                "`sudo apt-get install fortunes fortunes-min`."
            )
        return [p for p in paths if p.is_file()]
    if not folder.is_dir():
        raise DatasetError(f"{code} fortunes not found: no folder {folder}. Install them: {hint}.")
    paths = sorted(p for p in folder.iterdir() if _is_fortune_file(p) and p.name not in src.exclude)
    if not paths:
        raise DatasetError(f"{code} fortunes not found: {folder} has no fortune files. {hint}.")
    return paths


def topic_file(topic: str, data_dir: str | None = None) -> Path:
    """The English file of ``topic``; a DatasetError naming the package if it is missing."""
    root = fortune_root(data_dir, "fortunes")
    p = root / topic
    if not p.is_file():
        pkg = "fortunes-min" if topic in MIN_FILES else "fortunes"
        raise DatasetError(
            f"fortune topic file {p} not found. Install it: `sudo apt-get install {pkg}`."
        )
    return p


# ----------------------------------------------------------------------------------------
# Labelled sets: topics and languages
# ----------------------------------------------------------------------------------------


@dataclass
class TextClassData:
    """A text classification dataset: ``(text, label)`` pairs per split.

    ``dropped`` counts what was removed and why (``duplicates`` within a class,
    ``conflicts``: texts found under two labels, ``capped``: beyond ``max_per_class``).
    """

    name: str
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    source: str
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> list[tuple[str, int]]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}.")
        return getattr(self, name)

    def texts(self, split: str) -> list[str]:
        return [t for t, _ in self.split(split)]

    def labels(self, split: str) -> torch.Tensor:
        """The labels of ``split`` as an int64 tensor."""
        return torch.tensor([y for _, y in self.split(split)], dtype=torch.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{class: {"train": n, "val": n, "test": n, "total": n}}``."""
        out = {c: dict.fromkeys((*SPLITS, "total"), 0) for c in self.classes}
        for s in SPLITS:
            for _, y in self.split(s):
                out[self.classes[y]][s] += 1
                out[self.classes[y]]["total"] += 1
        return out


def build_labelled(
    name: str,
    groups: Sequence[tuple[str, Sequence[str]]],
    *,
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    max_per_class: int | None = None,
    source: str = "",
) -> TextClassData:
    """Deduplicate, resolve conflicts, cap and split ``[(class, texts), ...]``.

    Capping keeps the ``max_per_class`` texts of smallest seeded hash (a deterministic
    random subset, independent of file order). Within a split, examples are ordered by
    class then by their order in the files.
    """
    _check_fracs(val_frac, test_frac)
    classes = [c for c, _ in groups]
    per_class = [_dedupe_keyed(texts) for _, texts in groups]
    dropped = {"duplicates": sum(len(t) for _, t in groups) - sum(map(len, per_class))}
    owners = Counter(k for rows in per_class for _, k in rows)
    kept = [[(t, k) for t, k in rows if owners[k] == 1] for rows in per_class]
    dropped["conflicts"] = sum(map(len, per_class)) - sum(map(len, kept))
    dropped["capped"] = 0
    if max_per_class is not None:
        for i, rows in enumerate(kept):
            if len(rows) > max_per_class:
                # A different hash stream from the split's, so capping favours no split.
                order = sorted(range(len(rows)), key=lambda j: _unit_hash(rows[j][1], f"cap{seed}"))
                keep = set(order[:max_per_class])
                dropped["capped"] += len(rows) - max_per_class
                kept[i] = [r for j, r in enumerate(rows) if j in keep]
    out: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for y, rows in enumerate(kept):
        for t, k in rows:
            out[_split_of_key(k, seed, val_frac, test_frac)].append((t, y))
    return TextClassData(name, classes, out["train"], out["val"], out["test"], source, dropped)


def fortune_topics(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    topics: Sequence[str] = TOPICS,
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    max_per_class: int | None = None,
) -> TextClassData:
    """English fortunes labelled by topic file (the classes are :data:`TOPICS`)."""
    if len(set(topics)) < 2:
        raise ConfigError("topic classification needs at least 2 distinct topics.")
    paths = [topic_file(t, data_dir) for t in topics]
    groups = [(t, read_fortune_file(p)) for t, p in zip(topics, paths, strict=True)]
    return build_labelled(
        "fortune-topics", groups, seed=seed, val_frac=val_frac, test_frac=test_frac,
        max_per_class=max_per_class, source=str(paths[0].parent),
    )  # fmt: skip


def fortune_languages(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    languages: Sequence[str] = tuple(LANGUAGES),
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    max_per_class: int | None = 2500,
) -> TextClassData:
    """Fortunes labelled by language (the classes are ``languages``, codes of :data:`LANGUAGES`).

    The packages are very unequal (pt-br ~2500 fortunes, ru ~21000), so by default each
    language is capped at 2500 fortunes (a seeded subset): the classes are then nearly
    balanced. ``max_per_class=None`` keeps everything; see :meth:`TextClassData.counts`.
    """
    groups = []
    for code in languages:
        texts = [t for p in language_files(code, data_dir) for t in read_fortune_file(p)]
        groups.append((code, texts))
    return build_labelled(
        "fortune-languages", groups, seed=seed, val_frac=val_frac, test_frac=test_frac,
        max_per_class=max_per_class, source=str(fortune_root(data_dir)),
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# Character corpus
# ----------------------------------------------------------------------------------------

#: What ends each fortune in the character streams: the file format's own separator.
END_OF_FORTUNE = "\n%\n"


@dataclass
class CharCorpus:
    """Train/val/test character streams and the tokenizer fitted on the training text.

    Unknown-character policy: characters of val/test (or train characters rarer than
    ``min_count``) that are not in the vocabulary encode to ``<unk>``; ``unknown`` counts
    them per split (report them next to bits per character).
    """

    name: str
    train: str
    val: str
    test: str
    tokenizer: CharTokenizer
    num_fortunes: dict[str, int]
    unknown: dict[str, int]
    source: str

    def split(self, name: str) -> str:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}.")
        return getattr(self, name)

    def encode(self, split: str) -> torch.Tensor:
        """The whole split as one int64 tensor of character ids."""
        return self.tokenizer.encode_tensor(self.split(split))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size


def char_corpus(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    files: Sequence[str] = ENGLISH_FILES,
    seed: int = 0,
    val_frac: float = 0.1,
    test_frac: float = 0.1,
    min_count: int = 1,
) -> CharCorpus:
    """English fortunes as character streams (char-level language model, chapter 5).

    Every fortune of ``files`` (deduplicated) goes to the split given by its hash, and
    each split is the concatenation of its fortunes, each followed by
    :data:`END_OF_FORTUNE`, in file order. The vocabulary is the characters of the
    training text seen at least ``min_count`` times.
    """
    _check_fracs(val_frac, test_frac)
    paths = [topic_file(f, data_dir) for f in files]
    rows = _dedupe_keyed(t for p in paths for t in read_fortune_file(p))
    parts: dict[str, list[str]] = {s: [] for s in SPLITS}
    for t, k in rows:
        parts[_split_of_key(k, seed, val_frac, test_frac)].append(t + END_OF_FORTUNE)
    streams = {s: "".join(v) for s, v in parts.items()}
    tok = CharTokenizer.fit(streams["train"], min_count=min_count)
    return CharCorpus(
        name="fortune-chars",
        **streams,
        tokenizer=tok,
        num_fortunes={s: len(v) for s, v in parts.items()},
        unknown={s: tok.count_unknown(v) for s, v in streams.items()},
        source=str(paths[0].parent),
    )


# ----------------------------------------------------------------------------------------
# French numbers (exercise 6.1)
# ----------------------------------------------------------------------------------------

MAX_NUMBER = 999_999
#: Numbers below this are always in the training set: they hold every irregular word
#: ("onze", "seize", "soixante et onze", "quatre-vingts"...), the lexicon of the task.
LEXICON_BELOW = 100


@functools.lru_cache(maxsize=2**17)
def french_words(n: int) -> str:
    """``n`` in French words by ``num2words(n, lang="fr")`` (``123 -> "cent vingt-trois"``)."""
    try:
        from num2words import num2words
    except ImportError:  # pragma: no cover - a dependency of profond
        raise DatasetError(
            "the French numbers need the num2words package: `pip install num2words`."
        ) from None
    return num2words(int(n), lang="fr")


def count_words(words: str) -> int:
    """Number words in a spelling, counting both sides of hyphens: "vingt-trois" is 2."""
    return len(re.split(r"[ -]+", words.strip()))


@dataclass(frozen=True)
class NumberPair:
    number: int
    words: str  # "cent vingt-trois"
    digits: str  # "123"

    @property
    def num_words(self) -> int:
        """Input length of the words -> digits direction (see :func:`count_words`)."""
        return count_words(self.words)

    @property
    def num_digits(self) -> int:
        return len(self.digits)


DIRECTIONS = ("words2digits", "digits2words")


@dataclass
class FrenchNumbers:
    """Number/spelling pairs split by *number*: val and test numbers never occur in train."""

    train: list[NumberPair]
    val: list[NumberPair]
    test: list[NumberPair]
    seed: int
    max_number: int

    def split(self, name: str) -> list[NumberPair]:
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}.")
        return getattr(self, name)

    def pairs(self, split: str, direction: str = "words2digits") -> list[tuple[str, str]]:
        """``(source, target)`` strings: words -> digits, or digits -> words."""
        _check_direction(direction)
        rows = self.split(split)
        if direction == "words2digits":
            return [(r.words, r.digits) for r in rows]
        return [(r.digits, r.words) for r in rows]

    def input_lengths(self, split: str, direction: str = "words2digits") -> list[int]:
        """Input length of each pair, in number words (or digits), for accuracy-by-length."""
        _check_direction(direction)
        rows = self.split(split)
        return [r.num_words if direction == "words2digits" else r.num_digits for r in rows]

    def texts(self) -> list[str]:
        """Every training string of both sides (to fit a tokenizer on)."""
        return [s for r in self.train for s in (r.words, r.digits)]


def _check_direction(direction: str) -> None:
    if direction not in DIRECTIONS:
        raise ConfigError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}.")


def _strata(max_number: int) -> list[np.ndarray]:
    """The numbers >= LEXICON_BELOW grouped by number of digits (3, 4, 5, 6)."""
    out = []
    lo = LEXICON_BELOW
    while lo <= max_number:
        hi = min(lo * 10 - 1, max_number)
        out.append(np.arange(lo, hi + 1))
        lo *= 10
    return out


def _balanced_sample(
    strata: list[np.ndarray], total: int, cap_frac: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """About ``total/len(strata)`` numbers from each stratum, at most ``cap_frac`` of it.

    Strata are visited smallest first; what a small stratum cannot give is shared among
    the larger ones, so the total is reached whenever the strata allow it.
    """
    picks = []
    left = total
    for i, s in enumerate(strata):
        share = -(-left // (len(strata) - i))  # ceil
        k = min(share, int(cap_frac * len(s)), len(s))
        picks.append(rng.choice(s, size=k, replace=False) if k else s[:0])
        left -= k
    return picks


def french_numbers(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    n_train: int = 20_000,
    n_val: int = 1_000,
    n_test: int = 2_000,
    seed: int = 0,
    max_number: int = MAX_NUMBER,
) -> FrenchNumbers:
    """French number spellings (``num2words``, lang ``fr``) split by number (exercise 6.1).

    * test: ``n_test`` numbers >= 100 drawn with a seeded generator, balanced across the
      digit counts 3-6 (at most 10% of a stratum, so 90 of the 900 three-digit numbers;
      the rest goes to the longer ones), so long inputs are well represented;
    * val: ``n_val`` more, drawn the same way from what is left;
    * train: every number below 100 (the lexicon) plus ``n_train`` numbers drawn, balanced
      across digit counts, from the numbers in neither val nor test.

    All three are disjoint and sorted by number. Sizes and ``seed`` fix the split.
    Spelling every number (num2words) is the slow part at the default sizes;
    ``data_dir``, ``download`` and ``progress`` are ignored (nothing is read).
    """
    if not 100 <= max_number <= MAX_NUMBER:
        raise ConfigError(f"max_number must be in 100..{MAX_NUMBER}, got {max_number}.")
    if min(n_train, n_val, n_test) < 0:
        raise ConfigError("n_train, n_val and n_test must be >= 0.")
    rng = np.random.default_rng(seed)
    strata = _strata(max_number)
    taken = np.zeros(max_number + 1, dtype=bool)

    def draw(total: int, cap_frac: float) -> list[np.ndarray]:
        picks = _balanced_sample([s[~taken[s]] for s in strata], total, cap_frac, rng)
        for p in picks:
            taken[p] = True
        return picks

    test = draw(n_test, 0.1)
    val = draw(n_val, 0.1)
    train = draw(n_train, 1.0)
    train_numbers = np.concatenate([np.arange(LEXICON_BELOW), *train])

    def rows(nums: np.ndarray) -> list[NumberPair]:
        return [NumberPair(int(n), french_words(int(n)), str(int(n))) for n in np.sort(nums)]

    return FrenchNumbers(
        rows(train_numbers), rows(np.concatenate(val)), rows(np.concatenate(test)),
        seed, max_number,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# Registration
# ----------------------------------------------------------------------------------------
# The builders take the vision builders' (data_dir, download, progress) so generic code can
# call any dataset; download/progress are ignored (everything is local). They return the
# dataclasses above, not ImageData: sequence methods call DATASETS.build(name, **options)
# (unknown options are a ConfigError) and use the fields documented here.

DATASETS.add(
    "fortune-topics",
    fortune_topics,
    "English fortunes, 12 topic classes (apt fortunes; BiLSTM classifier, §5.8)",
)
DATASETS.add(
    "fortune-languages",
    fortune_languages,
    "fortunes in 8 languages, language identification (apt fortunes-de, -es...)",
)
DATASETS.add(
    "fortune-chars",
    char_corpus,
    "English fortunes as character streams for a char-level language model (ch. 5)",
)
DATASETS.add(
    "french-numbers",
    french_numbers,
    "French number words <-> digits with held-out numbers (exercise 6.1)",
)


# ----------------------------------------------------------------------------------------
# Associative recall (exercise 6.5: what local and linear attention lose)
# ----------------------------------------------------------------------------------------

#: the keys of :func:`assoc_recall` (one character each, distinct within a text)
RECALL_KEYS = "abcdefghijklmnopqrstuvwxyz"
#: a slot of the text that holds no pair
RECALL_FILLER = ".."
#: the tasks of :func:`assoc_recall`
RECALL_TASKS = ("kv", "needle")
#: the filler characters of the needle task (disjoint from :data:`NEEDLES`)
NEEDLE_FILLER = "abcdefghijklmnopqrstuvwxyz"
#: the needles: ``NEEDLES[c]`` stands for class ``c``
NEEDLES = "ABCDEFGHIJ"


def _recall_text(rng: np.random.Generator, slots: int, num_pairs: int, eligible: np.ndarray,
                 query_first: bool) -> tuple[str, int]:
    """One key-value text of :func:`assoc_recall` and its label (the queried value)."""
    keys = rng.choice(len(RECALL_KEYS), size=num_pairs, replace=False)
    values = rng.integers(0, 10, size=num_pairs)
    # the queried pair (index 0) sits in an eligible slot (min_distance), the others anywhere else
    where = [int(rng.choice(eligible))]
    others = np.setdiff1d(np.arange(slots), where)
    where += rng.choice(others, size=num_pairs - 1, replace=False).tolist()
    cells = [RECALL_FILLER] * slots
    for k, v, s in zip(keys, values, where, strict=True):
        cells[s] = f"{RECALL_KEYS[k]}{v}"
    query = f"?{RECALL_KEYS[keys[0]]}"
    body = " ".join(cells)
    return (f"{query} {body}" if query_first else f"{body} {query}"), int(values[0])


def _needle_text(rng: np.random.Generator, length: int, eligible: np.ndarray) -> tuple[str, int]:
    """One needle text of :func:`assoc_recall` (``length`` characters) and its label."""
    chars = np.array(list(NEEDLE_FILLER))[rng.integers(0, len(NEEDLE_FILLER), size=length)]  # (length,)
    y = int(rng.integers(0, len(NEEDLES)))
    chars[int(rng.choice(eligible))] = NEEDLES[y]
    return "".join(chars), y


def recall_distance(text: str) -> int:
    """Characters between what is asked and where the answer lies in an :func:`assoc_recall`
    text: for ``kv``, from the query's key to the queried pair's value digit (either layout);
    for ``needle``, from a ``[CLS]`` token put before the text to the needle (its index + 1)."""
    at = next((i for i, c in enumerate(text) if c in NEEDLES), None)
    if at is not None:
        return at + 1
    if text.startswith("?"):
        return text.index(text[1], 2)  # value at index + 1, the query's key at 1
    return len(text) - 1 - (text.index(text[-1]) + 1)


def assoc_recall(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    task: str = "kv",
    n_train: int = 4000,
    n_val: int = 500,
    n_test: int = 1000,
    length: int = 512,
    num_pairs: int = 8,
    min_distance: int = 0,
    query_first: bool = False,
    seed: int = 0,
) -> TextClassData:
    """Synthetic recall of one character found by content anywhere in a long text (10 classes).

    ``task="kv"``, key-value recall: ``"a3 .. k7 x1 .. ?k"`` -> ``7``. Each text is
    ``(length - 2) // 3`` slots of 2 characters joined by spaces, ``num_pairs`` of them a
    key-value pair (a letter of :data:`RECALL_KEYS`, distinct within the text, then a digit) and
    the rest :data:`RECALL_FILLER`, followed by ``" ?k"`` (or, with ``query_first``, preceded by
    ``"?k "``): the query repeats one of the keys, and the label is that key's value (classes
    ``"0"``..``"9"``). Answering takes two composed lookups (find the key matching the query,
    then read the digit after it), hence at least two attention layers. ``min_distance`` puts
    the queried pair at least that many characters from the query (from the query's key to the
    pair's value digit, :func:`recall_distance`). Texts are ``3 * slots + 2 <= length`` characters.

    ``task="needle"``, needle in a haystack: ``length`` characters of :data:`NEEDLE_FILLER`
    drawn at random, one of which is replaced by a needle of :data:`NEEDLES` (``"A"`` .. ``"J"``
    for classes 0..9, drawn uniformly), at a random position at least ``min_distance``
    characters from a ``[CLS]`` token put before the text (needle index + 1 >= ``min_distance``,
    :func:`recall_distance`). One attention layer solves it by content: the ``[CLS]`` query
    matches the needle's key wherever it is (softmax attention, course §6.4, eq. 6.9), while
    attention restricted to a window (local attention, §6.12) reaches only ``L (w - 1)``
    positions with ``L`` layers of window ``w``, and a positive kernel in place of the softmax
    (linear attention, eq. 6.21) must put almost all its weight on one key out of ``length``.
    ``num_pairs`` and ``query_first`` are ignored. Classes are still named ``"0"``..``"9"``.

    Every text is drawn by one seeded generator (``seed``), test first, then val, then train;
    a text drawn twice is kept once (the first split that drew it), so the splits are
    disjoint and fixed by the options. ``data_dir``, ``download`` and ``progress`` are ignored.
    """
    if task not in RECALL_TASKS:
        raise ConfigError(f"task={task!r} is not an assoc-recall task; valid: {', '.join(RECALL_TASKS)}.")
    if min(n_train, n_val, n_test) < 0:
        raise ConfigError("n_train, n_val and n_test must be >= 0.")
    if task == "needle":
        if length < 1:
            raise ConfigError(f"length={length} must be >= 1 for the needle task.")
        eligible = np.arange(max(min_distance - 1, 0), length)  # needle index + 1 >= min_distance
        if not len(eligible):
            raise ConfigError(f"min_distance={min_distance} does not fit in length={length}; "
                              f"use min_distance <= {length}.")

        def draw() -> tuple[str, int]:
            return _needle_text(rng, length, eligible)
    else:
        slots = (length - 2) // 3
        if not 1 <= num_pairs <= len(RECALL_KEYS):
            raise ConfigError(f"num_pairs={num_pairs} must be in 1..{len(RECALL_KEYS)} (one letter per key).")
        if slots < num_pairs:
            raise ConfigError(f"length={length} holds {slots} slots, fewer than num_pairs={num_pairs}; "
                              f"use length >= {3 * num_pairs + 2}.")
        # distance of slot s from the query: 3 (slots - s) at the end, 3 s + 3 at the start
        s = np.arange(slots)
        eligible = s[(3 * s + 3 if query_first else 3 * (slots - s)) >= min_distance]
        if not len(eligible):
            raise ConfigError(f"min_distance={min_distance} does not fit in length={length}; "
                              f"use min_distance <= {3 * slots}.")

        def draw() -> tuple[str, int]:
            return _recall_text(rng, slots, num_pairs, eligible, query_first)
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: dict[str, list[tuple[str, int]]] = {}
    for split, n in (("test", n_test), ("val", n_val), ("train", n_train)):
        rows: list[tuple[str, int]] = []
        for _ in range(n):
            text, y = draw()
            if text not in seen:
                seen.add(text)
                rows.append((text, y))
        out[split] = rows
    drawn = n_train + n_val + n_test
    return TextClassData("assoc-recall", [str(d) for d in range(10)], out["train"], out["val"], out["test"],
                         source="synthetic", dropped={"duplicates": drawn - len(seen)})


DATASETS.add(
    "assoc-recall",
    assoc_recall,
    "synthetic recall, configurable length (exercise 6.5): task kv 'a3 .. k7 ?k' -> 7, "
    "or task needle 'xq..C..' -> 2",
)
