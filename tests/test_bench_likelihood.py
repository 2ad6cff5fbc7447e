"""benchmarks/likelihood.py: its quick mode times every family's sampler with the right number of
passes, trains each family in a budget with a bits/dim curve against training seconds, writes the
figure, and does not judge the MNIST targets on another dataset."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
FAMILIES = {"realnvp", "glow", "pixelcnn"}


@pytest.fixture()
def likebench(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("likelihood", None)
    import likelihood

    threads = torch.get_num_threads()
    yield likelihood
    torch.set_num_threads(threads)  # main() sets the benchmark's threads


def test_quick_mode(likebench, tmp_path):
    data = likebench.main(["--quick", "--out", str(tmp_path)])
    assert json.loads((tmp_path / "likelihood.json").read_text()) == data

    s = data["sampling"]
    rows = {r["family"]: r for r in s["rows"]}
    assert set(rows) == FAMILIES and s["image_shape"] == [1, 8, 8] and s["threads"] == 1
    assert rows["pixelcnn"]["passes_per_image"] == 8 * 8  # H·W sequential passes
    assert rows["realnvp"]["passes_per_image"] == rows["glow"]["passes_per_image"] == 1
    for r in rows.values():
        assert r["params"] > 0 and r["s_per_image"] > 0
        assert r["s_per_image"] == pytest.approx(r["s_per_batch"] / s["batch"], rel=0.02)
    for flow in ("realnvp", "glow"):
        ratio = s["ratio_s_per_image"][f"pixelcnn/{flow}"]
        assert ratio == pytest.approx(rows["pixelcnn"]["s_per_image"] / rows[flow]["s_per_image"], rel=0.05)

    c = data["curve"]
    assert c["dataset"] == "digits" and c["mnist"] is False and set(c["families"]) == FAMILIES
    for f, r in c["families"].items():
        assert 16 <= r["steps"] <= 24 and r["budget_s"] == 1.0
        assert r["epochs_fraction"] == pytest.approx(r["steps"] * r["batch"] / 1438, abs=1e-3)
        pts = r["curve"]
        assert len(pts) >= 2 and pts[0]["step"] == 0 and pts[-1]["step"] == r["steps"]
        steps, secs = [p["step"] for p in pts], [p["train_s"] for p in pts]
        assert steps == sorted(set(steps)) and all(b > a for a, b in zip(secs[:-1], secs[1:], strict=True))
        assert secs[-1] == pytest.approx(r["train_s"], abs=0.06)
        for bpd in [p["bpd"] for p in pts] + [r["final_test_bpd"]]:
            assert math.isfinite(bpd) and 0 < bpd < 12, (f, bpd)  # 8 bits/dim = uniform noise
        assert pts[-1]["bpd"] < pts[0]["bpd"], f  # training lowered the bound
        assert r["test_examples"] == 359  # the full digits test set
        assert r["target"] == (0.80 if f == "pixelcnn" else 1.20)
    assert (tmp_path / "likelihood_curve.png").stat().st_size > 1000
    t = data["targets"]
    assert all("not judged" in t[f"{f}_test_bpd_le_{v:.2f}"] for f, v in likebench.TARGETS.items())

    md = (tmp_path / "likelihood.md").read_text()
    assert "dataset digits" in md and "| pixelcnn | fmnist-pixelcnn | gated-pixelcnn |" in md
    assert data["curve"]["machine"]["cpu"] in md and "load average" in data["curve"]["load"]


def test_targets_judged_on_mnist_only(likebench):
    def curve(mnist: bool, bpd: dict[str, float]) -> dict:
        return {"curve": {"mnist": mnist, "dataset": "mnist" if mnist else "fashion-mnist",
                          "families": {f: {"final_test_bpd": v} for f, v in bpd.items()}}}

    t = likebench.targets(curve(True, {"realnvp": 1.15, "glow": 1.3, "pixelcnn": 0.79}))
    assert t["realnvp_test_bpd_le_1.20"] is True and t["glow_test_bpd_le_1.20"] is False
    assert t["pixelcnn_test_bpd_le_0.80"] is True and t["sampling_pixelcnn_over_flow"] is None
    t = likebench.targets(curve(False, {"realnvp": 3.0}))
    assert "not judged" in t["realnvp_test_bpd_le_1.20"] and t["glow_test_bpd_le_1.20"] is None


def test_unknown_part(likebench, tmp_path):
    with pytest.raises(SystemExit):
        likebench.main(["--only", "speed", "--out", str(tmp_path)])
    assert not (tmp_path / "likelihood.json").exists()
