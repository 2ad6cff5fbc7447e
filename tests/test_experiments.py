"""`profond experiment NAME --quick` writes its table and figures; the separable-conv
experiment's counting part reproduces eq. 4.10 exactly."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from profond.cli import app
from profond.experiments.separable import counting_table
from tests.conftest import needs_fmnist


def test_counts_match_eq_4_10():
    t = counting_table()
    assert (t["ratio_measured"] - t["ratio_eq_4_10"]).abs().max() < 1e-12
    row = t[(t.C_out == 256) & (t.k == 3)].iloc[0]
    assert 8 <= row.reduction_x <= 9  # the course: "réduction d'un facteur ≈ 8-9x"


@needs_fmnist
def test_separable_conv_quick_writes_table_and_figure(tmp_path):
    r = CliRunner().invoke(app, ["experiment", "separable-conv", "--quick", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "table.csv")
    assert list(table["model"]) == ["fmnist-cnn", "fmnist-cnn separable"]
    assert table["params"].iloc[1] < table["params"].iloc[0]
    assert (table["test_accuracy"] > 0.4).all()  # 3,000 images, one epoch: 4x chance (0.1)
    assert (tmp_path / "separable.png").stat().st_size > 5000
    assert "| model |" in (tmp_path / "table.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["max_abs_ratio_error"] < 1e-12
    assert "fmnist-cnn separable" in r.output


def test_every_registered_experiment_has_help():
    from profond.registry import EXPERIMENTS

    assert "separable-conv" in EXPERIMENTS.names()
    for e in EXPERIMENTS.entries():
        assert e.help, e.name


@pytest.mark.slow
def test_separable_conv_full(tmp_path):
    r = CliRunner().invoke(app, ["experiment", "separable-conv", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output


@pytest.mark.slow  # three quick experiment runs, minutes of CI time; run with -m slow
def test_experiment_reruns_into_its_own_folder_but_never_clears_foreign_runs(tmp_path):
    """A second `profond experiment X --out D` replaces the first one's training runs; a
    `runs/` folder the experiment did not make is left alone (exit 2, names the fix)."""
    out = tmp_path / "sep"
    for _ in range(2):
        r = CliRunner().invoke(app, ["experiment", "separable-conv", "--quick", "--out", str(out)])
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["separable", "standard"]

    project = tmp_path / "project"
    (project / "runs" / "my-run").mkdir(parents=True)
    (project / "runs" / "my-run" / "model.safetensors").write_bytes(b"x")
    r = CliRunner().invoke(app, ["experiment", "separable-conv", "--quick", "--out", str(project)])
    assert r.exit_code == 2
    assert "choose another --out" in r.output
    assert (project / "runs" / "my-run" / "model.safetensors").read_bytes() == b"x"
    assert not (project / ".profond-experiment").exists()
