"""Hugging Face interoperability: ``profond import-hf`` (a GPT-2 / BERT checkpoint folder ->
a profond run) and ``profond export-hf`` (a run's gpt / bert model -> a checkpoint folder that
``transformers`` loads). Neither imports ``transformers`` nor unpickles anything; the mapping
itself is :mod:`profond.models.hf`, the methods of the imported runs
:mod:`profond.methods.pretrained`.

An imported run is what a training run leaves, at step 0: ``config.yaml`` (model ``gpt`` or
``bert`` with the checkpoint's sizes, method ``pretrained-lm`` or ``pretrained-mlm``),
``checkpoints/step_00000000/`` (safetensors + JSON, written by the checkpoint code),
``summary.json`` (the source and the notes of the conversion) and, when the checkpoint folder
holds a profond one, ``tokenizer.json``. It is written into a hidden folder beside the run,
renamed into place at the end: the run appears whole or not at all, and only under ``--out``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError
from .common import CheckpointOpt, DeviceOpt, app, examples, load_method, show, user_errors

TOKENIZER_FILE = "tokenizer.json"
#: the loop section of an imported run's checkpoint (see :mod:`profond.train.resume`): step 0
LOOP_AT_START: dict[str, Any] = {
    "step": 0, "epoch": 0, "batch": 0, "rng": {}, "acc_sums": {}, "acc_count": 0, "acc_ns": {},
    "method_state": {}, "elapsed": 0.0, "samples_seen": 0, "scaler": None, "early_stop": None}


def _copy_tokenizer(src: Path, dest: Path, vocab: int, notes: list[str]) -> bool:
    """Copy ``src/tokenizer.json`` into ``dest`` if it is a profond tokenizer of at most ``vocab``
    tokens (a Hugging Face ``tokenizers`` file of the same name is not: noted, left out)."""
    from ..data.tokenize import load_tokenizer
    from ..errors import DatasetError

    path = src / TOKENIZER_FILE
    if not path.is_file():
        return False
    try:
        tok = load_tokenizer(path)
    except DatasetError:
        notes.append(f"{path} is not a profond tokenizer (a Hugging Face tokenizers file?): not imported.")
        return False
    if tok.vocab_size > vocab:
        notes.append(f"{path} has {tok.vocab_size} tokens, more than the model's {vocab}: not imported.")
        return False
    shutil.copyfile(path, dest / TOKENIZER_FILE)
    return True


def import_run(src: str | Path, out: str | Path, name: str) -> tuple[Path, list[str]]:
    """Make the run folder ``out/name`` from the Hugging Face checkpoint folder ``src``; returns
    ``(run folder, notes)``. ConfigError, with nothing written, for a folder that is not a GPT-2
    / BERT checkpoint in safetensors, weights that do not match their config, or a run folder
    that already exists."""
    import torch

    from ..base.checkpoint import CheckpointManager
    from ..base.io import atomic_write_json
    from ..config import RunConfig, check_run_name, validate
    from ..models import hf
    from ..registry import MODELS
    from ..train.loop import count_params, versions

    src, out = Path(src), Path(out)
    check_run_name(name, "--name")
    run_dir = out / name
    if run_dir.exists():
        raise ConfigError(f"{run_dir} already exists: choose another --name or --out (import-hf never "
                          "overwrites a run).")
    config, tensors = hf.read_hf_folder(src)
    kind = hf.hf_kind(config)
    notes: list[str] = []
    model_name, args, state = hf.from_hf(config, tensors, notes)
    del tensors
    method_name = hf.MODEL_TYPES[kind][1]
    cfg = RunConfig()
    cfg.model.name, cfg.model.args = model_name, args
    cfg.method.name = method_name
    cfg.data.name, cfg.out, cfg.name = "none", str(out), name
    validate(cfg)
    with torch.random.fork_rng(devices=[]):  # the weights are replaced: no draw of the caller's RNG
        model = MODELS.build(model_name, **args)
    model.load_state_dict(state, strict=True)
    del state

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-import-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        cfg.save(tmp / "config.yaml")
        CheckpointManager(tmp).save(0, nets={"model": model}, optimizers={}, schedulers={}, extra_state={},
                                    meta={"loop": LOOP_AT_START, "config": cfg.to_dict(), "resumed": []})
        has_tok = _copy_tokenizer(src, tmp, args["vocab_size"], notes)
        if not has_tok and kind == "gpt2":
            notes.append(f"no profond {TOKENIZER_FILE}: the run maps token ids to logits; `profond generate` "
                         "needs a tokenizer to read a prompt.")
        atomic_write_json(tmp / "summary.json", {
            "status": "imported", "run_dir": str(run_dir), "model": model_name, "method": method_name,
            "source": str(src.resolve()), "hf_model_type": kind, "hf_architectures": config.get("architectures"),
            "parameters": {"model": count_params(model)}, "tokenizer": has_tok, "notes": notes,
            "versions": versions(), "finished_at": datetime.now().isoformat(timespec="seconds")})
        try:
            os.rename(tmp, run_dir)
        except OSError as e:
            if run_dir.exists():
                raise ConfigError(f"{run_dir} appeared while the run was written: choose another --name.") from None
            raise OSError(e.errno, e.strerror, str(run_dir)) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir, notes


def export_run(run_dir: str | Path, dest: str | Path, *, checkpoint: str = "last", device: str = "cpu") -> list[Path]:
    """Write the gpt / bert model of the run ``run_dir`` as the Hugging Face folder ``dest`` (new,
    or empty), with the run's ``tokenizer.json``; returns the files written."""
    from ..data.tokenize import load_tokenizer
    from ..models import hf

    run_dir, dest = Path(run_dir), Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ConfigError(f"{dest} already exists and is not an empty folder: choose a new folder (export-hf "
                          "never overwrites).")
    method, trainer = load_method(run_dir, checkpoint=checkpoint, device=device)
    model = method.raw_nets.get("model")
    tok_path = run_dir / TOKENIZER_FILE
    tok = load_tokenizer(tok_path) if tok_path.is_file() else None
    try:
        config, tensors = hf.to_hf(model, tok)
    except ConfigError as e:
        raise ConfigError(f"{run_dir} ({trainer.cfg.model.name}): {e}") from None
    return hf.write_hf_folder(dest, config, tensors, (tok_path,) if tok is not None else ())


@app.command("import-hf", epilog=examples(
    "profond import-hf ~/models/gpt2 --out runs --name gpt2",
    "profond import-hf ./bert-tiny --name bert-tiny   (then: profond export-hf runs/bert-tiny ./bert-tiny-again)",
    "profond generate runs/gpt2 --prompt \"The \" --temperature 0   (needs a profond tokenizer.json)"))
@user_errors
def import_hf(
    src: Path = typer.Argument(..., help="A Hugging Face checkpoint folder: config.json + model.safetensors "
                               "(GPT2LMHeadModel, GPT2Model, BertForMaskedLM or BertModel)."),
    out_dir: Path = typer.Option(Path("runs"), "--out", "-o", help="Parent folder of run folders."),
    name: str = typer.Option(None, "--name", help="Run folder name (default: the checkpoint folder's name)."),
) -> None:
    """Import a GPT-2 or BERT checkpoint as a profond run (model gpt or bert, method pretrained-lm
    or pretrained-mlm): writes config.yaml, checkpoints/ and summary.json, prints the run folder.

    Only safetensors are read (a pytorch_model.bin pickle is refused, with how to convert it).
    A profond tokenizer.json in the folder comes along: `profond generate` needs one.
    """
    run_dir, notes = import_run(src, out_dir, name if name is not None else Path(src).resolve().name)
    for note in notes:
        show(f"note: {note}", stderr=True)
    show(str(run_dir))


@app.command("export-hf", epilog=examples(
    "profond export-hf runs/gpt2 ./gpt2-again",
    "profond export-hf runs/fortune-char-gpt ./char-gpt   (a char-lm run of model gpt)",
    "python -c \"from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('./char-gpt')\""))
@user_errors
def export_hf(
    run_dir: Path = typer.Argument(..., help="A run folder whose model is gpt or bert (trained or imported)."),
    dest: Path = typer.Argument(..., help="New folder to write (it must not exist, or be empty)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "cpu",
) -> None:
    """Write a run's gpt model as GPT-2 (GPT2LMHeadModel) or its bert model as BERT (BertForMaskedLM):
    config.json + model.safetensors (+ the run's profond tokenizer.json); prints the files.

    A model GPT-2 / BERT cannot express (pos rope / alibi / sinusoidal, swiglu, rms, moe,
    kv_groups, no bias, cls_token, Pre-Norm BERT, ...) is refused, naming the option.
    """
    for f in export_run(run_dir, dest, checkpoint=checkpoint, device=device):
        show(str(f))
