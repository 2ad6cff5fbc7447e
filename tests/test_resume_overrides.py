"""`profond train --resume RUN` with changed settings (issue 13, item 3): what may change is
applied (the LR in the optimizer, the schedule over the new length) and recorded (config.yaml,
summary.json's ``resumed``); what may not is refused with exit 2 before anything is written."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from profond import config as C
from profond.cli import app
from profond.contract import Callback
from profond.errors import ConfigError
from profond.train import train
from profond.train.resume import CHANGEABLE, FIXED, rule
from profond.train.schedules import lr_at
from tests.conftest import StopAt, tiny_cfg

STEPS_PER_EPOCH = 20  # 1238 training digits / batch 64 (tiny_cfg)


def config_fields(cls: type = C.RunConfig, prefix: str = "") -> list[str]:
    """Every field of every config dataclass, as a dotted key (nested sections walked)."""
    keys = []
    for f in dataclasses.fields(cls):
        default = getattr(cls(), f.name)
        if dataclasses.is_dataclass(default):
            keys += config_fields(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _covers(table: dict[str, str], key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in table)


def test_every_config_field_is_in_exactly_one_table():
    fields = config_fields()
    assert "train.early_stop.patience" in fields and "model.init_from" in fields
    for key in fields:
        where = [name for name, table in (("CHANGEABLE", CHANGEABLE), ("FIXED", FIXED)) if _covers(table, key)]
        assert len(where) == 1, f"{key}: declared in {where or 'neither table'}"
    # every entry names a field or a section of the config, and none is declared twice
    for entry in [*CHANGEABLE, *FIXED]:
        assert any(f == entry or f.startswith(entry + ".") for f in fields), entry
    assert not set(CHANGEABLE) & set(FIXED)
    # builder arguments of the open sections follow their section; undeclared keys are refused
    assert rule("model.widths")[0] is False and rule("method.label_smoothing")[0] is False
    assert rule("sched.min_lr")[0] is True and rule("train.brand_new_key")[0] is False


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_resume_with_a_new_lr_trains_with_it_and_records_it(tmp_path):
    first = train(tiny_cfg(tmp_path, "train.epochs=1"))
    run = first.run_dir
    r = invoke("train", "--resume", str(run), "--epochs", "2", "--set", "optim.lr=0.01", "-q")
    assert r.exit_code == 0, r.output
    rows = _read_csv(run / "metrics.csv")
    assert [float(row["lr"]) for row in rows] == [0.001, 0.01]  # the optimizer's LR, logged per epoch
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())["path"]
    group = json.loads((run / "checkpoints" / latest / "meta.json").read_text())["optimizers"]["model"][
        "param_groups"][0]
    assert group["lr"] == group["initial_lr"] == 0.01
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.01
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] == [{"step": 20, "changed": {"optim.lr": [0.001, 0.01], "train.epochs": [1, 2]}}]

    # a second resume keeps the first one's entry (it travels in the checkpoints)
    r = invoke("train", "--resume", str(run), "--epochs", "3", "--set", "train.log_every=5", "-q")
    assert r.exit_code == 0, r.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed"] == [
        {"step": 20, "changed": {"optim.lr": [0.001, 0.01], "train.epochs": [1, 2]}},
        {"step": 40, "changed": {"train.epochs": [2, 3], "train.log_every": [20, 5]}},
    ]
    assert float(_read_csv(run / "metrics.csv")[-1]["lr"]) == 0.01
    assert json.loads(json.dumps(summary)) == summary


def test_a_change_written_to_config_yaml_before_a_crash_is_applied_at_the_next_resume(tmp_path):
    """The comparison is with the config the checkpoint was trained with: a resume that wrote
    its new config.yaml and died before its first checkpoint is still applied."""
    run = train(tiny_cfg(tmp_path, "train.epochs=1")).run_dir
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["optim"]["lr"], cfg["train"]["epochs"] = 0.02, 2
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = invoke("train", "--resume", str(run), "-q")
    assert r.exit_code == 0, r.output
    assert float(_read_csv(run / "metrics.csv")[-1]["lr"]) == 0.02
    assert json.loads((run / "summary.json").read_text())["resumed"][0]["changed"]["optim.lr"] == [0.001, 0.02]


class LRs(Callback):
    """The LR each optimizer step uses: at the start, then after each step (for the next one)."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_train_start(self, loop):
        self.lrs.append(loop.lr())

    def on_step_end(self, loop, step, metrics):
        self.lrs.append(loop.lr())


CURVES = {  # old settings, new settings: the run is interrupted mid-epoch 2 (step 27), then resumed
    "cosine longer, new lr": (["sched.name=cosine", "train.epochs=2"],
                              ["sched.name=cosine", "train.epochs=3", "optim.lr=0.003"]),
    "cosine shorter": (["sched.name=cosine", "train.epochs=4"], ["sched.name=cosine", "train.epochs=2"]),
    "constant to warmup-cosine": (["train.epochs=2"],
                                  ["sched.name=warmup-cosine", "sched.warmup_epochs=0.5", "train.epochs=3"]),
    "onecycle longer": (["sched.name=onecycle", "train.epochs=2"], ["sched.name=onecycle", "train.epochs=3"]),
    "step, new lr": (["sched.name=step", "sched.step_epochs=1", "sched.gamma=0.5", "train.epochs=3"],
                     ["sched.name=step", "sched.step_epochs=1", "sched.gamma=0.5", "train.epochs=3",
                      "optim.lr=0.004"]),
}


@pytest.mark.parametrize("case", list(CURVES))
def test_lr_after_resume_equals_a_fresh_run_with_the_new_settings(tmp_path, case):
    old, new = CURVES[case]
    stop = 27
    part = train(tiny_cfg(tmp_path / "res", *old), callbacks=[StopAt(stop)])
    assert part.summary["status"] == "interrupted" and part.summary["steps"] == stop
    resumed, fresh = LRs(), LRs()
    train(tiny_cfg(tmp_path / "res", *new), run_dir=part.run_dir, resume=True, callbacks=[resumed])
    train(tiny_cfg(tmp_path / "fresh", *new), callbacks=[fresh])
    assert len(fresh.lrs) == len(resumed.lrs) + stop
    assert resumed.lrs == fresh.lrs[stop:]  # step by step, from the first resumed step on
    cfg = tiny_cfg(tmp_path / "x", *new)
    closed = [lr_at(cfg.sched, t, steps_per_epoch=STEPS_PER_EPOCH, epochs=cfg.train.epochs, base_lr=cfg.optim.lr)
              for t in range(stop, stop + 5)]
    assert resumed.lrs[:5] == pytest.approx(closed, rel=1e-12)
    # the change mattered: the old settings' LR at the resumed step is another one
    old_cfg = tiny_cfg(tmp_path / "y", *old)
    assert lr_at(old_cfg.sched, stop, steps_per_epoch=STEPS_PER_EPOCH, epochs=old_cfg.train.epochs,
                 base_lr=old_cfg.optim.lr) != pytest.approx(resumed.lrs[0], rel=1e-6)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("refused")
    return train(tiny_cfg(out, "train.epochs=2", "train.checkpoint_every=7")).run_dir


def _hashes(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


REFUSED = {
    "optim.name": ["--set", "optim.name=sgd"],  # crashed mid-step with KeyError: 'momentum'
    "optim.impl": ["--set", "optim.impl=scratch"],
    "optim.betas": ["--set", "optim.betas=[0.5,0.9]"],
    "optim.weight_decay": ["--set", "optim.weight_decay=0.1"],
    "model.widths": ["--set", "model.widths=[64]"],
    "model.dropout": ["--set", "model.dropout=0.5"],
    "method.label_smoothing": ["--set", "method.label_smoothing=0.1"],
    "data.batch_size": ["--batch-size", "32"],
    "data.name": ["--dataset", "synthetic"],
    "data.val_size": ["--set", "data.val_size=100"],
    "data.augment": ["--set", "data.augment=[flip]"],
    "train.seed": ["--seed", "3"],
    "train.ema_decay": ["--set", "train.ema_decay=0.9"],
    "train.early_stop.monitor": ["--set", "train.early_stop.monitor=val_accuracy"],
    "train.epochs=1": ["--epochs", "1"],  # the run already trained 2 epochs: a resume cannot go back
    "train.max_steps=30": ["--set", "train.max_steps=30"],  # the checkpoint is at step 40
}


@pytest.mark.parametrize("key", list(REFUSED))
def test_a_refused_change_exits_2_before_anything_is_written(finished_run, key):
    before = _hashes(finished_run)
    r = invoke("train", "--resume", str(finished_run), *REFUSED[key], "-q")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    assert key in lines[0] or key.split("=")[0] in lines[0], lines[0]
    if "=" not in key:
        assert "new run" in lines[0] and "model.init_from=" in lines[0]
    assert _hashes(finished_run) == before


def test_the_loop_refuses_the_same_changes_when_called_directly(finished_run):
    """`train(cfg, resume=True)` goes through the same check (no CLI in between)."""
    before = _hashes(finished_run)
    cfg = tiny_cfg(finished_run.parent, "train.epochs=2", "train.checkpoint_every=7", "optim.name=sgd")
    with pytest.raises(ConfigError, match="optim.name.*'adam' -> 'sgd'"):
        train(cfg, run_dir=finished_run, resume=True)
    assert {k: v for k, v in _hashes(finished_run).items() if k != ".lock"} == {
        k: v for k, v in before.items() if k != ".lock"}
