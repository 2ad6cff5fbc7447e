"""The one training loop: learning, exact resume after SIGKILL, Ctrl-C, DDP, NaN guard,
early stopping, EMA, bf16, schedules and the run folder's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from profond.errors import TrainingDiverged
from profond.train import train
from tests.conftest import tiny_cfg

PY = sys.executable


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"]
    return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))


def test_run_folder_and_learning(tmp_path):
    res = train(tiny_cfg(tmp_path, "train.epochs=3"))
    d = res.run_dir
    for f in ("config.yaml", "metrics.csv", "summary.json", "curves.png"):
        assert (d / f).is_file(), f
    assert any((d / "tensorboard").glob("events.out.tfevents.*"))
    s = json.loads((d / "summary.json").read_text())
    assert s["status"] == "completed" and s["epochs_completed"] == 3
    assert s["parameters"]["model"]["total"] == (64 * 32 + 32) + (32 * 10 + 10)
    assert s["final"]["test_accuracy"] > 0.8  # chance is 0.1
    assert s["versions"]["torch"] == torch.__version__
    lines = (d / "metrics.csv").read_text().splitlines()
    assert len(lines) == 4 and "val_accuracy" in lines[0]


def test_same_config_same_weights(tmp_path):
    a = train(tiny_cfg(tmp_path / "a", "model.dropout=0.2", "data.augment=[flip]"))
    b = train(tiny_cfg(tmp_path / "b", "model.dropout=0.2", "data.augment=[flip]"))
    wa, wb = final_weights(a.run_dir), final_weights(b.run_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


RESUME_ARGS = ["model.widths=[64]", "model.dropout=0.1", "data.augment=[flip]", "train.epochs=4",
               "train.checkpoint_every=7", "train.threads=2", "train.keep_last=2", "sched.name=cosine",
               "train.ema_decay=0.9"]


def _cli(args: list[str], fault: str):
    """Run `profond ARGS` in a real process that signals itself at an exact step."""
    return subprocess.run([PY, "-m", "profond", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PROFOND_FAULT": fault})


def _train_args(out: Path, extra: list[str]) -> list[str]:
    args = ["train", "mlp", "--dataset", "digits", "--out", str(out), "--name", "run", "--device", "cpu",
            "-q", "--set", "data.val_size=200", "--set", "data.batch_size=64"]
    for o in extra:
        args += ["--set", o]
    return args


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    ref = train(tiny_cfg(tmp_path / "ref", *RESUME_ARGS))
    total = ref.summary["steps"]  # 4 epochs x 20 steps
    proc = _cli(_train_args(tmp_path / "killed", RESUME_ARGS), fault="SIGKILL@38")
    assert proc.returncode == -signal.SIGKILL
    run = tmp_path / "killed" / "run"
    # mid-epoch 2: the last checkpoint is step 35 (checkpoint_every=7), not an epoch boundary
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 35
    assert not (run / "summary.json").exists()
    res = subprocess.run([PY, "-m", "profond", "train", "--resume", str(run), "-q"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    wa, wb = final_weights(ref.run_dir), final_weights(run)
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed run differs from the uninterrupted one"
    s = json.loads((run / "summary.json").read_text())
    assert s["steps"] == total and s["status"] == "completed"
    assert len((run / "metrics.csv").read_text().splitlines()) == 5  # header + one row per epoch


def test_ctrl_c_saves_checkpoint_and_exits(tmp_path):
    proc = _cli(_train_args(tmp_path, RESUME_ARGS), fault="SIGINT@10")
    assert proc.returncode == 130, proc.stderr
    run = tmp_path / "run"
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["steps"] == 10
    assert f"profond train --resume {run}" in proc.stderr.replace("\n", "")
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 10  # the checkpoint holds the very step it stopped at
    res = subprocess.run([PY, "-m", "profond", "train", "--resume", str(run), "-q"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == 4 * 20  # 1238 training digits / 64

def test_nan_loss_stops_with_message_and_keeps_last_good(tmp_path):
    cfg = tiny_cfg(tmp_path, "optim.name=sgd", "optim.lr=1e12", "train.checkpoint_every=1", "train.epochs=1")
    with pytest.raises(TrainingDiverged, match="loss became"):
        train(cfg)
    w = final_weights(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in w.values())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "diverged"


def test_early_stopping(tmp_path):
    res = train(tiny_cfg(tmp_path, "train.epochs=10", "train.early_stop.patience=1",
                         "train.early_stop.min_delta=100"))
    s = res.summary
    assert s["status"] == "early_stopped" and s["epochs_completed"] == 2


def test_bf16_and_schedules_learn(tmp_path):
    res = train(tiny_cfg(tmp_path, "train.precision=bf16", "sched.name=warmup-cosine", "sched.warmup_epochs=0.5",
                         "train.epochs=6", "optim.lr=0.005",
                         "optim.name=adamw", "optim.weight_decay=0.01", "optim.decay_norm_and_bias=false"))
    assert res.summary["final"]["test_accuracy"] > 0.8
    assert res.history[-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine reached its floor


def test_max_steps(tmp_path):
    res = train(tiny_cfg(tmp_path, "train.max_steps=5"))
    assert res.summary["steps"] == 5


def test_existing_run_folder_is_not_overwritten(tmp_path):
    train(tiny_cfg(tmp_path, "train.epochs=1"))
    from profond.errors import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        train(tiny_cfg(tmp_path, "train.epochs=1"))


def test_ddp_two_processes_equal_single_process(tmp_path):
    args = ["model.widths=[64]", "train.epochs=2", "train.threads=1", "data.batch_size=60", "data.subset=1200",
            "data.augment=[flip]"]
    single = train(tiny_cfg(tmp_path / "single", *args))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(PY).with_name("torchrun")), "--standalone", "--nproc_per_node", "2", "-m", "profond",
           *_train_args(tmp_path / "ddp", args)]  # later --set data.batch_size=60 wins
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    s = json.loads((tmp_path / "ddp" / "run" / "summary.json").read_text())
    assert s["world_size"] == 2
    wa, wb = final_weights(single.run_dir), final_weights(tmp_path / "ddp" / "run")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-5, rtol=1e-4)
