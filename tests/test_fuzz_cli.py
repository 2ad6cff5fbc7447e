"""Property-based tests of the user-facing contract (issue 13's harness).

Hypothesis generates what a hostile new user would type: ``--set`` overrides with keys from
the real config schema and values of every type, CLI argument lists for every command, and
mutations of a checkpoint's ``meta.json``. Each example runs in-process against the real
entry points and must keep the contract:

* exit code 0 or 2 (130 for an interrupt), never a traceback;
* for exit 2, one ``error:`` line naming the offending key, option or file;
* nothing written outside the folder the command was given (``--out``), and a refused
  command leaves the run folder's files as they were.

The CI share is bounded by ``max_examples`` and the hypothesis deadline; ``-m slow`` runs a
longer soak of the same properties.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from profond import config as C
from profond.cli import app
from profond.errors import ProfondError
from tests.conftest import digits_cfg, tiny_cfg

FAST = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SOAK = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))


def schema_keys() -> list[str]:
    """Every dotted key of the config schema (``train.early_stop.patience``, ...)."""
    keys: list[str] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            sub = getattr(f.type, "__dataclass_fields__", None) or (
                hints[f.name] if dataclasses.is_dataclass(hints[f.name]) else None)
            if sub is not None and dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")
            else:
                keys.append(prefix + f.name)

    walk(C.RunConfig, "")
    return keys


KEYS = schema_keys()
# values of every type, as `--set key=value` spells them (parsed as YAML)
VALUES = st.one_of(
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: repr(v).replace("inf", ".inf").replace("nan", ".nan")),
    st.sampled_from(["true", "false", "null", "~", "", "[]", "{}", "[1, 2]", "{a: 1}", "-0", "1e309", "0x10",
                     "'[/x]'", "[bold]x", "../escape", "/abs/path", "é€", "a" * 300, "{D: {lr: -1}}"]),
    st.text(max_size=12).map(lambda s: json.dumps(s)),
)


def one_line_error(output: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


# -- 1. --set overrides: resolve either succeeds or says which key is wrong ------------------
def check_override(key: str, raw: str) -> None:
    item = f"{key}={raw}"
    try:
        cfg = C.resolve(overrides=["data.name=digits", "data.val_size=200", item])
    except ProfondError as e:
        msg = str(e)
        assert "\n" not in msg.strip(), msg
        top = key.split(".")[0]
        assert key in msg or top in msg or raw.strip() in msg or "override" in msg, (item, msg)
        return
    # accepted: the value read back is finite where it is a number, and it round-trips YAML
    again = C.RunConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    for k, v in _flat(cfg.to_dict()).items():
        if isinstance(v, float):
            assert math.isfinite(v) or v is None, (item, k, v)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@FAST
@given(key=st.sampled_from(KEYS), raw=VALUES)
def test_any_override_resolves_or_names_its_key(key, raw):
    check_override(key, raw)


@pytest.mark.slow
@SOAK
@given(key=st.sampled_from(KEYS), raw=VALUES)
def test_soak_overrides(key, raw):
    check_override(key, raw)


# -- 2. CLI argument lists --------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished tiny runs of three families on sklearn digits, shared by the CLI tests."""
    from profond.train import train

    out = tmp_path_factory.mktemp("fuzz-runs")
    short = ["train.epochs=1", "train.max_steps=4", "train.quiet=true"]
    return {
        "clf": train(tiny_cfg(out / "clf", "train.checkpoint_every=5", "train.epochs=1")).run_dir,
        "vae": train(digits_cfg(out / "vae", "model.name=vae", "model.hidden=[32]", "model.latent_dim=4",
                                *short)).run_dir,
        "gan": train(digits_cfg(out / "gan", "model.name=gan", "model.g_hidden=[16]", "model.d_hidden=[16]",
                                "model.latent_dim=4", "method.eval_n=64", *short)).run_dir,
    }


def snapshot(folder: Path) -> dict[str, str]:
    """path -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


OPTION_VALUES = st.one_of(st.integers(-5, 10**9).map(str), st.sampled_from(
    ["0", "-1", "nan", "inf", "1e30", "abc", "", "[/x]", "[bold]y", "../up", "/nope", "best", "last", "cpu", "auto",
     "cuda:7", "fmnist", "inception", "image", "zero", "ab", "ba", "test", "train", "0:8", "5:2"]))

COMMANDS = {
    "eval": ["--checkpoint", "--device", "--n", "--features", "--seed", "--batch-size"],
    "sample": ["--n", "--nrow", "--seed", "--label", "--input", "--direction", "--checkpoint", "--device"],
    "latent": ["--a", "--b", "--steps", "--pairs", "--label", "--dims", "--range", "--center", "--points",
               "--split", "--checkpoint", "--seed"],
    "generate": ["--prompt", "--temperature", "--top-k", "--top-p", "--n", "--length", "--seed", "--checkpoint"],
    "gates": ["--layer", "--units", "--checkpoint"],
    "translate": ["--beam", "--checkpoint"],
    "attention": ["--layer", "--heads", "--checkpoint"],
}
FLAGS = {"eval": ["--json"], "sample": ["--recon", "--as-input", "--invert"], "latent": ["--codes"]}


@st.composite
def command_lines(draw):
    cmd = draw(st.sampled_from(sorted(COMMANDS)))
    args = [cmd, draw(st.sampled_from(["RUN:clf", "RUN:vae", "RUN:gan"]))]
    if cmd in ("gates", "translate", "attention"):
        args.append(draw(st.sampled_from(["hello", "", "[/x]", "deux cents"])))
    for opt in draw(st.lists(st.sampled_from(COMMANDS[cmd]), max_size=3, unique=True)):
        args += [opt, draw(OPTION_VALUES)]
    for flag in draw(st.lists(st.sampled_from(FLAGS.get(cmd, ["--help"])), max_size=1, unique=True)):
        if flag != "--help":
            args.append(flag)
    return args


def check_cli(args: list[str], runs: dict[str, Path], out: Path) -> None:
    run = runs[args[1].split(":")[1]]
    before = snapshot(run)
    argv = [str(run) if a.startswith("RUN:") else a for a in args] + ["--out", str(out / "o")] * (args[0] != "translate")
    r = CliRunner().invoke(app, argv)
    assert r.exit_code in (0, 2), (argv, r.exit_code, r.output, r.exception)
    assert "Traceback" not in r.output, (argv, r.output)
    if r.exception is not None:
        assert isinstance(r.exception, SystemExit), (argv, repr(r.exception))
    if r.exit_code == 2 and "error:" in r.output:
        one_line_error(r.output)
    after = snapshot(run)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    # a command may write only its own outputs into the run folder when no --out is given; with
    # --out nothing of the run changes
    assert not changed, (argv, changed)


@FAST
@given(args=command_lines())
def test_any_command_line_exits_0_or_2_and_writes_only_under_out(runs, tmp_path_factory, args):
    out = tmp_path_factory.mktemp("o")
    check_cli(args, runs, out)
    outside = [p for p in out.rglob("*") if p.is_file() and not str(p).startswith(str(out / "o"))]
    assert not outside, outside


@FAST
@given(key=st.sampled_from(KEYS), raw=VALUES)
def test_train_with_any_override_exits_0_or_2(tmp_path_factory, key, raw):
    """The real ``profond train`` with one random override on a tiny digits run (a few steps
    when the override is valid)."""
    cwd = tmp_path_factory.mktemp("cwd")
    out = cwd / "out"
    argv = ["train", "mlp", "--dataset", "digits", "--epochs", "1", "-q", "--out", str(out),
            "--set", "data.val_size=200", "--set", "model.widths=[8]", "--set", "train.max_steps=2",
            "--set", "train.device=cpu", "--set", f"{key}={raw}"]
    old = os.getcwd()
    os.chdir(cwd)
    try:
        r = CliRunner().invoke(app, argv)
    finally:
        os.chdir(old)
    assert r.exit_code in (0, 2), (argv, r.exit_code, r.output, repr(r.exception))
    assert "Traceback" not in r.output, r.output
    if r.exit_code == 2 and "error:" in r.output:
        one_line_error(r.output)
    if key != "out":  # `--set out=X` names another output folder, which is then the one to use
        stray = [p for p in cwd.rglob("*") if not str(p).startswith(str(out))]
        assert not stray, (argv, stray)


# -- 3. checkpoint metadata mutations --------------------------------------------------------
JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=False),
              st.text(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


def paths_of(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths_of(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            yield from paths_of(v, prefix + (i,))


def mutate(doc, path, value, delete: bool):
    if not path:
        return value
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory):
    from profond.train import train

    out = tmp_path_factory.mktemp("fuzz-ckpt")
    res = train(tiny_cfg(out, "train.checkpoint_every=5", "train.epochs=1", "train.keep_last=1"))
    return res.run_dir


@FAST
@given(data=st.data())
def test_mutated_checkpoint_metadata_is_refused_cleanly(ckpt_run, tmp_path_factory, data):
    check_mutated_meta(ckpt_run, tmp_path_factory, data)


def check_mutated_meta(ckpt_run: Path, tmp_path_factory, data) -> None:
    """One random mutation of the latest checkpoint's meta.json (a value replaced by any JSON
    value, or a key deleted): ``profond eval`` and ``profond train --resume`` exit 0 or 2, and a
    refusal leaves metrics.csv as it was."""
    import shutil

    run = tmp_path_factory.mktemp("m") / "run"
    shutil.copytree(ckpt_run, run)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())["path"]
    meta_path = run / "checkpoints" / latest / "meta.json"
    doc = json.loads(meta_path.read_text())
    path = data.draw(st.sampled_from(list(paths_of(doc))))
    value = data.draw(JSON_VALUES)
    doc = mutate(doc, path, value, delete=data.draw(st.booleans()))
    meta_path.write_text(json.dumps(doc))
    metrics = (run / "metrics.csv").read_bytes()
    for argv in (["eval", str(run), "--json"], ["train", "--resume", str(run), "-q"]):
        r = CliRunner().invoke(app, argv)
        assert r.exit_code in (0, 2), (path, value, argv, r.output, repr(r.exception))
        assert "Traceback" not in r.output
        if r.exit_code == 2:
            one_line_error(r.output)
            assert (run / "metrics.csv").read_bytes() == metrics, (path, value)


@pytest.mark.slow
@SOAK
@given(args=command_lines())
def test_soak_command_lines(runs, tmp_path_factory, args):
    check_cli(args, runs, tmp_path_factory.mktemp("o"))


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_soak_checkpoint_metadata(ckpt_run, tmp_path_factory, data):
    check_mutated_meta(ckpt_run, tmp_path_factory, data)
