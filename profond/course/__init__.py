"""The course map: what profond implements of the course, chapter by chapter.

``map.yaml`` (next to this file) lists, for each of the course's twelve chapters, the
sections / equations / tables / exercises that profond implements or plans to: the module
and function that implements each, the command that runs it, and its status (``done``,
``partial``, ``planned``). ``profond course [CHAPTER] [--json]`` prints it and
``docs/course.md`` is generated from it (``python scripts/course_md.py``).

This package sits at the bottom layer: it imports nothing of profond but
:mod:`profond.errors`, and never imports the modules it names (the tests do).

Public API::

    load_map()                   # every row, validated (a ProfondError names a bad row)
    rows(chapter=None, status=None)
    chapters()                   # [{"chapter", "title", "coverage", "rows"}, ...]
    coverage(rows=None)          # {chapter: {"done", "partial", "planned", "total"}}
    total_coverage(rows=None)    # {"done", "partial", "planned", "total"}
    cells(row)                   # the display strings of COLUMNS for one row
    to_markdown(rows)            # a Markdown table of rows
    to_json(chapter=None)        # a JSON-serialisable dict (``profond course --json``)
    docs_markdown()              # the whole of docs/course.md

Each row is a dict with the keys ``chapter`` (int), ``ref``, ``title``, ``status``,
``module`` (``"pkg.module"`` or ``"pkg.module:attr[.attr]"``; None when planned),
``planned_module``, ``command``, ``note`` (None when absent) and ``source`` (``"course"``,
or ``"seed 004"`` etc. for rows citing another course text).
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import ProfondError

__all__ = [
    "CHAPTER_TITLES", "STATUSES", "SOURCES", "COLUMNS", "MAP_PATH",
    "load_map", "rows", "chapters", "coverage", "total_coverage", "parse_chapter",
    "cells", "to_markdown", "to_json", "docs_markdown",
]

#: the course's twelve chapters (titles translated from the French headings)
CHAPTER_TITLES: dict[int, str] = {
    1: "Artificial neural networks: foundations",
    2: "Backpropagation and optimisation",
    3: "Regularisation and generalisation",
    4: "Convolutional neural networks",
    5: "Recurrent networks and LSTM",
    6: "Attention",
    7: "Transformers",
    8: "Generative models: GANs",
    9: "Variational autoencoders",
    10: "Diffusion models",
    11: "Theory: generalisation and expressivity",
    12: "Applications and ethics",
}

#: row statuses, in display order
STATUSES: tuple[str, ...] = ("done", "partial", "planned")

#: where a row's ref comes from: the twelve-chapter course, or one of the other course texts
SOURCES: dict[str, str] = {
    "course": "the twelve-chapter Master's course (its sections, equations, tables, exercises)",
    "seed 000": "generative models: autoencoders, VAE, GAN, diffusion (DALL-E 2, Stable Diffusion)",
    "seed 001": "slides: RNN, LSTM (peephole form), GRU, autoencoders, VAE, BERT, GPT",
    "seed 002": "textbook chapter: perceptron to MLP, backpropagation, CNN, RNN, Transformer, VAE, GAN",
    "seed 004": "GAN lecture: DCGAN, cGAN, Pix2Pix, CycleGAN, super-resolution, StyleGAN, SPADE, flows",
}

#: the columns of a printed map
COLUMNS: tuple[str, ...] = ("ref", "title", "status", "module", "command")

MAP_PATH = Path(__file__).with_name("map.yaml")

_ROW_KEYS = ("ref", "title", "status", "module", "planned_module", "command", "note")
_REQUIRED = ("ref", "title", "status", "module", "command")

_NUM = r"(\d+)\.\d+(?:\.\d+)?"
_REF_PARTS = [
    re.compile(rf"^§{_NUM}(?:-{_NUM})?$"),
    re.compile(rf"^eq\. {_NUM}$"),
    re.compile(rf"^eqs\. {_NUM}-{_NUM}$"),
    re.compile(rf"^table {_NUM}$"),
    re.compile(rf"^exercise {_NUM}$"),
    re.compile(rf"^(?:theorem|definition|remark|proposition) {_NUM}$"),
]
_SEED_REF = re.compile(r"^(seed 00\d) \S.*$")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_MODULE = re.compile(rf"^profond(?:\.{_IDENT})*(?::{_IDENT}(?:\.{_IDENT})*)?$")


def _fail(where: str, problem: str) -> ProfondError:
    return ProfondError(f"course map {where}: {problem} (fix {MAP_PATH.name} in profond/course/).")


def _check_ref(ref: str, chapter: int, where: str) -> str:
    """The row's source (``course`` or ``seed 00N``); a ProfondError if ``ref`` is malformed."""
    m = _SEED_REF.match(ref)
    if m:
        if m.group(1) not in SOURCES:
            raise _fail(where, f"unknown course text {m.group(1)!r}; known: {', '.join(SOURCES)}")
        return m.group(1)
    for part in ref.split(", "):
        for pattern in _REF_PARTS:
            pm = pattern.match(part)
            if pm:
                chapters_cited = {int(g) for g in pm.groups() if g is not None}
                if chapters_cited != {chapter}:
                    raise _fail(where, f"{part!r} cites another chapter than {chapter}")
                break
        else:
            raise _fail(where, f"cannot read {part!r} in ref {ref!r}; write e.g. '§5.5.1', 'eq. 5.12', "
                               "'eqs. 5.9-5.14', 'table 9.1', 'exercise 5.4.2', 'theorem 8.4', "
                               "'seed 004 Pix2Pix' (parts separated by ', ')")
    return "course"


def _check_row(raw: Any, chapter: int, index: int) -> dict[str, Any]:
    where = f"chapter {chapter}, row {index + 1}"
    if not isinstance(raw, dict):
        raise _fail(where, "a row must be a mapping")
    if isinstance(raw.get("ref"), str):
        where += f" ({raw['ref']!r})"
    unknown = sorted(set(raw) - set(_ROW_KEYS))
    if unknown:
        raise _fail(where, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_ROW_KEYS)}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise _fail(where, f"missing key(s) {', '.join(missing)}")
    row: dict[str, Any] = {"chapter": chapter, **{k: raw.get(k) for k in _ROW_KEYS}}
    for key in ("ref", "title"):
        if not isinstance(row[key], str) or not row[key].strip() or "\n" in row[key]:
            raise _fail(where, f"{key!r} must be a non-empty one-line string")
    for key in ("module", "planned_module", "command", "note"):
        if row[key] is not None and (not isinstance(row[key], str) or not row[key].strip()):
            raise _fail(where, f"{key!r} must be a non-empty string or null")
    status = row["status"]
    if status not in STATUSES:
        raise _fail(where, f"status {status!r} is not one of {', '.join(STATUSES)}")
    row["source"] = _check_ref(row["ref"], chapter, where)
    for key in ("module", "planned_module"):
        if row[key] is not None and not _MODULE.match(row[key]):
            raise _fail(where, f"{key} {row[key]!r} is not 'profond.module' or 'profond.module:attr'")
    if status == "planned":
        if row["module"] is not None:
            raise _fail(where, "a planned row has module: null (name it in planned_module)")
        if row["planned_module"] is None:
            raise _fail(where, "a planned row names the module it will live in (planned_module)")
        if row["command"] is not None:
            raise _fail(where, "a planned row has command: null (nothing runs yet)")
    else:
        if row["module"] is None:
            raise _fail(where, f"a {status} row names the module that implements it")
        if status == "partial" and row["note"] is None:
            raise _fail(where, "a partial row says what is missing (note)")
        if status == "done" and row["planned_module"] is not None:
            raise _fail(where, "a done row has no planned_module")
    if row["command"] is not None and not row["command"].startswith("profond "):
        raise _fail(where, f"command {row['command']!r} must start with 'profond '")
    return row


def _validate(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, list):
        raise _fail("file", "the top level must be a list of chapters")
    out: list[dict[str, Any]] = []
    seen_chapters: set[int] = set()
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or set(entry) != {"chapter", "rows"}:
            raise _fail(f"entry {i + 1}", "each chapter is a mapping with exactly 'chapter' and 'rows'")
        chapter = entry["chapter"]
        if not isinstance(chapter, int) or isinstance(chapter, bool) or chapter not in CHAPTER_TITLES:
            raise _fail(f"entry {i + 1}", f"chapter {chapter!r} is not an integer in 1-{len(CHAPTER_TITLES)}")
        if chapter in seen_chapters:
            raise _fail(f"chapter {chapter}", "listed twice")
        seen_chapters.add(chapter)
        if not isinstance(entry["rows"], list) or not entry["rows"]:
            raise _fail(f"chapter {chapter}", "'rows' must be a non-empty list")
        seen_rows: set[tuple[str, str]] = set()
        for j, raw in enumerate(entry["rows"]):
            row = _check_row(raw, chapter, j)
            if (row["ref"], row["title"]) in seen_rows:
                raise _fail(f"chapter {chapter}, row {j + 1} ({row['ref']!r})", "duplicate ref and title")
            seen_rows.add((row["ref"], row["title"]))
            out.append(row)
    return sorted(out, key=lambda r: r["chapter"])  # stable: file order within a chapter


@functools.lru_cache(maxsize=4)
def _load(path: str) -> tuple[dict[str, Any], ...]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ProfondError(f"cannot read the course map {p}: {e.strerror or e}; reinstall profond "
                           "(the map ships as package data).") from None
    except yaml.YAMLError as e:
        raise ProfondError(f"the course map {p} is not valid YAML: {e}") from None
    return tuple(_validate(data))


def load_map(path: str | Path | None = None) -> list[dict[str, Any]]:
    """Every row of the map (``path``: default ``profond/course/map.yaml``), validated.

    Rows are in chapter order, file order within a chapter; each is a fresh dict (see the
    module docstring for its keys). A malformed map raises :class:`ProfondError` naming the
    chapter and row.
    """
    return copy.deepcopy(list(_load(str(Path(path) if path is not None else MAP_PATH))))


def parse_chapter(value: int | str) -> int:
    """``5``, ``"5"`` -> 5; a ProfondError for anything that is not a chapter 1-12."""
    try:
        n = int(str(value).strip())
    except ValueError:
        n = None
    if n not in CHAPTER_TITLES:
        raise ProfondError(f"unknown chapter {value!r}: the course has chapters 1-{len(CHAPTER_TITLES)} "
                           "(see `profond course`).")
    return n


def rows(chapter: int | str | None = None, status: str | None = None,
         path: str | Path | None = None) -> list[dict[str, Any]]:
    """The rows of ``chapter`` (all chapters if None), optionally only those of ``status``."""
    out = load_map(path)
    if chapter is not None:
        n = parse_chapter(chapter)
        out = [r for r in out if r["chapter"] == n]
    if status is not None:
        if status not in STATUSES:
            raise ProfondError(f"unknown status {status!r}; valid statuses: {', '.join(STATUSES)}.")
        out = [r for r in out if r["status"] == status]
    return out


def _counts(selected: list[dict[str, Any]]) -> dict[str, int]:
    counts = {s: 0 for s in STATUSES}
    for r in selected:
        counts[r["status"]] += 1
    counts["total"] = len(selected)
    return counts


def coverage(rows: list[dict[str, Any]] | None = None) -> dict[int, dict[str, int]]:
    """Per chapter (1-12, every chapter present): counts of ``done``, ``partial``,
    ``planned`` rows and their ``total``."""
    selected = load_map() if rows is None else rows
    return {n: _counts([r for r in selected if r["chapter"] == n]) for n in CHAPTER_TITLES}


def total_coverage(rows: list[dict[str, Any]] | None = None) -> dict[str, int]:
    """Counts of ``done`` / ``partial`` / ``planned`` rows and their ``total`` over ``rows``."""
    return _counts(load_map() if rows is None else rows)


def chapters(path: str | Path | None = None) -> list[dict[str, Any]]:
    """One dict per chapter, in order: ``chapter``, ``title``, ``coverage``, ``rows``."""
    everything = load_map(path)
    out = []
    for n, title in CHAPTER_TITLES.items():
        selected = [r for r in everything if r["chapter"] == n]
        out.append({"chapter": n, "title": title, "coverage": _counts(selected), "rows": selected})
    return out


def cells(row: dict[str, Any]) -> tuple[str, ...]:
    """Display strings of :data:`COLUMNS` for one row: the title carries the note, a planned
    row's module cell reads ``planned: <planned_module>``, a missing command is ``""``."""
    title = row["title"] + (f" ({row['note']})" if row.get("note") else "")
    if row.get("module"):
        module = row["module"]
    elif row.get("planned_module"):
        module = f"planned: {row['planned_module']}"
    else:
        module = ""
    return (row["ref"], title, row["status"], module, row.get("command") or "")


def _md_cell(text: str, code: bool = False) -> str:
    if not text:
        return ""
    text = text.replace("|", "\\|")
    return f"`{text}`" if code else text


def to_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table ``ref | title | status | module | command`` of ``rows``."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        ref, title, status, module, command = cells(row)
        if module.startswith("planned: "):
            module_md = "planned: " + _md_cell(module.removeprefix("planned: "), code=True)
        else:
            module_md = _md_cell(module, code=True)
        lines.append("| " + " | ".join([_md_cell(ref), _md_cell(title), status, module_md,
                                         _md_cell(command, code=True)]) + " |")
    return "\n".join(lines) + "\n"


def to_json(chapter: int | str | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """What ``profond course [CHAPTER] --json`` prints: ``{"chapters": [...], "coverage": {...}}``,
    each chapter as in :func:`chapters`; ``coverage`` counts the rows shown."""
    selected = chapters(path)
    if chapter is not None:
        n = parse_chapter(chapter)
        selected = [c for c in selected if c["chapter"] == n]
    shown = [r for c in selected for r in c["rows"]]
    return {"chapters": selected, "coverage": _counts(shown)}


GENERATED_LINE = ("_Generated by `scripts/course_md.py` from `profond/course/map.yaml`; "
                  "do not edit by hand (run `python scripts/course_md.py`)._")


def docs_markdown(path: str | Path | None = None) -> str:
    """The whole of ``docs/course.md``: a coverage summary, then one table per chapter."""
    chs = chapters(path)
    everything = [r for c in chs for r in c["rows"]]
    total = _counts(everything)
    out = [GENERATED_LINE, "", "# The course map", "",
           "What profond implements of the course, chapter by chapter: each section, equation, "
           "table or exercise, the module (`package.module:function`) that implements it, the "
           "command that runs it and its status: **done**, **partial** (the note says what is "
           "missing) or **planned** (the module it will live in). Numbers (\"§5.5.1\", \"eq. 5.12\", "
           "\"table 9.1\") refer to the twelve-chapter course; rows starting with \"seed 00N\" cite "
           "one of the other course texts. `profond course [CHAPTER] [--json]` prints the same map.",
           "", "## Coverage", "",
           "| chapter | done | partial | planned | total |", "|---|---|---|---|---|"]
    for c in chs:
        k = c["coverage"]
        out.append(f"| [{c['chapter']}. {c['title']}](#{_anchor(c)}) | {k['done']} | {k['partial']} "
                   f"| {k['planned']} | {k['total']} |")
    out.append(f"| **all** | **{total['done']}** | **{total['partial']}** | **{total['planned']}** "
               f"| **{total['total']}** |")
    seeds = sorted({r["source"] for r in everything} - {"course"})
    if seeds:
        out += ["", "Other course texts cited: " + "; ".join(f"{s}: {SOURCES[s]}" for s in seeds) + "."]
    for c in chs:
        out += ["", f"## {c['chapter']}. {c['title']}", "", to_markdown(c["rows"]).rstrip("\n")]
    return "\n".join(out) + "\n"


def _anchor(chapter: dict[str, Any]) -> str:
    """GitHub's anchor of the heading ``## N. Title``."""
    text = f"{chapter['chapter']}. {chapter['title']}".lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")
