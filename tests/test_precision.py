"""``train.precision: auto``: bf16 autocast where the device computes bf16 natively, fp32
elsewhere; the choice is printed at start and recorded in summary.json."""

from __future__ import annotations

import json

import pytest
import torch

from profond.base import device as D
from profond.train import train
from tests.conftest import tiny_cfg


@pytest.mark.parametrize("flags, native", [("fpu sse avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True),
                                           ("fpu sse avx2 avx512f", False), (None, False)])
def test_cpu_probe_reads_the_flags(monkeypatch, tmp_path, flags, native):
    monkeypatch.delenv("PROFOND_NATIVE_BF16")
    info = tmp_path / "cpuinfo"
    if flags is not None:
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real = D.Path

    def fake(p):  # only /proc/cpuinfo is redirected
        return real(info) if str(p) == "/proc/cpuinfo" else real(p)

    monkeypatch.setattr(D, "Path", fake)
    assert D.cpu_has_native_bf16() is native
    assert D.resolve_precision("auto", torch.device("cpu"))[0] == ("bf16" if native else "fp32")


@pytest.mark.parametrize("forced, expected", [("1", "bf16"), ("0", "fp32")])
def test_auto_follows_the_probe_and_explicit_values_are_kept(monkeypatch, forced, expected):
    monkeypatch.setenv("PROFOND_NATIVE_BF16", forced)
    value, why = D.resolve_precision("auto", torch.device("cpu"))
    assert value == expected and why.startswith("auto")
    for p in ("fp32", "bf16", "fp16"):
        assert D.resolve_precision(p, torch.device("cpu")) == (p, "asked for")


def test_auto_on_cuda_uses_bf16_where_the_gpu_has_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert D.resolve_precision("auto", torch.device("cuda", 0))[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert D.resolve_precision("auto", torch.device("cuda", 0))[0] == "fp32"


@pytest.mark.parametrize("forced, expected", [("1", "bf16"), ("0", "fp32")])
def test_a_run_records_and_uses_the_chosen_precision(monkeypatch, tmp_path, forced, expected, capsys):
    monkeypatch.setenv("PROFOND_NATIVE_BF16", forced)
    seen = []
    from profond.methods.classification import Classifier

    real_step = Classifier.train_step

    def spy(self, batch, ctx):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real_step(self, batch, ctx)

    monkeypatch.setattr(Classifier, "train_step", spy)
    res = train(tiny_cfg(tmp_path, "train.epochs=3", "optim.lr=0.01", "train.quiet=false"))
    summary = json.loads((res.run_dir / "summary.json").read_text())
    assert summary["precision"] == expected and summary["precision_requested"] == "auto"
    assert summary["precision_reason"].startswith("auto")
    assert set(seen) == {torch.bfloat16 if expected == "bf16" else torch.float32}
    assert f"precision={expected} (auto" in capsys.readouterr().err
    assert res.summary["final"]["test_accuracy"] > 0.8  # digits learns in either precision
