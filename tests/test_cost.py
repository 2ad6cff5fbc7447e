"""What a run costs (course §12.8): FLOPs against the analytic count of an MLP, SAM's two passes,
resume, the RAPL reader on a fake powercap tree (wrap-around), the power model and CO₂."""

from __future__ import annotations

import pytest
import torch

from profond.train import train
from profond.train.cost import CPU_WATTS_PER_THREAD, CostMeter, _Rapl, human

from .conftest import StopAt, tiny_cfg


def analytic_flops_per_example(net: torch.nn.Module) -> int:
    """Forward 2·in·out per Linear, backward 2·in·out for the weight gradient and, except for
    the first layer (its input needs no gradient), 2·in·out for the input gradient."""
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    per = [2 * m.in_features * m.out_features for m in linears]
    return 2 * sum(per) + sum(per[1:])


def test_training_flops_equal_the_analytic_count(tmp_path):
    res = train(tiny_cfg(tmp_path, "train.epochs=1", "train.threads=1"))
    from profond.train import load_run

    method, _ = load_run(res.run_dir, device="cpu")
    fpe = analytic_flops_per_example(method.nets["model"])
    cost = res.summary["cost"]
    assert cost["flops_per_example"] == fpe
    n = res.summary["samples_per_s"] * res.summary["train_time_s"]  # examples seen, to rounding
    assert cost["train_flops"] == pytest.approx(fpe * n, rel=1e-2)
    assert cost["train_flops"] % fpe == 0  # a whole number of examples


def test_sam_counts_two_passes(tmp_path):
    plain = train(tiny_cfg(tmp_path / "a", "train.max_steps=2", "optim.name=sgd", "train.threads=1"))
    sam = train(tiny_cfg(tmp_path / "b", "train.max_steps=2", "optim.name=sgd", "optim.sam_rho=0.05",
                         "train.threads=1"))
    assert sam.summary["cost"]["flops_per_example"] == 2 * plain.summary["cost"]["flops_per_example"]


def test_resume_continues_the_counts_and_the_co2_follows_the_grid(tmp_path):
    args = ("train.epochs=2", "train.threads=1", "train.grid_gco2_per_kwh=50")
    ref = train(tiny_cfg(tmp_path / "ref", *args)).summary["cost"]
    train(tiny_cfg(tmp_path / "res", *args), callbacks=[StopAt(5)])
    res = train(tiny_cfg(tmp_path / "res", *args), run_dir=tmp_path / "res" / "run", resume=True).summary["cost"]
    assert res["train_flops"] == ref["train_flops"] > 0
    for c in (ref, res):
        assert c["co2_g"] == pytest.approx(c["energy_kwh"] * 50)
        assert c["energy_kwh"] == pytest.approx(c["energy_j"] / 3.6e6, rel=1e-3)
        assert c["energy_j"] > 0 and c["grid_gco2_per_kwh"] == 50


def test_power_model_is_watts_times_seconds():
    meter = CostMeter(torch.device("cpu"), 475.0)
    meter._counter = None  # no RAPL here, whatever the machine has
    joules, method = meter.energy(seconds=12.0, threads=2)
    assert method == "power-model" and joules == pytest.approx(12.0 * 2 * CPU_WATTS_PER_THREAD)
    meter.load_state_dict({"flops": 5.0, "energy_j": 100.0, "energy_method": "rapl"})
    joules, method = meter.energy(seconds=1.0, threads=1)
    assert joules == pytest.approx(100.0 + CPU_WATTS_PER_THREAD) and method == "rapl+power-model"


def test_rapl_reader_sums_packages_and_handles_wrap_around(tmp_path):
    for zone, start, rng in (("intel-rapl:0", 990, 1000), ("intel-rapl:1", 5_000_000, 2**40)):
        d = tmp_path / zone
        d.mkdir()
        (d / "energy_uj").write_text(f"{start}\n")
        (d / "max_energy_range_uj").write_text(f"{rng}\n")
    sub = tmp_path / "intel-rapl:0:0"  # a sub-zone (core), inside package 0: not counted twice
    sub.mkdir()
    (sub / "energy_uj").write_text("0\n")
    rapl = _Rapl(str(tmp_path))
    assert [z.name for z in rapl.zones] == ["intel-rapl:0", "intel-rapl:1"]
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("10\n")  # wrapped: +20 µJ
    (tmp_path / "intel-rapl:1" / "energy_uj").write_text("7000000\n")  # +2,000,000 µJ
    assert rapl.joules() == pytest.approx(2.00002)
    assert _Rapl(str(tmp_path / "missing")).start is None  # no powercap: the power model


def test_human_units():
    assert human(1.397e9, "FLOP") == "1.4 GFLOP"
    assert human(0.00436, "Wh") == "0.00436 Wh"
    assert human(None, "g") == "? g"
