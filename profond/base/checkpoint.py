"""Checkpoints: safetensors for tensors, JSON for everything else -- never pickle.

A checkpoint is a folder::

    step_00000123/
      model.safetensors   every net's state_dict, keys "<net>.<state_dict key>"
      optim.safetensors   optimizer tensor state, keys "<optimizer>.state.<param index>.<key>"
      extra.safetensors   the caller's ``extra_state`` tensors, keys as given
                          (the loop puts "rng.<...>" RNG byte tensors and "ema.<net>.<key>")
      meta.json           everything else (see below)

``meta.json`` holds: ``format`` (= 1), ``step``, ``epoch``, ``batch_in_epoch`` (copied from
the caller's meta or its ``loop`` section when present, for humans), ``versions``
(profond, torch, numpy, python), ``created`` (UTC time), ``nets`` (names), ``optimizers``
(per name: ``param_groups`` and the non-tensor per-parameter ``state`` values, e.g. an SGD
``momentum_buffer`` of ``None``), ``schedulers`` (per name: the scheduler's JSON
``state_dict``), ``metrics`` (or ``null``), ``meta`` (the caller's free-form dict,
returned by :func:`load_checkpoint`) and ``files`` (per ``.safetensors`` file: ``sha256``
and ``bytes``). It is checked against :data:`META_SCHEMA` (a declarative table of field ->
:class:`Spec`, checked by :func:`check_schema`) whenever it is read: valid JSON with bad
values (a string step, a list where a mapping belongs, a missing field) is a
:class:`~profond.errors.CheckpointError` naming the file and the field. The caller's own
section is checked by the caller with the same function (the training loop's in
:mod:`profond.train.resume`).

Nothing is ever unpickled: tensors are read with ``safetensors`` (a header + raw bytes),
the rest with ``json``. A ``.pt`` pickle renamed to ``model.safetensors`` fails its checksum
and the safetensors header check: :class:`~profond.errors.CheckpointError`.

Atomicity: a checkpoint is written into ``checkpoints/.tmp-step_XXXXXXXX-<random>/``, each
file fsynced, then the folder is renamed to its final name (an atomic operation) and
``checkpoints/latest.json`` (``{"path": "step_00000123", "step": 123}``) is atomically
rewritten. A crash leaves at worst a ``.tmp-*`` folder, which is ignored and later removed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .. import __version__
from ..errors import CheckpointError, ConfigError
from .io import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optim.safetensors"
EXTRA_FILE = "extra.safetensors"
META_FILE = "meta.json"
TENSOR_FILES = (MODEL_FILE, OPTIM_FILE, EXTRA_FILE)
TMP_PREFIX = ".tmp-"
STEP_RE = re.compile(r"^step_(\d+)$")


#: substrings of metric names for which larger is better (``mode: auto``)
HIGHER_IS_BETTER = ("acc", "f1", "auc", "psnr", "ssim", "iou", "dice", "bleu", "precision", "recall")


def resolve_mode(monitor: str, mode: str) -> str:
    """``"min"`` or ``"max"``: ``mode`` itself, or for ``"auto"`` guessed from the metric name
    (``max`` for accuracy-like names: acc, f1, auc, psnr, ssim, iou, dice, bleu, precision,
    recall; ``min`` otherwise, e.g. losses, perplexity, FID)."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ConfigError(f"bad mode {mode!r} for monitored metric {monitor!r}. Valid values: auto, min, max.")
    name = monitor.lower()
    return "max" if any(s in name for s in HIGHER_IS_BETTER) else "min"


def is_improvement(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` (NaN never improves)."""
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


# -- small helpers ---------------------------------------------------------------------------
def _to_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Serialize tensors with safetensors (CPU copies: shared / non-contiguous storage is fine)."""
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return st_save(flat)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_checked(obj: Any, what: str) -> Any:
    """``obj`` itself if it survives ``json.dumps`` unchanged in kind, else CheckpointError."""
    try:
        json.dumps(obj, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot save {what}: its state is not JSON-serializable ({e}).") from None
    return obj


# -- metadata schemas ------------------------------------------------------------------------
#: the largest integer JSON numbers carry exactly: a step, epoch or size above it is damage
MAX_INT = 2**53
#: the fix named when a checkpoint's metadata is valid JSON with bad values
DAMAGED = ("the checkpoint's metadata is damaged: delete this checkpoint folder to resume from an "
           "older one, or start a new run")


@dataclass(frozen=True)
class Spec:
    """What one JSON field of a checkpoint's metadata must be.

    ``kind`` is ``int``, ``number``, ``str``, ``bool``, ``list``, ``mapping`` or ``any``
    (``bool`` is never a number); ``optional``: the field may be absent; ``null``: it may be
    ``null``; ``lo`` / ``hi``: the range of a number (``finite``: no NaN or infinity);
    ``fields``: the fields a mapping must have (others are allowed); ``each``: what every
    value of a mapping or item of a list must be; ``keys``: a regular expression every key of
    a mapping must match.
    """

    kind: str
    optional: bool = False
    null: bool = False
    lo: float | None = None
    hi: float | None = None
    finite: bool = False
    fields: Mapping[str, Spec] | None = None
    each: Spec | None = None
    keys: str | None = None


#: a step, epoch, batch or byte count
COUNT = Spec("int", lo=0, hi=MAX_INT)
_KIND_WORDS = {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
               "list": "a list", "mapping": "a mapping", "any": "a value"}


def _kind_ok(value: Any, kind: str) -> bool:
    if kind in ("int", "number") and isinstance(value, bool):
        return False
    types: dict[str, Any] = {"int": int, "number": (int, float), "str": str, "bool": bool, "list": list,
                             "mapping": dict, "any": object}
    return isinstance(value, types[kind])


def _describe(spec: Spec) -> str:
    words = _KIND_WORDS[spec.kind]
    if spec.lo is not None and spec.hi is not None:
        words += f" from {spec.lo:g} to {spec.hi:g}"
    elif spec.lo is not None:
        words += f" >= {spec.lo:g}"
    elif spec.hi is not None:
        words += f" <= {spec.hi:g}"
    return words + (" or null" if spec.null else "")


def _show(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'} of {len(value)}"
    text = "null" if value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(field: str, name: Any) -> str:
    return f"{field}.{name}" if field else str(name)


def schema_problem(value: Any, spec: Spec, field: str = "") -> tuple[str, str] | None:
    """``(field, what is wrong)`` for the first part of ``value`` that ``spec`` refuses, else None."""
    if value is None:
        return None if spec.null else (field, f"must be {_describe(spec)}, got null")
    if not _kind_ok(value, spec.kind):
        return field, f"must be {_describe(spec)}, got {_show(value)}"
    if spec.kind in ("int", "number"):
        if spec.finite and not math.isfinite(value):
            return field, f"must be a finite number, got {_show(value)}"
        if (spec.lo is not None and not value >= spec.lo) or (spec.hi is not None and not value <= spec.hi):
            return field, f"must be {_describe(spec)}, got {_show(value)}"
    if isinstance(value, dict):
        for key in value:
            if spec.keys is not None and not (isinstance(key, str) and re.fullmatch(spec.keys, key)):
                return _join(field, key), f"is not a valid key here (expected {spec.keys!r})"
        for name, sub in (spec.fields or {}).items():
            if name not in value:
                if not sub.optional:
                    return _join(field, name), "is missing"
                continue
            problem = schema_problem(value[name], sub, _join(field, name))
            if problem:
                return problem
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    if spec.each is not None:
        for key, item in items:
            problem = schema_problem(item, spec.each, _join(field, key))
            if problem:
                return problem
    return None


def check_schema(value: Any, schema: Mapping[str, Spec], *, file: Path, prefix: str = "") -> None:
    """Check the mapping ``value`` (read from ``file``; ``prefix``: where it sits in that file)
    against ``schema`` (field -> :class:`Spec`); CheckpointError naming the file and the field."""
    problem = schema_problem(value, Spec("mapping", fields=schema), prefix)
    if problem:
        field, what = problem
        raise CheckpointError(f"{str(file)!r}: field {field or 'the whole document'!r} {what}; {DAMAGED}.")


#: the JSON part of :func:`rng_state` (numpy's Mersenne Twister: 624 keys; Python's: 625 words)
RNG_SCHEMA: dict[str, Spec] = {
    "numpy": Spec("mapping", optional=True, null=True, fields={
        "kind": Spec("str"), "keys": Spec("list", each=Spec("int", lo=0, hi=2**32 - 1)),
        "pos": Spec("int", lo=0, hi=624), "has_gauss": Spec("int", lo=0, hi=1),
        "cached_gaussian": Spec("number")}),
    "python": Spec("mapping", optional=True, null=True, fields={
        "version": Spec("int"), "state": Spec("list", each=Spec("int", lo=0, hi=2**32)),
        "gauss_next": Spec("number", null=True)}),
}
_NUMBERS = Spec("list", optional=True, each=Spec("number"))
#: ``meta.json`` as :func:`save_checkpoint` writes it (informational fields only type-checked)
META_SCHEMA: dict[str, Spec] = {
    "format": Spec("int"),
    "step": Spec("int", lo=0, hi=MAX_INT, null=True, optional=True),
    "epoch": Spec("int", lo=0, hi=MAX_INT, null=True, optional=True),
    "batch_in_epoch": Spec("int", lo=0, hi=MAX_INT, null=True, optional=True),
    "created": Spec("str", optional=True),
    "versions": Spec("mapping", optional=True),
    "nets": Spec("list", each=Spec("str")),
    "optimizers": Spec("mapping", each=Spec("mapping", fields={
        "state": Spec("mapping", keys=r"\d+", each=Spec("mapping")),
        "param_groups": Spec("list", each=Spec("mapping", fields={
            "params": Spec("list", each=COUNT), "lr": Spec("number", optional=True, lo=0)})),
        "n_state": Spec("int", optional=True, lo=0)})),
    "schedulers": Spec("mapping", each=Spec("mapping", fields={
        "last_epoch": Spec("int", optional=True, lo=-1, hi=MAX_INT), "_step_count": Spec("int", optional=True),
        "base_lrs": _NUMBERS, "_last_lr": _NUMBERS,
        "lr_lambdas": Spec("list", optional=True, each=Spec("mapping", null=True))})),
    "metrics": Spec("mapping", null=True, optional=True),
    "meta": Spec("mapping"),
    "files": Spec("mapping", each=Spec("mapping", fields={"sha256": Spec("str"), "bytes": COUNT})),
}


def _find(meta: Mapping[str, Any], *keys: str) -> Any:
    """First of ``keys`` found in ``meta`` or in its ``loop`` section (informational fields)."""
    loop = meta.get("loop") if isinstance(meta.get("loop"), Mapping) else {}
    for src in (meta, loop):
        for k in keys:
            if k in src:
                return src[k]
    return None


# -- RNG state -------------------------------------------------------------------------------
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every global RNG's state, for exact resume.

    Returns ``(tensors, meta)``: ``tensors`` holds the byte states (``"torch"`` for torch's
    CPU generator, ``"cuda.<i>"`` for each CUDA device), ``meta`` the JSON-able states of
    numpy's global RNG (``"numpy"``) and Python's ``random`` (``"python"``).
    """
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    return tensors, meta


def set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned. CUDA states are restored for the devices
    present (a checkpoint from a GPU machine resumes on CPU without them)."""
    if "torch" in tensors:
        torch.set_rng_state(tensors["torch"].detach().to("cpu", torch.uint8))
    cuda = sorted((int(k.split(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        for i, state in cuda:
            if i < torch.cuda.device_count():
                torch.cuda.set_rng_state(state.detach().to("cpu", torch.uint8), i)
    if meta.get("numpy"):
        n = meta["numpy"]
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), int(n["pos"]),
                             int(n["has_gauss"]), float(n["cached_gaussian"])))
    if meta.get("python"):
        p = meta["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# -- save ------------------------------------------------------------------------------------
def _split_optimizer(name: str, opt: Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state_dict -> (tensors for optim.safetensors, JSON part)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    json_state: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        plain: dict[str, Any] = {}
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{name}.state.{idx}.{key}"] = value
            else:
                plain[key] = value
        json_state[str(idx)] = plain
    groups = []
    for group in sd["param_groups"]:
        for key, value in group.items():
            if torch.is_tensor(value):
                raise CheckpointError(
                    f"cannot save optimizer {name!r}: its param group setting {key!r} is a tensor; "
                    "use plain numbers for optimizer settings."
                )
        groups.append(dict(group))
    part = {"state": json_state, "param_groups": groups, "n_state": len(sd["state"])}
    return tensors, _json_checked(part, f"optimizer {name!r}")


def _check_name(kind: str, name: str) -> None:
    if not name or "." in name:
        raise ConfigError(f"{kind} name {name!r} cannot be saved: use a non-empty name without '.'.")


def save_checkpoint(
    dir: Path,
    *,
    nets: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer],
    schedulers: Mapping[str, LRScheduler],
    extra_state: Mapping[str, torch.Tensor] | None,
    meta: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder ``dir`` atomically and return its path.

    Everything is first written to a hidden sibling ``.tmp-<name>-<random>`` folder (files
    fsynced), which is then renamed to ``dir``. An existing ``dir`` is replaced.
    ``meta`` is any JSON-serializable dict (non-JSON values are written with ``str``).
    """
    final = Path(dir)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)

    model_t: dict[str, torch.Tensor] = {}
    for name, net in nets.items():
        _check_name("net", name)
        for key, value in net.state_dict().items():
            if not torch.is_tensor(value):  # e.g. a module's get_extra_state() object
                raise CheckpointError(
                    f"cannot save net {name!r}: its state_dict entry {key!r} is a "
                    f"{type(value).__name__}, not a tensor (checkpoints never pickle)."
                )
            model_t[f"{name}.{key}"] = value
    optim_t: dict[str, torch.Tensor] = {}
    optim_json: dict[str, Any] = {}
    for name, opt in optimizers.items():
        _check_name("optimizer", name)
        tensors, part = _split_optimizer(name, opt)
        optim_t.update(tensors)
        optim_json[name] = part
    sched_json = {name: _json_checked(s.state_dict(), f"scheduler {name!r}") for name, s in schedulers.items()}
    extra_t = dict(extra_state or {})
    for k, v in extra_t.items():
        if not torch.is_tensor(v):
            raise CheckpointError(f"extra_state[{k!r}] is a {type(v).__name__}, not a tensor; put it in meta.")

    blobs = {MODEL_FILE: _to_bytes(model_t), OPTIM_FILE: _to_bytes(optim_t), EXTRA_FILE: _to_bytes(extra_t)}
    doc = {
        "format": FORMAT_VERSION,
        "step": _find(meta, "step"),
        "epoch": _find(meta, "epoch"),
        "batch_in_epoch": _find(meta, "batch_in_epoch", "batch"),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"profond": __version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "nets": list(nets),
        "optimizers": optim_json,
        "schedulers": sched_json,
        "metrics": dict(metrics) if metrics is not None else None,
        "meta": dict(meta),
        "files": {f: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for f, b in blobs.items()},
    }

    tmp = parent / f"{TMP_PREFIX}{final.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for fname, data in blobs.items():
            atomic_write_bytes(tmp / fname, data)
        atomic_write_json(tmp / META_FILE, doc)  # written last: its presence marks completeness
        _fsync_dir(tmp)
        old = None
        if final.exists():  # re-saving the same step: move the old folder aside first
            old = parent / f"{TMP_PREFIX}old-{final.name}-{secrets.token_hex(4)}"
            os.rename(final, old)
        os.rename(tmp, final)
        _fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


# -- load ------------------------------------------------------------------------------------
def read_meta(path: Path) -> dict[str, Any]:
    """Parse ``path/meta.json`` and check it against :data:`META_SCHEMA`, or raise
    CheckpointError naming the file (and the field, for valid JSON with bad values)."""
    f = Path(path) / META_FILE
    if not f.is_file():
        raise CheckpointError(
            f"{str(path)!r} is not a complete checkpoint (no {META_FILE}): it was probably "
            "interrupted while saving. Delete it, or resume from checkpoints/latest.json."
        )
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{str(f)!r} is corrupt ({e}); delete this checkpoint folder and use an older one.") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(f)!r} is not a profond checkpoint of format {FORMAT_VERSION}; "
            "was it written by another program or profond version?"
        )
    check_schema(doc, META_SCHEMA, file=f)
    return doc


def _read_tensors(path: Path, fname: str, doc: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Read one .safetensors file after checking its sha256 against meta.json."""
    f = path / fname
    fix = "the checkpoint is damaged: delete this folder and resume from an older one"
    info = doc.get("files", {}).get(fname)
    if info is None:
        raise CheckpointError(f"{str(path / META_FILE)!r} lists no {fname}; {fix}.")
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{str(f)!r} is missing; {fix}.") from None
    if len(data) != info.get("bytes") or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        raise CheckpointError(
            f"{str(f)!r} is truncated or corrupt (size {len(data)} B, expected {info.get('bytes')} B, "
            f"or sha256 mismatch); {fix}."
        )
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{str(f)!r} is not a valid safetensors file ({e}); {fix}.") from None


def _missing_names(kind: str, wanted: Mapping[str, Any], saved: list[str], path: Path) -> None:
    missing = [n for n in wanted if n not in saved]
    if missing:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has no {kind} named {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(saved) or 'none'}); load it with the same method/config it was trained with."
        )


def _load_net(name: str, net: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    prefix = f"{name}."
    saved = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = net.state_dict()
    missing = sorted(own.keys() - saved.keys())
    unexpected = sorted(saved.keys() - own.keys())
    wrong = [f"{k}: saved {tuple(saved[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in saved and saved[k].shape != v.shape]
    if missing or unexpected or wrong:
        details = "; ".join(filter(None, [
            f"missing keys {missing[:5]}" if missing else "",
            f"unexpected keys {unexpected[:5]}" if unexpected else "",
            f"shape mismatches {wrong[:5]}" if wrong else "",
        ]))
        raise CheckpointError(
            f"net {name!r} does not match {str(path / MODEL_FILE)!r} ({details}); "
            "build the model with the config the checkpoint was trained with (RUN_DIR/config.yaml)."
        )
    net.load_state_dict(saved, strict=True)


def _restore_group(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """JSON turned tuples (e.g. Adam's betas) into lists: give them back their type."""
    out = dict(saved)
    for key, value in out.items():
        if isinstance(current.get(key), tuple) and isinstance(value, list):
            out[key] = tuple(value)
    return out


def _load_optimizer(name: str, opt: Optimizer, part: dict[str, Any],
                    tensors: dict[str, torch.Tensor], path: Path) -> None:
    fix = "resume with the same model, optim and model.freeze settings as the checkpoint"
    current = opt.state_dict()
    groups = part["param_groups"]
    if len(groups) != len(current["param_groups"]) or any(
        len(g["params"]) != len(c["params"]) for g, c in zip(groups, current["param_groups"], strict=True)
    ):
        raise CheckpointError(
            f"optimizer {name!r} in {str(path)!r} has parameter groups of sizes "
            f"{[len(g['params']) for g in groups]}, this one {[len(c['params']) for c in current['param_groups']]}; {fix}."
        )
    meta_file = str(path / META_FILE)
    for i, (g, c) in enumerate(zip(groups, current["param_groups"], strict=True)):
        where = f"optimizers.{name}.param_groups.{i}"
        if g["params"] != c["params"]:  # state_dict() numbers the parameters 0, 1, ... in order
            raise CheckpointError(f"{meta_file!r}: field {where + '.params'!r} does not number the "
                                  f"parameters {c['params'][:1]}, ... in order; {DAMAGED}.")
        for key, value in g.items():
            if key not in ("params", "initial_lr") and key in c and not _same_kind(value, c[key]):
                raise CheckpointError(f"{meta_file!r}: field {where + '.' + key!r} is {_show(value)}, but "
                                      f"this optimizer's {key!r} is {_show(c[key])}; {fix}.")
    params = [p for g in opt.param_groups for p in g["params"]]
    index_to_param = {i: p for c, g in zip(current["param_groups"], opt.param_groups, strict=True)
                      for i, p in zip(c["params"], g["params"], strict=True)}
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in part["state"].items()}
    prefix = f"{name}.state."
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        idx_str, skey = key[len(prefix):].split(".", 1)
        state.setdefault(int(idx_str), {})[skey] = value
    for idx, pstate in state.items():
        param = index_to_param.get(idx)
        if param is None:
            raise CheckpointError(f"optimizer {name!r} in {str(path)!r} has state for parameter {idx} of {len(params)}; {fix}.")
        for skey, value in pstate.items():
            if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                raise CheckpointError(
                    f"optimizer {name!r} state {skey!r} of parameter {idx} has shape {tuple(value.shape)} "
                    f"in {str(path / OPTIM_FILE)!r}, the parameter {tuple(param.shape)}; {fix}."
                )
    sd = {"state": state,
          "param_groups": [_restore_group(g, c) for g, c in zip(groups, current["param_groups"], strict=True)]}
    try:
        opt.load_state_dict(sd)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"cannot load optimizer {name!r} from {str(path)!r} ({e}); {fix}.") from None
    for i, (group, c) in enumerate(zip(opt.param_groups, current["param_groups"], strict=True)):
        # e.g. Adam's groups loaded into SGD: no 'momentum' (torch fills only the keys it added later)
        missing = sorted(set(c) - set(group) - {"initial_lr"})
        if missing:
            raise CheckpointError(f"{meta_file!r}: field 'optimizers.{name}.param_groups.{i}' has no "
                                  f"{', '.join(map(repr, missing[:4]))}, which this {type(opt).__name__} "
                                  f"needs; {fix}.")


def _same_kind(saved: Any, current: Any) -> bool:
    """Whether a saved optimizer setting can stand for the current one: numbers for numbers,
    flags (or null) for flags, strings for strings, sequences of the same length."""
    if current is None or isinstance(current, bool):
        return saved is None or isinstance(saved, bool)
    if isinstance(current, (int, float)):
        return isinstance(saved, (int, float)) and not isinstance(saved, bool)
    if isinstance(current, str):
        return isinstance(saved, str)
    if isinstance(current, (list, tuple)):
        return (isinstance(saved, (list, tuple)) and len(saved) == len(current)
                and all(_same_kind(s, c) for s, c in zip(saved, current, strict=True)))
    return True


def load_checkpoint(
    path: Path,
    *,
    nets: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer],
    schedulers: Mapping[str, LRScheduler],
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Load a checkpoint folder into ``nets``, ``optimizers`` and ``schedulers`` (in place).

    Any of the three may name a subset of what was saved (e.g. only the nets, to evaluate).
    Every file's sha256 is checked first; a missing or corrupt file, an unknown name or a
    shape mismatch raises :class:`~profond.errors.CheckpointError`. Returns the caller's
    ``meta`` dict as saved, plus ``"extra_state"`` (the extra tensors, on ``map_location``)
    and ``"metrics"`` (the saved metrics or ``None``). Build the schedulers from the same
    config before loading (their schedule is code, only their position is saved).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {str(path)!r} not found; pass a folder like RUN_DIR/checkpoints/step_00000100.")
    doc = read_meta(path)
    model_t = _read_tensors(path, MODEL_FILE, doc) if nets else {}
    optim_t = _read_tensors(path, OPTIM_FILE, doc) if optimizers else {}
    extra_t = _read_tensors(path, EXTRA_FILE, doc)

    _missing_names("net", nets, list(doc.get("nets", [])), path)
    _missing_names("optimizer", optimizers, list(doc.get("optimizers", {})), path)
    _missing_names("scheduler", schedulers, list(doc.get("schedulers", {})), path)

    for name, net in nets.items():
        _load_net(name, net, model_t, path)
    for name, opt in optimizers.items():
        _load_optimizer(name, opt, doc["optimizers"][name], optim_t, path)
    for name, sched in schedulers.items():
        try:
            sched.load_state_dict(doc["schedulers"][name])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise CheckpointError(f"cannot load scheduler {name!r} from {str(path)!r} ({e}); resume with the same sched config.") from None
        for key in ("base_lrs", "_last_lr"):
            n, groups = len(getattr(sched, key, None) or []), len(sched.optimizer.param_groups)
            if n != groups:
                raise CheckpointError(f"{str(path / META_FILE)!r}: field 'schedulers.{name}.{key}' holds {n} "
                                      f"learning rates for {groups} parameter groups; {DAMAGED}.")

    out = dict(doc.get("meta") or {})
    out["extra_state"] = {k: v.to(map_location) for k, v in extra_t.items()}
    out["metrics"] = doc.get("metrics")
    return out


# -- manager ---------------------------------------------------------------------------------
def _is_complete(folder: Path) -> bool:
    try:
        read_meta(folder)
    except CheckpointError:
        return False
    return True


class CheckpointManager:
    """The checkpoints of one run: ``RUN_DIR/checkpoints/``.

    * :meth:`save` writes ``step_XXXXXXXX/`` atomically, points ``latest.json`` at it,
      keeps the last ``keep_last`` step folders, and (if ``monitor`` is set and present in
      the saved ``metrics``) refreshes ``best/`` -- hard links to the best checkpoint's files,
      kept even after that step folder is pruned;
    * :meth:`latest` / :meth:`best` return the folders to load (or ``None``).

    Constructing a manager changes nothing on disk (it is also used read-only, to evaluate).
    """

    def __init__(self, run_dir: Path, keep_last: int = 2, monitor: str | None = None, mode: str = "min"):
        if keep_last < 1:
            raise ConfigError(f"bad value for 'train.keep_last': {keep_last!r}; keep at least 1 checkpoint.")
        self.run_dir = Path(run_dir)
        self.dir = self.run_dir / "checkpoints"
        self.keep_last = int(keep_last)
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode) if monitor else mode

    # -- queries
    def step_folders(self) -> list[Path]:
        """Complete ``step_*`` folders, oldest first."""
        if not self.dir.is_dir():
            return []
        found = []
        for p in self.dir.iterdir():
            m = STEP_RE.match(p.name)
            if m and p.is_dir() and (p / META_FILE).is_file():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The newest complete checkpoint: the one ``latest.json`` names, else (no pointer, or
        one naming a vanished folder) the newest ``step_*`` folder with a readable ``meta.json``;
        ``None`` when there is no step folder at all.

        A crash never leaves a step folder with a bad ``meta.json`` (folders are renamed into
        place complete), so a damaged one is reported, not skipped: CheckpointError naming the
        file and what is wrong, when ``latest.json`` names it or when no step folder is readable.
        """
        target = self._pointer()
        if target is not None and (target / META_FILE).is_file():
            read_meta(target)  # raises: the checkpoint latest.json names is damaged
            return target
        first_error: CheckpointError | None = None
        for folder in reversed(self.step_folders()):
            try:
                read_meta(folder)
            except CheckpointError as e:
                first_error = first_error or e
                continue
            return folder
        if first_error is not None:
            raise first_error
        return None

    def _pointer(self) -> Path | None:
        """The step folder ``latest.json`` names, if it is readable and names one."""
        try:
            name = json.loads((self.dir / "latest.json").read_text(encoding="utf-8"))["path"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return self.dir / name if isinstance(name, str) and STEP_RE.match(name) else None

    def best(self) -> Path | None:
        folder = self.dir / "best"
        return folder if _is_complete(folder) else None

    def best_value(self) -> float | None:
        best = self.best()
        if best is None or not self.monitor:
            return None
        value = (read_meta(best).get("metrics") or {}).get(self.monitor)
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):  # a damaged best/ is replaced by the next best
            return None

    # -- writing
    def clean_tmp(self) -> None:
        """Remove ``.tmp-*`` leftovers of interrupted saves."""
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name.startswith(TMP_PREFIX) and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)

    def save(
        self,
        step: int,
        *,
        nets: Mapping[str, nn.Module],
        optimizers: Mapping[str, Optimizer],
        schedulers: Mapping[str, LRScheduler],
        extra_state: Mapping[str, torch.Tensor] | None,
        meta: Mapping[str, Any],
        metrics: Mapping[str, Any] | None = None,
    ) -> Path:
        """Save checkpoint ``step``; returns ``checkpoints/step_{step:08d}``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clean_tmp()
        name = f"step_{int(step):08d}"
        folder = save_checkpoint(self.dir / name, nets=nets, optimizers=optimizers, schedulers=schedulers,
                                 extra_state=extra_state, meta={**meta, "step": int(step)}, metrics=metrics)
        atomic_write_json(self.dir / "latest.json", {"path": name, "step": int(step)})
        if self.monitor and metrics is not None and self.monitor in metrics:
            value = float(metrics[self.monitor])
            if is_improvement(value, self.best_value(), self.mode):
                self._set_best(folder)
        self._prune(keep=folder)
        return folder

    def _set_best(self, folder: Path) -> None:
        """Make ``best/`` a copy (hard links when possible) of ``folder``, atomically."""
        tmp = self.dir / f"{TMP_PREFIX}best-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            for f in (*TENSOR_FILES, META_FILE):
                try:
                    os.link(folder / f, tmp / f)
                except OSError:
                    shutil.copy2(folder / f, tmp / f)
            _fsync_dir(tmp)
            best = self.dir / "best"
            old = None
            if best.exists():
                old = self.dir / f"{TMP_PREFIX}old-best-{secrets.token_hex(4)}"
                os.rename(best, old)
            os.rename(tmp, best)
            _fsync_dir(self.dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _prune(self, keep: Path) -> None:
        folders = [p for p in self.step_folders() if p != keep]
        excess = len(folders) + 1 - self.keep_last
        for p in folders[:max(excess, 0)]:
            shutil.rmtree(p, ignore_errors=True)
