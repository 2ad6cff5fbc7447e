"""Every numeric config field has a declared range, checked at resolve time (issue 13, case 4).

The walker below visits every field of every config dataclass (``dataclasses.fields``,
recursively from :class:`RunConfig`); a numeric field (``int``/``float``, alone, optional, in
a list or as the values of a mapping) without a :class:`Range` fails the test, so a new field
is caught the day it is added. For each range it tries the values just outside (below the
minimum, above the maximum, NaN, infinities), expecting a ConfigError that names the key,
and the allowed boundary values, expecting success. Then the reported cases through the CLI.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
import torch
from typer.testing import CliRunner

from profond import config as C
from profond.base.coerce import Range
from profond.cli import app
from profond.config import RunConfig, resolve
from profond.errors import ConfigError
from tests.conftest import needs_fmnist


@dataclass(frozen=True)
class Numeric:
    key: str  # dotted config key
    base: type  # int or float
    ranges: tuple[Range, ...]
    optional: bool
    container: str | None  # None, "list" or "dict"


def classify(key: str, hint: Any) -> Numeric | None:
    """The numeric description of a field's hint, or None for a non-numeric field."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            return None
        hint = args[0]
    container = None
    if typing.get_origin(hint) in (list, tuple):
        container, hint = "list", typing.get_args(hint)[0]
    elif typing.get_origin(hint) is dict:
        container, hint = "dict", typing.get_args(hint)[1]
    ranges: tuple[Range, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
        ranges = tuple(m for m in meta if isinstance(m, Range))
    if hint not in (int, float):  # bool, str, Literal, Any, mappings of Any
        return None
    return Numeric(key, hint, ranges, optional, container)


def walk(cls: type, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    """``(dotted key, hint)`` of every non-section field under dataclass ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            yield from walk(hint, prefix + f.name + ".")
        else:
            yield prefix + f.name, hint


def sections(cls: type = RunConfig) -> set[type]:
    found = {cls}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            found |= sections(hint)
    return found


NUMERIC = [n for key, hint in walk(RunConfig) if (n := classify(key, hint)) is not None]


def test_walk_reaches_every_config_dataclass():
    defined = {v for v in vars(C).values()
               if isinstance(v, type) and dataclasses.is_dataclass(v) and v.__module__ == C.__name__}
    assert defined == sections()
    assert {"ModelConfig", "MethodConfig", "DataConfig", "OptimConfig", "SchedConfig", "EarlyStopConfig",
            "TrainConfig", "RunConfig"} == {c.__name__ for c in defined}
    # the walker sees the fields the issue names, and nothing numeric is skipped by mistake
    keys = {n.key for n in NUMERIC}
    assert {"optim.lr", "optim.betas", "optim.lr_groups", "train.clip_grad_norm", "train.eval_every",
            "train.log_every", "train.threads", "train.checkpoint_every", "train.max_steps", "data.val_size",
            "sched.pct_start", "train.early_stop.patience", "train.early_stop.min_delta"} <= keys


def test_walker_flags_a_numeric_field_without_range():
    @dataclass
    class Future:
        ok: Annotated[int, Range(1)] = 1
        forgot: float = 0.5
        forgot_too: int | None = None
        listed: list[float] = dataclasses.field(default_factory=list)
        text: str = "x"
        flag: bool = True

    found = {n.key: n for key, hint in walk(Future) if (n := classify(key, hint))}
    assert set(found) == {"ok", "forgot", "forgot_too", "listed"}
    assert [k for k, n in found.items() if not n.ranges] == ["forgot", "forgot_too", "listed"]


@pytest.mark.parametrize("field", NUMERIC, ids=lambda n: n.key)
def test_numeric_field_declares_a_range(field):
    assert field.ranges, (f"config field {field.key!r} is numeric but declares no Range: annotate it "
                          f"Annotated[{field.base.__name__}, Range(...)] in profond/config.py")


def _just_outside(r: Range, base: type) -> list[float]:
    out = []
    for bound, is_open, direction in ((r.lo, r.lo_open, -1), (r.hi, r.hi_open, 1)):
        if bound is None:
            continue
        if is_open:
            out.append(bound)
        else:
            out.append(bound + direction if base is int else math.nextafter(bound, direction * math.inf))
    return out


def _allowed_bounds(r: Range, base: type) -> list[float]:
    out = []
    for bound, is_open, direction in ((r.lo, r.lo_open, 1), (r.hi, r.hi_open, -1)):
        if bound is None:
            continue
        if not is_open:
            out.append(bound)
        else:
            out.append(bound + direction if base is int else math.nextafter(bound, direction * math.inf))
    return out


def _override(field: Numeric, value: Any) -> tuple[str, str]:
    """The ``--set`` item putting ``value`` in ``field``, and the key an error must name."""
    text = "null" if value is None else repr(value) if isinstance(value, float) else str(value)
    if field.container == "list":
        return f"{field.key}=[{text}, {text}]", f"{field.key}[0]"
    if field.container == "dict":
        return f"{field.key}={{fc: {text}}}", f"{field.key}.fc"
    return f"{field.key}={text}", field.key


def _refused(field: Numeric) -> list[Any]:
    values: list[Any] = [v for r in field.ranges for v in _just_outside(r, field.base)]
    values += [math.nan, math.inf, -math.inf]  # no config value means anything at infinity
    if field.base is int:
        values.append(0.5)
    if not field.optional and field.container is None:
        values.append(None)
    return values


def _allowed(field: Numeric) -> list[Any]:
    values: list[Any] = [v for r in field.ranges for v in _allowed_bounds(r, field.base)]
    if field.optional:
        values.append(None)
    return values


@pytest.mark.parametrize("field", [n for n in NUMERIC if n.ranges], ids=lambda n: n.key)
def test_out_of_range_values_are_refused_naming_the_key(field):
    assert _refused(field)
    for value in _refused(field):
        item, key = _override(field, value)
        with pytest.raises(ConfigError) as e:
            resolve(overrides=[item])
        assert repr(key) in str(e.value), (item, str(e.value))
        assert "\n" not in str(e.value)


@pytest.mark.parametrize("field", [n for n in NUMERIC if n.ranges], ids=lambda n: n.key)
def test_boundary_values_that_are_allowed_resolve(field):
    assert _allowed(field)
    for value in _allowed(field):
        item, _ = _override(field, value)
        cfg = resolve(overrides=[item])
        got = cfg
        for part in field.key.split("."):
            got = getattr(got, part)
        if field.container == "list":
            got = got[0]
        elif field.container == "dict":
            got = got["fc"]
        assert got == value or (value is None and got is None), (item, got)


def test_defaults_and_every_recipe_are_in_range():
    C.validate(RunConfig())
    for name in C.recipe_names():
        resolve(recipe=name)


def test_ranges_hold_in_config_files_and_per_optimizer_entries(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  eval_every: 0\n")
    with pytest.raises(ConfigError, match="'train.eval_every'"):
        resolve(config_file=str(f))
    with pytest.raises(ConfigError, match=r"'optim.per_optimizer.D.lr': 0.0; must be > 0"):
        resolve(overrides=["optim.per_optimizer={D: {lr: 0}}"])
    with pytest.raises(ConfigError, match=r"'optim.per_optimizer.G.betas\[1\]'"):
        resolve(overrides=["optim.per_optimizer={G: {betas: [0.5, 1.0]}}"])
    with pytest.raises(ConfigError, match="unknown config key 'optim.per_optimizer.D.lrr'"):
        resolve(overrides=["optim.per_optimizer={D: {lrr: 0.1}}"])
    assert resolve(overrides=["optim.per_optimizer={D: {lr: 4e-4}}"]).optim.per_optimizer == {"D": {"lr": 4e-4}}


def test_zero_says_what_it_means_where_it_means_something():
    with pytest.raises(ConfigError, match=r"'train.checkpoint_every': -1; must be >= 0 \(0: only at the end"):
        resolve(overrides=["train.checkpoint_every=-1"])
    assert resolve(overrides=["train.checkpoint_every=0"]).train.checkpoint_every == 0
    with pytest.raises(ConfigError, match=r"'data.val_size'.*0: no validation set"):
        resolve(overrides=["data.val_size=-5"])


# -- the reported cases, through the CLI ---------------------------------------------------------
runner = CliRunner()


@pytest.mark.parametrize("item, words", [
    ("train.clip_grad_norm=-1", ["'train.clip_grad_norm'", "> 0"]),  # was gradient ascent
    ("train.clip_grad_norm=0", ["'train.clip_grad_norm'", "> 0"]),  # was no learning at all
    ("train.eval_every=0", ["'train.eval_every'", ">= 1"]),  # was ZeroDivisionError
    ("train.log_every=0", ["'train.log_every'", ">= 1"]),  # was ZeroDivisionError
    ("train.threads=-1", ["'train.threads'", "in [1, 1024]"]),  # was RuntimeError
    ("train.checkpoint_every=-1", ["'train.checkpoint_every'", ">= 0"]),  # was accepted
    ("train.max_steps=0", ["'train.max_steps'", ">= 1"]),  # trained one step
    ("optim.lr=nan", ["'optim.lr'", "finite"]),
])
def test_cli_refuses_bad_values_exit_2_one_line(item, words, tmp_path):
    out = tmp_path / "runs"
    r = runner.invoke(app, ["train", "mlp", "--dataset", "digits", "--epochs", "1", "--set", "data.val_size=200",
                            "--set", item, "--out", str(out), "-q"])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for w in words:
        assert w in r.output, r.output
    assert not out.exists()  # refused before anything is written


# -- case 9: a default that fits the dataset; a diverging run says so ---------------------------
def test_default_validation_split_is_relative_to_the_dataset():
    from profond.data.vision import default_val_size

    assert RunConfig().data.val_size is None
    assert default_val_size(None, 60_000) == 5000  # Fashion-MNIST, MNIST: the split of every result so far
    assert default_val_size(None, 50_000) == 5000  # CIFAR-10: unchanged too
    assert default_val_size(None, 1438) == 143  # the training digits
    assert default_val_size(0, 1438) == 0 and default_val_size(300, 60_000) == 300


def test_digits_trains_with_the_default_split_and_too_big_a_split_says_the_fix(tmp_path):
    import csv

    r = runner.invoke(app, ["train", "mlp", "--dataset", "digits", "--epochs", "1", "--set", "model.widths=[16]",
                            "--out", str(tmp_path), "--name", "ok", "-q"])
    assert r.exit_code == 0, r.output  # was: data.val_size=5000 is out of range
    rows = list(csv.DictReader((tmp_path / "ok" / "metrics.csv").open()))
    assert rows and rows[0]["val_loss"]
    r = runner.invoke(app, ["train", "mlp", "--dataset", "digits", "--set", "data.val_size=5000",
                            "--out", str(tmp_path), "--name", "big", "-q"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "data.val_size=5000" in r.output and "1438 examples" in r.output and "null" in r.output


@needs_fmnist
def test_fashion_mnist_default_split_is_the_5000_image_split():
    from profond.contract import Env
    from profond.data import load_dataset, train_val_split
    from profond.methods.imagedata import split_loaders

    d = load_dataset("fashion-mnist", download=False)
    cfg = resolve(overrides=["train.device=cpu"])
    train_b, val_b = split_loaders(cfg, Env(device=torch.device("cpu")), d.train_x, d.train_y,
                                   norm={"mean": d.mean, "std": d.std})
    _, _, vx, vy = train_val_split(d.train_x, d.train_y, 5000, seed=0)
    assert torch.equal(val_b.x, vx) and torch.equal(val_b.y, vy) and len(train_b.x) == 55_000


def test_a_diverging_run_warns_on_the_console_and_in_summary(tmp_path):
    import json

    args = ["train", "mlp", "--dataset", "digits", "--epochs", "2", "--set", "data.val_size=200",
            "--set", "model.widths=[16]", "--out", str(tmp_path), "-q"]
    r = runner.invoke(app, [*args, "--name", "hot", "--set", "optim.lr=1e6"])
    assert r.exit_code == 0, r.output
    assert "warning: epoch 1: train_loss" in r.output and "lower optim.lr" in r.output
    warnings = json.loads((tmp_path / "hot" / "summary.json").read_text())["warnings"]
    assert warnings and all("times the first step's" in w and "optim.lr" in w for w in warnings)
    r = runner.invoke(app, [*args, "--name", "calm"])
    assert r.exit_code == 0 and "warning" not in r.output
    assert json.loads((tmp_path / "calm" / "summary.json").read_text())["warnings"] == []
