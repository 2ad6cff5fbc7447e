"""Text data (profond.data.text): the fortune format, splits, topic/language sets, the
character corpus and the French numbers of exercise 6.1."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from profond.data import text as T
from profond.errors import ConfigError, DatasetError
from profond.registry import DATASETS

SYSTEM = T.FORTUNE_DIRS[0]
needs_fortunes = pytest.mark.skipif(
    not (SYSTEM / "computers").is_file() or not (SYSTEM / "fortunes").is_file(),
    reason="English fortunes not installed (apt-get install fortunes fortunes-min)",
)


def needs_language(code: str):
    src = T.LANGUAGES[code]
    there = (SYSTEM / src.folder / (src.files[0] if src.files else "")).exists()
    return pytest.mark.skipif(
        not there, reason=f"{code} fortunes not installed (apt-get install {src.package})"
    )


def write_fortunes(path: Path, fortunes: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n%\n".join(fortunes) + "\n%\n", encoding="utf-8")


# -- the % format -------------------------------------------------------------------------


def test_parse_hand_made_file(tmp_path):
    raw = (
        "First fortune,\n  two lines.\n%\n"
        "Second\r\n%  \r\n"  # CRLF, and a separator with trailing blanks
        "%\n"  # an empty entry
        "Old _\bu_\bn_\bd_\be_\br_\bl_\bi_\bn_\be and a bell\x07.\n"
        "100% sure: a % inside a line is text.\n%\n"
        "\n   \n%\n"  # blank entry
        "Last, no final separator"
    )
    (tmp_path / "f").write_bytes(raw.encode("utf-8"))
    assert T.read_fortune_file(tmp_path / "f") == [
        "First fortune,\n  two lines.",
        "Second",
        "Old underline and a bell.\n100% sure: a % inside a line is text.",
        "Last, no final separator",
    ]


def test_dedupe_and_normalise():
    texts = ["Hello  World", "hello world", "Hello\nWorld ", "Other"]
    assert T.dedupe(texts) == ["Hello  World", "Other"]
    assert T.normalise(" A\tb\n\nC ") == "a b c"


def test_split_of_deterministic_and_proportional():
    texts = [f"fortune number {i}" for i in range(5000)]
    a = [T.split_of(t, seed=0) for t in texts]
    assert a == [T.split_of(t, seed=0) for t in texts]
    assert a != [T.split_of(t, seed=1) for t in texts]
    c = Counter(a)
    assert abs(c["test"] / 5000 - 0.1) < 0.02 and abs(c["val"] / 5000 - 0.1) < 0.02
    # duplicates (same normalised text) always share a split
    assert T.split_of("Fortune Number 7", 0) == T.split_of("fortune   number 7", 0)


def test_build_labelled_dedup_conflicts_cap():
    groups = [
        ("a", ["x1", "x2", "X1", "shared"] + [f"a{i}" for i in range(50)]),
        ("b", ["y1", "shared"] + [f"b{i}" for i in range(50)]),
    ]
    d = T.build_labelled("t", groups, seed=0, max_per_class=30)
    assert d.dropped == {"duplicates": 1, "conflicts": 2, "capped": (52 - 30) + (51 - 30)}
    allt = [t for s in T.SPLITS for t in d.texts(s)]
    assert len(allt) == 60 and "shared" not in allt and len(set(allt)) == 60
    assert {c: v["total"] for c, v in d.counts().items()} == {"a": 30, "b": 30}
    again = T.build_labelled("t", groups, seed=0, max_per_class=30)
    assert again.train == d.train and again.test == d.test
    assert d.labels("train").tolist() == [y for _, y in d.train]
    with pytest.raises(ConfigError):
        T.build_labelled("t", groups, val_frac=0.6, test_frac=0.5)


# -- missing packages ---------------------------------------------------------------------


def test_missing_root_names_the_apt_package(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "FORTUNE_DIRS", [tmp_path / "absent"])
    with pytest.raises(DatasetError, match=r"apt-get install fortunes\b"):
        T.fortune_topics()
    with pytest.raises(DatasetError, match="apt-get install fortunes-de"):
        T.fortune_languages(languages=("de", "en"))


def test_missing_language_and_topic_in_a_copy(tmp_path, monkeypatch):
    root = tmp_path / "fortunes"
    write_fortunes(root / "computers", ["Bugs.", "More bugs."])
    write_fortunes(root / "de" / "computer", ["Fehler."])
    monkeypatch.setattr(T, "FORTUNE_DIRS", [root])
    assert T.language_files("de") == [root / "de" / "computer"]
    with pytest.raises(DatasetError, match="apt-get install fortunes-pl"):
        T.language_files("pl")
    with pytest.raises(DatasetError, match="apt-get install fortunes-br"):
        T.language_files("pt-br")
    with pytest.raises(DatasetError, match="apt-get install fortunes-min"):
        T.topic_file("literature")


def test_topics_from_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "FORTUNE_DIRS", [])
    write_fortunes(tmp_path / "fortunes" / "cats", [f"Cat fact {i}." for i in range(40)])
    write_fortunes(tmp_path / "fortunes" / "dogs", [f"Dog fact {i}." for i in range(40)])
    d = T.fortune_topics(data_dir=str(tmp_path), topics=("cats", "dogs"))
    assert d.classes == ["cats", "dogs"] and d.source == str(tmp_path / "fortunes")
    assert sum(len(d.split(s)) for s in T.SPLITS) == 80


# -- the real packages --------------------------------------------------------------------


@pytest.fixture(scope="module")
def topics() -> T.TextClassData:
    if not (SYSTEM / "computers").is_file():
        pytest.skip("English fortunes not installed (apt-get install fortunes fortunes-min)")
    return T.fortune_topics()


@needs_fortunes
def test_real_topics(topics):
    assert len(topics.classes) == len(T.TOPICS) >= 8
    counts = topics.counts()
    assert all(v["total"] >= 140 and v["test"] >= 10 for v in counts.values()), counts
    keys = {s: {T.normalise(t) for t in topics.texts(s)} for s in T.SPLITS}
    assert not (keys["train"] & keys["test"]) and not (keys["train"] & keys["val"])
    assert not (keys["val"] & keys["test"])
    n = sum(len(topics.split(s)) for s in T.SPLITS)
    assert abs(len(topics.test) / n - 0.1) < 0.02
    assert T.fortune_topics().test == topics.test  # deterministic


@needs_fortunes
@needs_language("pt-br")
@needs_language("cs")
def test_real_languages_subset():
    d = T.fortune_languages(languages=("en", "pt-br", "cs"), max_per_class=800)
    assert d.classes == ["en", "pt-br", "cs"]
    assert all(v["total"] == 800 for v in d.counts().values())
    # Czech text has Czech letters, Brazilian text Portuguese ones
    cs_text = " ".join(t for t, y in d.train if y == 2)
    assert any(ch in cs_text for ch in "ěščřžů")
    assert d.dropped["capped"] > 0


@pytest.mark.parametrize("code", list(T.LANGUAGES))
def test_every_language_parses(code):
    src = T.LANGUAGES[code]
    if not (SYSTEM / src.folder / (src.files[0] if src.files else "")).exists():
        pytest.skip(f"{code} fortunes not installed (apt-get install {src.package})")
    files = T.language_files(code)
    assert files and not any(p.name.endswith((".dat", ".u8")) for p in files)
    assert all("/off/" not in str(p) for p in files)
    assert len(T.read_fortune_file(files[-1])) > 0


@needs_fortunes
def test_char_corpus():
    c = T.char_corpus(files=("computers", "science", "literature"))
    assert c.train.endswith(T.END_OF_FORTUNE) and c.num_fortunes["train"] > 1000
    assert set(c.tokenizer.chars) == set(c.train)  # vocabulary from train only
    assert c.unknown["train"] == 0
    assert c.unknown["test"] == c.tokenizer.count_unknown(c.test)
    ids = c.encode("val")
    assert ids.shape == (len(c.val),) and int(ids.max()) < c.vocab_size
    assert c.tokenizer.decode(c.encode("train")[:500]) == c.train[:500]


# -- French numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "n,words",
    [
        (0, "zéro"),
        (21, "vingt et un"),
        (71, "soixante et onze"),
        (80, "quatre-vingts"),
        (81, "quatre-vingt-un"),
        (123, "cent vingt-trois"),
        (200, "deux cents"),
        (80_000, "quatre-vingt mille"),
        (999_999, "neuf cent quatre-vingt-dix-neuf mille neuf cent quatre-vingt-dix-neuf"),
    ],
)
def test_num2words_french(n, words):
    assert T.french_words(n) == words


def test_count_words():
    assert T.count_words("cent vingt-trois") == 3
    assert T.count_words("soixante et onze") == 3
    assert T.count_words("zéro") == 1


@pytest.fixture(scope="module")
def numbers() -> T.FrenchNumbers:
    return T.french_numbers(n_train=600, n_val=100, n_test=400, seed=0)


def test_french_numbers_held_out(numbers):
    tr = {r.number for r in numbers.train}
    va = {r.number for r in numbers.val}
    te = {r.number for r in numbers.test}
    assert not (tr & te) and not (tr & va) and not (va & te)
    assert set(range(100)) <= tr  # the lexicon
    assert (len(tr), len(va), len(te)) == (700, 100, 400)
    assert Counter(len(str(n)) for n in te) == {3: 90, 4: 104, 5: 103, 6: 103}
    assert all(r.digits == str(r.number) and r.words == T.french_words(r.number)
               for r in numbers.test[:20])  # fmt: skip
    again = T.french_numbers(n_train=600, n_val=100, n_test=400, seed=0)
    assert again.test == numbers.test and again.train == numbers.train
    other = T.french_numbers(n_train=10, n_val=10, n_test=400, seed=1)
    assert other.test != numbers.test


def test_french_numbers_directions_and_lengths(numbers):
    w2d = numbers.pairs("test")
    d2w = numbers.pairs("test", direction="digits2words")
    assert [(b, a) for a, b in w2d] == d2w
    lengths = numbers.input_lengths("test")
    assert lengths == [T.count_words(w) for w, _ in w2d]
    assert max(lengths) >= 8 and min(lengths) <= 3
    assert numbers.input_lengths("test", "digits2words") == [len(d) for d, _ in d2w]
    assert len({w for w, _ in numbers.pairs("train")}) == len(numbers.train)  # one spelling each
    with pytest.raises(ConfigError):
        numbers.pairs("test", direction="backwards")


# -- registry -----------------------------------------------------------------------------


def test_registered(monkeypatch):
    from profond import registry

    assert {"profond.data.text", "profond.data.series"} <= set(registry._MODULES)
    # This module is imported: skip importing every other registering module (seconds).
    monkeypatch.setattr(registry, "_LOADED", True)
    assert {"fortune-topics", "fortune-languages", "fortune-chars", "french-numbers"} <= set(
        DATASETS.names()
    )
    d = DATASETS.build("french-numbers", n_train=20, n_val=5, n_test=8)
    assert isinstance(d, T.FrenchNumbers) and len(d.test) == 8
    with pytest.raises(ConfigError, match="no option 'n_trian'"):
        DATASETS.build("french-numbers", n_trian=5)
