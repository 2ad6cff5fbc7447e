"""``dp-sgd`` (course §12.7.1): the attack's advantage on known losses, the DP bound, and the
quick run's table (ε from the accountant, the non-private row, the claims)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from profond.experiments.privacy import dp_advantage_bound, threshold_advantage
from profond.privacy import epsilon

from .conftest import run_quick_experiment


def test_threshold_advantage_on_known_losses():
    assert threshold_advantage(np.array([0.1, 0.2]), np.array([0.5, 0.9])) == 1.0  # separable
    assert threshold_advantage(np.array([0.5, 0.9]), np.array([0.1, 0.2])) == 0.0  # members lose more: none
    # members [1, 3], others [2, 4]: τ just above 1 gives TPR 1/2, FPR 0
    assert threshold_advantage(np.array([1.0, 3.0]), np.array([2.0, 4.0])) == 0.5
    rng = np.random.default_rng(0)
    same = threshold_advantage(rng.normal(size=20000), rng.normal(size=20000))
    assert same < 0.03  # one distribution: no advantage beyond sampling noise


def test_dp_bound():
    assert dp_advantage_bound(0.0, 0.0) == 0.0
    assert dp_advantage_bound(1e-3, 0.0) == pytest.approx(5e-4, rel=1e-3)  # ≈ ε/2 for small ε
    assert dp_advantage_bound(50.0, 1e-5) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return run_quick_experiment("dp-sgd", tmp_path_factory)


def test_quick_table(out):
    t = pd.read_csv(out / "table.csv")
    assert list(t["noise_multiplier"]) == [0.0, 0.7, 2.0]
    plain, dp = t.iloc[0], t.iloc[1:]
    assert math.isinf(plain["epsilon"]) and (dp["epsilon"] > 0).all()
    # more noise, smaller ε; each ε is the accountant's for the run's (q, σ, steps)
    assert dp["epsilon"].iloc[1] < dp["epsilon"].iloc[0]
    q, steps = 40 / 400, 8 * 10
    assert dp["epsilon"].iloc[1] == pytest.approx(epsilon(q, 2.0, steps, 1e-5), rel=1e-3)
    assert (t["test_accuracy"] > 0.5).all()  # every run learns (chance 0.1)
    assert ((t["attack_advantage"] >= 0) & (t["attack_advantage"] <= 1)).all()
    notes = (out / "table.md").read_text()
    under = "holds" if (dp["attack_advantage"] <= dp["dp_bound"]).all() else "does not hold"
    assert f"the attack stays under the (ε, δ)-DP bound in every DP run: **{under}**" in notes
