"""The ``activations`` (course §2.6), ``normalization`` (§3.5-3.6, exercise 3.4) and
``regularizers`` (§3.2-3.8) experiments: ``--quick`` writes its table and figure, and the
numbers say what the course says."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

import profond.experiments.regularization as reg_exp  # registers the three experiments
from tests.conftest import needs_fmnist, run_quick_experiment

CHANCE = 0.1  # ten Fashion-MNIST classes


@pytest.fixture(scope="module")
def activations_out(tmp_path_factory):
    return run_quick_experiment("activations", tmp_path_factory)


@pytest.fixture(scope="module")
def normalization_out(tmp_path_factory):
    return run_quick_experiment("normalization", tmp_path_factory)


@pytest.fixture(scope="module")
def regularizers_out(tmp_path_factory):
    return run_quick_experiment("regularizers", tmp_path_factory)


def test_three_experiments_are_registered():
    from profond.registry import EXPERIMENTS

    assert {"activations", "normalization", "regularizers"} <= set(EXPERIMENTS.names())


def test_layer_grad_norms_counts_every_linear():
    """One norm per Linear weight, input side first (no dataset needed)."""
    from profond.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.build("mlp", widths=[8] * (reg_exp.DEPTH - 1), activation="sigmoid")
    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    g = reg_exp.layer_grad_norms(model, x, y)
    assert len(g) == reg_exp.DEPTH and all(v >= 0 and math.isfinite(v) for v in g)


# ------------------------------------------------------------------------------ activations
@needs_fmnist
def test_activations_quick_writes_outputs(activations_out):
    table = pd.read_csv(activations_out / "table.csv")
    assert list(table["activation"]) == list(reg_exp.ACTIVATIONS)
    assert (activations_out / "activations.png").stat().st_size > 10_000
    norms = pd.read_csv(activations_out / "grad_norms.csv")
    assert len(norms) == len(reg_exp.ACTIVATIONS) * 2 * reg_exp.DEPTH
    assert "| activation |" in (activations_out / "table.md").read_text()
    assert json.loads((activations_out / "summary.json").read_text())["depth"] == reg_exp.DEPTH


@needs_fmnist
def test_sigmoid_gradients_vanish_relu_do_not(activations_out):
    """Course §2.6.1: |σ'| ≤ 1/4, so the first layer of a deep sigmoid MLP gets no gradient."""
    t = pd.read_csv(activations_out / "table.csv").set_index("activation")
    sig = t.loc["sigmoid", "ratio_first_last_init"]
    relu = t.loc["relu", "ratio_first_last_init"]
    assert sig < 1e-2  # orders of magnitude (measured ~1e-11)
    assert abs(math.log10(relu)) < 2
    assert abs(math.log10(relu)) < abs(math.log10(sig)) - 3
    # the ReLU family trains, the sigmoid net stays near chance
    for act in ("relu", "leaky_relu", "tanh"):
        assert t.loc[act, "test_accuracy"] > 2 * CHANCE, t
    assert t.loc["sigmoid", "test_accuracy"] < t[["test_accuracy"]].drop("sigmoid").max().item()


# ------------------------------------------------------------------------------ normalization
@needs_fmnist
def test_normalization_quick_writes_outputs(normalization_out):
    table = pd.read_csv(normalization_out / "table.csv")
    norm = table[table.sweep == "norm"]
    assert list(norm["norm"]) == reg_exp.NORMS
    assert list(table[table.sweep == "batch_size"]["batch_size"]) == reg_exp.BATCH_SIZES_QUICK
    assert (table["test_accuracy"] > 2 * CHANCE).all(), table
    assert (normalization_out / "normalization.png").stat().st_size > 10_000
    assert "| sweep |" in (normalization_out / "table.md").read_text()


@needs_fmnist
def test_batchnorm_small_batches_take_more_steps(normalization_out):
    """One epoch at batch 16 is 16x more updates than at 256: it is further along."""
    t = pd.read_csv(normalization_out / "table.csv")
    bs = t[t.sweep == "batch_size"].set_index("batch_size")
    assert bs.loc[16, "val_accuracy"] > bs.loc[256, "val_accuracy"]


# ------------------------------------------------------------------------------ regularizers
@needs_fmnist
def test_regularizers_quick_writes_outputs(regularizers_out):
    table = pd.read_csv(regularizers_out / "table.csv")
    assert list(table["regularizer"]) == reg_exp.REGULARIZERS_QUICK
    assert {"none", "L1", "L2", "mixup", "label_smoothing"} <= set(table["regularizer"])
    assert (table["test_accuracy"] > 0.5).all(), table
    assert (regularizers_out / "regularizers.png").stat().st_size > 10_000
    assert "| regularizer |" in (regularizers_out / "table.md").read_text()


@needs_fmnist
def test_l1_sparsifies_first_layer(regularizers_out):
    """Remarque 3.3: L1 drives weights to zero, L2 only shrinks them."""
    t = pd.read_csv(regularizers_out / "table.csv").set_index("regularizer")
    assert t.loc["L1", "near_zero_frac"] > t.loc["none", "near_zero_frac"] + 0.05, t
    assert t.loc["L1", "mean_abs_w"] < t.loc["none", "mean_abs_w"]
    assert t.loc["L2", "mean_abs_w"] <= 1.01 * t.loc["none", "mean_abs_w"]
