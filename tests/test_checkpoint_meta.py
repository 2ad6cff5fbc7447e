"""A checkpoint's meta.json that is valid JSON with bad values (issue 13, item 7): checked
against a schema when it is read, reported as a one-line error naming the file and the field
(exit 2), never a traceback, and never after metrics.csv was touched."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from profond.base.checkpoint import CheckpointManager, load_checkpoint, save_checkpoint
from profond.cli import app
from profond.config import OptimConfig, SchedConfig
from profond.errors import CheckpointError
from profond.train import train
from profond.train.optim import build_optimizer
from profond.train.schedules import build_scheduler
from tests.conftest import StopAt, tiny_cfg

DELETE = object()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    """Two epochs of 20 steps, checkpoints every 7 steps, interrupted at step 27 (epoch 2,
    batch 7); the last checkpoint only is kept."""
    out = tmp_path_factory.mktemp("meta")
    res = train(tiny_cfg(out, "train.epochs=2", "train.checkpoint_every=7", "train.keep_last=1"),
                callbacks=[StopAt(27)])
    assert res.summary["status"] == "interrupted"
    return res.run_dir


def _copy(base_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())["path"]
    return run, run / "checkpoints" / latest / "meta.json"


def _mutate(meta_path: Path, path: tuple, value) -> None:
    doc = json.loads(meta_path.read_text())
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    (meta_path.parent / "meta.json").unlink()  # best/ holds hard links: mutate this checkpoint only
    meta_path.write_text(json.dumps(doc))


def _error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    return lines[0]


# (path in meta.json, new value, the field the message must name, does `profond eval` refuse it too)
MUTATIONS = {
    "missing rng": (("meta", "loop", "rng"), DELETE, "meta.loop.rng", True),
    "string epoch": (("meta", "loop", "epoch"), "1", "meta.loop.epoch", True),
    "list for a mapping": (("meta", "loop", "acc_ns"), [], "meta.loop.acc_ns", True),
    "optimizers a list": (("optimizers",), [], "optimizers", True),
    "scheduler state garbage": (("schedulers", "model"), "garbage", "schedulers.model", True),
    "negative step": (("meta", "loop", "step"), -5, "meta.loop.step", True),
    "huge float step": (("meta", "loop", "step"), 1e30, "meta.loop.step", True),
    "negative top-level step": (("step",), -5, "'step'", True),
    "batch beyond the epoch": (("meta", "loop", "batch"), 21, "meta.loop.batch", False),  # 20 per epoch
    "batch beyond the step": (("meta", "loop", "batch"), 28, "meta.loop.batch", False),
    "missing loop": (("meta", "loop"), DELETE, "meta.loop", True),
    "acc_sums a list": (("meta", "loop", "acc_sums"), [1.0], "meta.loop.acc_sums", True),
    "elapsed a string": (("meta", "loop", "elapsed"), "3.2s", "meta.loop.elapsed", True),
    "optimizer without param_groups": (("optimizers", "model", "param_groups"), DELETE,
                                       "optimizers.model.param_groups", True),
    "optimizer without state": (("optimizers", "model", "state"), DELETE, "optimizers.model.state", True),
    "param group without lr": (("optimizers", "model", "param_groups", 0, "lr"), DELETE,
                               "optimizers.model.param_groups.0", False),
    "betas a string": (("optimizers", "model", "param_groups", 0, "betas"), "x",
                       "optimizers.model.param_groups.0.betas", False),
    "scheduler behind the loop": (("schedulers", "model", "last_epoch"), 3, "schedulers.model.last_epoch", False),
    "scheduler without base_lrs": (("schedulers", "model", "base_lrs"), [], "schedulers.model.base_lrs", False),
    "loop step not the folder's": (("meta", "loop", "step"), 30, "meta.loop.step", False),
    "numpy rng of 2 keys": (("meta", "loop", "rng", "numpy", "keys"), [1, 2], "meta.loop.rng", False),
    "method_state a list": (("meta", "loop", "method_state"), [], "meta.loop.method_state", True),
    "early_stop a string": (("meta", "loop", "early_stop"), "x", "meta.loop.early_stop", True),
    "file size a string": (("files", "model.safetensors", "bytes"), "10", "files.model.safetensors.bytes", True),
    "nets a mapping": (("nets",), {"model": 1}, "nets", True),
    "config a list": (("meta", "config"), [], "meta.config", True),
    "resumed a string": (("meta", "resumed"), "x", "meta.resumed", True),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_bad_values_in_meta_json_exit_2_naming_the_file_and_the_field(base_run, tmp_path, case):
    path, value, field, eval_refuses = MUTATIONS[case]
    run, meta_path = _copy(base_run, tmp_path)
    _mutate(meta_path, path, value)
    metrics = (run / "metrics.csv").read_bytes()
    for argv in (["train", "--resume", str(run), "-q"], ["eval", str(run), "--json"]):
        r = CliRunner().invoke(app, argv)
        if argv[0] == "eval" and not eval_refuses:  # evaluation reads only the weights
            assert r.exit_code == 0, r.output
            continue
        assert r.exit_code == 2, (argv, r.output, repr(r.exception))
        assert "Traceback" not in r.output and isinstance(r.exception, SystemExit), repr(r.exception)
        line = _error_line(r.output)
        assert "meta.json" in line and field in line, line
        assert (run / "metrics.csv").read_bytes() == metrics


def test_a_corrupt_meta_json_in_the_only_checkpoint_is_named(base_run, tmp_path):
    """Was reported as "no last checkpoint ...; did the run save one?"."""
    run, meta_path = _copy(base_run, tmp_path)
    meta_path.unlink()
    meta_path.write_text('{"format": 1, "step": ')
    for argv in (["train", "--resume", str(run), "-q"], ["eval", str(run)]):
        r = CliRunner().invoke(app, argv)
        assert r.exit_code == 2, r.output
        line = _error_line(r.output)
        assert str(meta_path) in line and "corrupt" in line and "did the run save" not in line, line


def test_a_damaged_best_checkpoint_is_named(base_run, tmp_path):
    run, _ = _copy(base_run, tmp_path)
    best = run / "checkpoints" / "best" / "meta.json"
    best.unlink()
    best.write_text("[]")
    r = CliRunner().invoke(app, ["eval", str(run), "--checkpoint", "best"])
    assert r.exit_code == 2 and str(best) in _error_line(r.output), r.output


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _save_step(mgr: CheckpointManager, step: int, net: nn.Module) -> Path:
    opt = build_optimizer(OptimConfig(name="adam"), net.parameters())
    sched = build_scheduler(SchedConfig(), opt, steps_per_epoch=4, epochs=2)
    return mgr.save(step, nets={"model": net}, optimizers={"model": opt}, schedulers={"model": sched},
                    extra_state=None, meta={})


def test_latest_reports_a_damaged_checkpoint_instead_of_skipping_it(tmp_path):
    net = _net()
    mgr = CheckpointManager(tmp_path, keep_last=3)
    _save_step(mgr, 1, net)
    newest = _save_step(mgr, 2, net)
    ck = tmp_path / "checkpoints"
    (newest / "meta.json").write_text(json.dumps({**json.loads((newest / "meta.json").read_text()), "nets": "model"}))
    with pytest.raises(CheckpointError, match=r"step_00000002/meta.json.*field 'nets' must be a list"):
        mgr.latest()  # latest.json names it: damaged, not incomplete
    (ck / "latest.json").unlink()  # no pointer: the newest readable folder...
    assert mgr.latest() == ck / "step_00000001"
    (ck / "step_00000001" / "meta.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="step_00000002/meta.json"):  # ...and none readable: say why
        mgr.latest()
    (ck / "latest.json").write_text(json.dumps({"path": "../../elsewhere/step_00000001"}))
    with pytest.raises(CheckpointError, match="step_00000002/meta.json"):  # a pointer out of checkpoints/ is ignored
        mgr.latest()


def test_adam_state_into_sgd_is_refused_at_load(tmp_path):
    """The checkpoint layer's own guard (below the resume rules): SGD needs 'momentum', which
    Adam's saved parameter groups do not have; it crashed at the first step."""
    net = _net()
    adam = build_optimizer(OptimConfig(name="adam"), net.parameters())
    path = save_checkpoint(tmp_path / "ck", nets={}, optimizers={"model": adam}, schedulers={},
                           extra_state=None, meta={})
    sgd = build_optimizer(OptimConfig(name="sgd"), net.parameters())
    with pytest.raises(CheckpointError, match=r"meta.json.*param_groups.0.*'momentum'.*SGD"):
        load_checkpoint(path, nets={}, optimizers={"model": sgd}, schedulers={})


def test_saved_lr_values_do_not_steer_a_resume(base_run, tmp_path):
    """The LR after a resume is the config's schedule at the checkpoint's step: a damaged (but
    well-typed) saved LR is recomputed, not trained with."""
    run, meta_path = _copy(base_run, tmp_path)
    _mutate(meta_path, ("optimizers", "model", "param_groups", 0, "lr"), 5.0)
    _mutate(meta_path, ("schedulers", "model", "base_lrs"), [5.0])
    r = CliRunner().invoke(app, ["train", "--resume", str(run), "-q"])
    assert r.exit_code == 0, r.output
    rows = (run / "metrics.csv").read_text().splitlines()
    lr_col = rows[0].split(",").index("lr")
    assert [float(row.split(",")[lr_col]) for row in rows[1:]] == [0.001, 0.001]
