"""The run folder (issue 13, items 1, 2, 5, 6 and 9's umask): nothing written outside
``--out``, one process per run folder (an OS lock that a SIGKILL releases), user text
printed as it is (never parsed as console markup), filesystem errors as one line and exit 2
(mid-run: the last checkpoint intact and the way to resume), files made with the umask."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import profond.base.io as pio
from profond.base.lock import LOCK_FILE, RunFolderLocked, RunLock, lock_run_folder
from profond.cli import app
from profond.config import RUN_NAME_MAX, RunConfig, check_run_name, resolve
from profond.errors import ConfigError
from profond.train.loop import Trainer, default_run_dir, train
from tests.conftest import tiny_cfg

PY = sys.executable
runner = CliRunner()
RULE = "A run name is one folder name inside --out"


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def tiny_args(out: Path, name: str = "run", *extra: str, quiet: bool = True) -> list[str]:
    """`profond train` of a seconds-long MLP on digits: 2 epochs of 20 steps."""
    args = ["train", "mlp", "--dataset", "digits", "--out", str(out), "--name", name, "--device", "cpu",
            "--set", "data.val_size=200", "--set", "data.batch_size=64", "--set", "model.widths=[32]",
            "--set", "train.epochs=2"]
    for o in extra:
        args += ["--set", o]
    return args + (["-q"] if quiet else [])


def user_error(r, *expected: str) -> str:
    """Exit 2, no traceback, the error on ONE line holding every ``expected`` text; that line."""
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.output
    for text in expected:
        assert text in lines[0], (text, r.output)
    return lines[0]


def latest_step(run: Path) -> int:
    return json.loads((run / "checkpoints" / "latest.json").read_text())["step"]


def weights(run: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run / "checkpoints" / "latest.json").read_text())["path"]
    return load_file(str(run / "checkpoints" / latest / "model.safetensors"))


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- 1. a run name is one folder inside --out ---------------------------------------------
BAD_NAMES = ["../escaped", "..", ".", "", "/abs/run", "a/b", "a\\b", ".hidden", "x" * 300, "x" * 201,
             "with space", "mlp[/x]", "café", "a\x00b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_names_are_refused_before_anything_is_written(tmp_path, monkeypatch, name):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    if name == "/abs/run":
        name = str(tmp_path / "abs" / "run")
    r = cli(*tiny_args(Path("runs-probe"), name))
    user_error(r, "bad value for 'name'", RULE)
    assert tree(tmp_path) == {"work"}  # no runs-probe, no sibling, nothing at the absolute path


def test_run_name_rule_holds_for_set_and_yaml_and_the_python_api(tmp_path):
    with pytest.raises(ConfigError, match="bad value for 'name'"):
        resolve(overrides=["name=../x"])
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: ../x\n")
    r = cli("train", "mlp", "--config", cfg_file)
    user_error(r, "bad value for 'name'", "'../x'")
    cfg = tiny_cfg(tmp_path)
    cfg.name = "../escaped"  # set after validation: the loop checks it again
    with pytest.raises(ConfigError, match=RULE):
        train(cfg)
    assert tree(tmp_path) == {"c.yaml"}


def test_good_names_pass_and_the_default_name_is_one_folder(tmp_path):
    for ok in ("run", "mlp-lr0.01", "a+b=c_d", "x" * RUN_NAME_MAX, "v1.2", "0"):
        check_run_name(ok)
    cfg = RunConfig()
    cfg.out = str(tmp_path)
    cfg.model.name, cfg.data.name = "../a/b [x]", ".hidden/../ds"  # never validated: a hostile config
    run = default_run_dir(cfg)
    assert run.parent == tmp_path
    check_run_name(run.name)
    cfg.model.name, cfg.data.name = "mlp", "digits"
    assert default_run_dir(cfg).name.startswith("mlp-digits-")


# -- 2. one process per run folder ---------------------------------------------------------
@contextmanager
def lock_held_by_another_process(folder: Path):
    """A real second process that holds ``folder``'s lock until the block ends."""
    code = ("import sys, time; from profond.base.lock import lock_run_folder; "
            "lock = lock_run_folder(sys.argv[1]); print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([PY, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


def test_second_process_is_refused_with_the_holders_pid_before_writing(tmp_path):
    run = tmp_path / "run"
    with lock_held_by_another_process(run) as pid:
        assert (run / LOCK_FILE).read_text().strip() == str(pid)
        r = cli(*tiny_args(tmp_path, "run"))
        user_error(r, "is in use", f"profond process {pid}", f"kill {pid}", "another --name/--out")
        assert tree(run) == {LOCK_FILE}  # refused before config.yaml, metrics.csv, checkpoints/
    assert cli(*tiny_args(tmp_path, "run")).exit_code == 0  # holder gone: the lock went with it
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_resume_of_a_locked_run_is_refused_and_changes_nothing(tmp_path):
    run = tmp_path / "run"
    assert cli(*tiny_args(tmp_path, "run")).exit_code == 0
    before = {f: (run / f).read_bytes() for f in ("config.yaml", "metrics.csv", "summary.json")}
    with lock_held_by_another_process(run) as pid:
        r = cli("train", "--resume", run, "--epochs", "3", "-q")
        user_error(r, f"profond process {pid}")
    assert {f: (run / f).read_bytes() for f in before} == before
    assert cli("train", "--resume", run, "--epochs", "3", "-q").exit_code == 0
    assert json.loads((run / "summary.json").read_text())["epochs_completed"] == 3


def test_lock_is_held_from_init_to_the_end_of_fit(tmp_path):
    cfg = tiny_cfg(tmp_path)
    t = Trainer(cfg)
    with pytest.raises(RunFolderLocked, match=f"profond process {os.getpid()}"):
        Trainer(tiny_cfg(tmp_path))  # a second open file in this very process is refused too
    t.fit()
    with RunLock(t.run_dir):  # released by fit
        pass
    # a refused start (the folder already holds a run) releases the lock it took
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(tiny_cfg(tmp_path))
    lock_run_folder(t.run_dir).release()


def test_sigkilled_run_leaves_no_lock_that_blocks_resume(tmp_path):
    args = tiny_args(tmp_path, "run", "train.checkpoint_every=2")
    proc = subprocess.run([PY, "-m", "profond", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PROFOND_FAULT": "SIGKILL@5"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run = tmp_path / "run"
    assert latest_step(run) == 4 and not (run / "summary.json").exists()
    assert (run / LOCK_FILE).read_text().strip().isdigit()  # the dead holder's PID stays written
    r = cli("train", "--resume", run, "-q")
    assert r.exit_code == 0, r.output
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 40


# -- 5. user text is printed as it is --------------------------------------------------------
def test_user_text_is_never_console_markup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("train", "mlp[/x]")
    user_error(r, "'mlp[/x]'")
    r = cli("train", "--resume", "dir[/foo]")
    user_error(r, "--resume dir[/foo]:")
    r = cli("train", "--resume", "runs/[bold]x")
    user_error(r, "--resume runs/[bold]x:")

    # valid runs in folders whose names look like markup, not quiet: every line shows the path
    for out in ("dir[/foo]", "runs/[bold]x"):
        r = cli(*tiny_args(Path(out), "run", quiet=False))
        assert r.exit_code == 0, r.output
        assert f"profond run {out}/run " in r.output and f"-> {out}/run" in r.output, r.output
        r = cli("train", "--resume", f"{out}/run", "--epochs", "3", "--set", "train.quiet=false")
        assert r.exit_code == 0, r.output
        assert f"resumed from {out}/run/checkpoints/step_" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir[", "runs"]


# -- 6. filesystem errors: one line, exit 2 -----------------------------------------------
def test_out_that_is_a_file_or_too_long(tmp_path):
    f = tmp_path / "a-file"
    f.write_text("not a folder")
    user_error(cli(*tiny_args(f, "run")), f"'{f}/run'", "Not a directory (ENOTDIR)")
    long = tmp_path / ("y" * 300)
    user_error(cli(*tiny_args(long, "run")), "y" * 300, "File name too long (ENAMETOOLONG)")
    user_error(cli(*tiny_args(tmp_path, "z" * 300)), RULE)  # a 300-character --name: item 1's rule
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@contextmanager
def disk_full(monkeypatch, when, code: int = errno.ENOSPC):
    """Make the atomic writes of the paths ``when(path)`` selects fail as a full disk fails:
    inside the real ``atomic_write``, the write itself raising an OSError without a file name."""
    real = pio.atomic_write
    failed: list[Path] = []

    def flaky(path, write):
        if when(Path(path)):
            failed.append(Path(path))

            def write(tmp):
                raise OSError(code, os.strerror(code))
        return real(path, write)

    with monkeypatch.context() as mp:
        mp.setattr(pio, "atomic_write", flaky)
        yield failed


def test_disk_full_mid_run_keeps_the_last_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    extra = ("train.checkpoint_every=7",)  # checkpoints at steps 7, 14, 20 (epoch 1), 21, 28, 35, 40
    ref = tmp_path / "ref" / "run"
    assert cli(*tiny_args(tmp_path / "ref", "run", *extra)).exit_code == 0
    run = tmp_path / "out" / "run"
    with disk_full(monkeypatch, lambda p: ".tmp-step_00000028" in str(p)) as failed:
        r = cli(*tiny_args(tmp_path / "out", "run", *extra))
    assert failed
    line = user_error(r, "No space left on device (ENOSPC)", "model.safetensors",
                      "step_00000021) is intact", f"resume with profond train --resume {run}")
    assert "disk is full" in line
    assert latest_step(run) == 21
    assert not any(p.name.startswith(".tmp") for p in run.rglob("*"))  # nothing half-written left
    assert not (run / "summary.json").exists()
    assert cli("train", "--resume", run, "-q").exit_code == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "completed" and s["steps"] == 40
    wa, wb = weights(ref), weights(run)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    from profond.train.loop import load_run

    method, _ = load_run(run)  # the last checkpoint loads
    assert sum(p.numel() for p in method.raw_nets["model"].parameters()) > 0


def test_read_only_disk_before_the_first_checkpoint(tmp_path, monkeypatch):
    with disk_full(monkeypatch, lambda p: p.name == "config.yaml", code=errno.EROFS):
        r = cli(*tiny_args(tmp_path, "run"))
    user_error(r, "config.yaml", "Read-only file system (EROFS)", "no checkpoint was saved yet")
    assert not (tmp_path / "run" / "config.yaml").exists()
    with RunLock(tmp_path / "run"):  # released on the error
        pass


def test_user_errors_maps_named_filesystem_errors_only():
    import typer

    from profond.cli.common import user_errors

    @user_errors
    def denied():
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/x")

    with pytest.raises(typer.Exit) as e:
        denied()
    assert e.value.exit_code == 2

    @user_errors
    def bug():  # an OSError about no path is a bug: it stays a traceback
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError):
        bug()


# -- 9. files are made with the umask ----------------------------------------------------
@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask,file_mode,dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_run_files_follow_the_umask(tmp_path, mask, file_mode, dir_mode):
    with umask(mask):
        pio.atomic_write_text(tmp_path / "one.txt", "x")
        assert stat.S_IMODE((tmp_path / "one.txt").stat().st_mode) == file_mode
        res = train(tiny_cfg(tmp_path, "train.epochs=1", "train.checkpoint_every=5"))
    paths = [p for p in res.run_dir.rglob("*") if not p.is_symlink()]
    assert any(p.parent.name == "best" for p in paths) and any("step_" in p.name for p in paths)
    modes = {str(p.relative_to(res.run_dir)): stat.S_IMODE(p.stat().st_mode) for p in paths}
    wrong = {p: oct(m) for p, m in modes.items() if m != (dir_mode if (res.run_dir / p).is_dir() else file_mode)}
    assert not wrong, wrong
