"""benchmarks/diffusion.py: its quick mode times every sampler with the right NFE, trains, and
judges the quality targets only when they were measured."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture()
def diffbench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("diffusion", None)
    import diffusion

    threads = torch.get_num_threads()
    yield diffusion
    torch.set_num_threads(threads)  # main() sets the benchmark's threads


def test_quick_mode_rows(diffbench, tmp_path):
    data = diffbench.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "diffusion.json").read_text()) == data
    rows = {(r["recipe"], r["sampler"]): r for r in data["sampling"]["rows"]}
    T = 1000  # both recipes
    want = {"DDPM S=T": T, "DDIM S=50": 50, "DDIM S=20": 20, "Euler 20": 20, "Heun 20": 39}
    assert set(rows) == {(rec, s) for rec in ("fmnist-ddpm", "fmnist-ddpm-cfg") for s in want}
    for (recipe, sampler), r in rows.items():
        guided = recipe == "fmnist-ddpm-cfg"
        assert r["guidance"] == (1.0 if guided else None)
        assert r["nfe_per_image"] == want[sampler] * (2 if guided else 1)  # guidance: two passes per call
        assert r["net_batch_per_call"] == data["sampling"]["batch"] * (2 if guided else 1)
        assert r["timed_calls"] == (3 if sampler.startswith("Heun") else 2)  # 2 steps; Heun: 2S - 1
        assert r["ms_per_call"] > 0 and r["images_per_s"] > 0
        calls = r["nfe_per_image"] // (2 if guided else 1)
        assert r["images_per_s"] == pytest.approx(data["sampling"]["batch"] / (r["ms_per_call"] / 1e3 * calls),
                                                  rel=0.02)
    # the cost is the calls: DDIM-50 is about T/50 times faster than DDPM on the same net
    for recipe in ("fmnist-ddpm", "fmnist-ddpm-cfg"):
        assert 5 < rows[(recipe, "DDIM S=50")]["speedup_vs_ddpm"] < 80
    train = data["train"]["rows"]
    assert train[0]["precision"] == "fp32" and train[0]["batch"] == 16
    for r in train:
        assert r["step_ms"] > 0 and r["images_per_s"] > 0 and r["gflop_per_step"] > 0 and 0 < r["mfu"] < 1
    assert data["quality"]["measured"] is False
    assert data["targets"] == {"ddim50_fid_within_1.1x_ddpm": None, "best_diffusion_fid_le_best_gan_fid": None}
    md = (tmp_path / "diffusion.md").read_text()
    assert "| fmnist-ddpm | Heun 20 | - | 39 |" in md and "Not measured" in md
    assert data["sampling"]["machine"]["cpu"] and "load average" in data["sampling"]["load"]


def test_quality_targets(diffbench, tmp_path):
    gan = diffbench.gan_reference(tmp_path)  # no gan.json there: the constants, said so
    assert gan["fid"] == {"cgan": 12.83, "dcgan": 16.7} and "missing" in gan["source"]
    (tmp_path / "gan.json").write_text(json.dumps({"gans": {"cgan": {"fid": 11.0}, "dcgan": {"fid": 15.0}}}))
    assert diffbench.gan_reference(tmp_path)["fid"] == {"cgan": 11.0, "dcgan": 15.0}

    def quality(ddpm: float, ddim: float) -> dict:
        return {"quality": {"measured": True, "gan": gan, "rows": [
            {"run": "r", "sampler": "DDPM-1000", "fid": ddpm}, {"run": "r", "sampler": "DDIM-50", "fid": ddim}]}}

    t = diffbench.targets(quality(10.0, 10.9))
    assert t["ddim50_fid_within_1.1x_ddpm"] == {"r": True}
    assert t["best_diffusion_fid_le_best_gan_fid"] is True and t["best_diffusion_fid"] == 10.0
    t = diffbench.targets(quality(14.0, 15.5))  # 15.5 > 1.1 x 14; best 14 > cGAN's 12.83
    assert t["ddim50_fid_within_1.1x_ddpm"] == {"r": False}
    assert t["best_diffusion_fid_le_best_gan_fid"] is False


def test_fid_needs_run_folders(diffbench, tmp_path):
    with pytest.raises(SystemExit):
        diffbench.main(["--only", "quality", "--fid", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert not (tmp_path / "diffusion.json").exists()
