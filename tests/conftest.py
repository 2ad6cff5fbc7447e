"""Shared test fixtures. Tests run on CPU (2 threads, or 1 per pytest-xdist worker); runs go to tmp folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from profond.contract import Callback

# two intra-op threads on the 2-core CI machine; one per process under pytest-xdist (-n 2), so
# that two test processes do not oversubscribe the cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
# precision: auto resolves to fp32 in the tests on every machine (subprocesses inherit it), so
# that their numbers do not depend on whether the CPU has AMX-BF16; test_precision.py fakes both
os.environ["PROFOND_NATIVE_BF16"] = "0"
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fmnist = pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the user's cache; keep runs inside tmp."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.delenv("PROFOND_DATA", raising=False)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny float64 problems: one intra-op thread avoids thread hand-off overhead (10x here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cfg(tmp_path: Path, *overrides: str):
    """A seconds-long classifier run on real small data (sklearn digits, 8x8)."""
    from profond.config import resolve

    return resolve(overrides=[
        "model.name=mlp", "model.widths=[32]", "data.name=digits", "data.val_size=200",
        "data.batch_size=64", "train.epochs=2", "train.quiet=true", f"out={tmp_path}", "name=run",
        "train.device=cpu", *overrides,
    ])


def digits_cfg(out: Path, *overrides: str):
    """A seconds-long run of any family on sklearn digits (8x8); name the model in overrides."""
    from profond.config import resolve

    return resolve(overrides=[
        "data.name=digits", "data.val_size=200", "train.epochs=5", "train.quiet=true",
        f"out={out}", "name=run", "train.device=cpu", *overrides,
    ])


def run_quick_experiment(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``profond experiment NAME --quick`` once for a module-scoped fixture."""
    from profond.experiments import run_experiment

    out = tmp_path_factory.mktemp(name)
    with pytest.MonkeyPatch.context() as mp:  # module scope: isolate the cache like _isolated_home
        mp.setenv("XDG_CACHE_HOME", str(out / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        run_experiment(name, quick=True, out=out)
    return out


class StopAt(Callback):
    """A loop callback that interrupts (as Ctrl-C does: checkpoint at this exact step) after
    step ``at``, for resume-equals-uninterrupted tests."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, loop, step, metrics):
        if step == self.at:
            loop._interrupt = True
