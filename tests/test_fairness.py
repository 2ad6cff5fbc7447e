"""profond.metrics.fairness (course §12.6.2, definitions 12.2-12.3): per-group rates and the
between-group gaps equal fairlearn's on the same predictions (2 and 3 groups), a hand-worked
example, clear errors for bad input, and percentile bootstrap intervals that are seeded, have
the normal-approximation width and cover the true gap about 95 % of the time."""

from __future__ import annotations

import numpy as np
import pytest

from profond.metrics import fairness as F

pytestmark = pytest.mark.usefixtures("one_thread")


def random_predictions(n_groups: int, seed: int, n: int = 600):
    rng = np.random.default_rng(seed)
    labels = np.array(["north", "south", "east"][:n_groups])
    g = labels[rng.integers(0, n_groups, n)]
    # group-dependent base and selection rates, so that every gap is clearly non-zero
    shift = {lab: 0.15 * i for i, lab in enumerate(labels)}
    p = np.array([0.3 + shift[x] for x in g])
    y_true = (rng.random(n) < p).astype(int)
    sh = np.array([shift[x] for x in g])
    y_pred = (rng.random(n) < 0.2 + (0.3 + sh) * y_true + 0.5 * sh * (1 - y_true)).astype(int)
    return y_true, y_pred, g


@pytest.mark.parametrize("n_groups", [2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_fairlearn(n_groups, seed):
    fl = pytest.importorskip("fairlearn.metrics")
    from sklearn.metrics import precision_score

    yt, yp, g = random_predictions(n_groups, seed)
    kw = {"sensitive_features": g}
    assert F.demographic_parity_difference(yt, yp, g) == pytest.approx(
        fl.demographic_parity_difference(yt, yp, **kw), abs=1e-12)
    assert F.demographic_parity_ratio(yt, yp, g) == pytest.approx(fl.demographic_parity_ratio(yt, yp, **kw), abs=1e-12)
    assert F.equalized_odds_difference(yt, yp, g) == pytest.approx(
        fl.equalized_odds_difference(yt, yp, **kw), abs=1e-12)
    frame = fl.MetricFrame(metrics={"tpr": fl.true_positive_rate, "fpr": fl.false_positive_rate,
                                    "selection_rate": fl.selection_rate,
                                    "ppv": lambda a, b: precision_score(a, b, zero_division=np.nan)},
                           y_true=yt, y_pred=yp, sensitive_features=g)
    ours = F.group_rates(yt, yp, g)
    by = frame.by_group
    assert list(ours.index) == list(by.index)
    for col in ("tpr", "fpr", "selection_rate", "ppv"):
        np.testing.assert_allclose(ours[col].to_numpy(), by[col].to_numpy(float), rtol=0, atol=1e-12)
    diff = frame.difference(method="between_groups")
    assert F.equal_opportunity_difference(yt, yp, g) == pytest.approx(diff["tpr"], abs=1e-12)
    assert F.predictive_parity_difference(yt, yp, g) == pytest.approx(diff["ppv"], abs=1e-12)
    assert F.equal_opportunity_difference(yt, yp, g) > 0.02  # the comparison is not between zeros


def test_hand_worked_example():
    #            group a (4 rows)      group b (6 rows)
    y_true = [1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    y_pred = [1, 0, 1, 0, 1, 1, 1, 1, 0, 0]
    group = ["a"] * 4 + ["b"] * 6
    r = F.group_rates(y_true, y_pred, group)
    # a: TP=1 FN=1 FP=1 TN=1; b: TP=3 FN=0 FP=1 TN=2
    assert r.loc["a", "selection_rate"] == 0.5 and r.loc["b", "selection_rate"] == pytest.approx(4 / 6)
    assert r.loc["a", "tpr"] == 0.5 and r.loc["b", "tpr"] == 1.0
    assert r.loc["a", "fpr"] == 0.5 and r.loc["b", "fpr"] == pytest.approx(1 / 3)
    assert r.loc["a", "ppv"] == 0.5 and r.loc["b", "ppv"] == 0.75
    assert list(r["n"]) == [4, 6] and list(r["positives"]) == [2, 3]
    assert F.demographic_parity_difference(y_true, y_pred, group) == pytest.approx(1 / 6)
    assert F.demographic_parity_ratio(y_true, y_pred, group) == pytest.approx(0.75)
    assert F.equal_opportunity_difference(y_true, y_pred, group) == pytest.approx(0.5)
    assert F.equalized_odds_difference(y_true, y_pred, group) == pytest.approx(0.5)  # max(0.5, 1/6)
    assert F.predictive_parity_difference(y_true, y_pred, group) == pytest.approx(0.25)
    rep = F.fairness_report(y_true, y_pred, group)
    assert rep["accuracy"] == pytest.approx(0.7)
    # booleans are binary too; a single group has no gap
    assert F.demographic_parity_difference(np.array(y_true, bool), np.array(y_pred, bool), group) == pytest.approx(1 / 6)
    assert F.equalized_odds_difference(y_true, y_pred, ["z"] * 10) == 0.0


def test_bad_input_is_a_clear_value_error():
    yt, yp, g = [1, 0, 1, 0], [1, 0, 0, 1], ["a", "a", "b", "b"]
    with pytest.raises(ValueError, match="same length.*4, 3, 4"):
        F.demographic_parity_difference(yt, yp[:3], g)
    with pytest.raises(ValueError, match=r"y_pred must be binary.*0\.7.*threshold"):
        F.demographic_parity_difference(yt, [1, 0, 0.7, 1], g)
    with pytest.raises(ValueError, match=r"y_true must be binary.*\[2\]"):
        F.equal_opportunity_difference([1, 0, 2, 0], yp, g)
    with pytest.raises(ValueError, match="binary"):
        F.demographic_parity_difference(yt, ["yes", "no", "no", "yes"], g)
    with pytest.raises(ValueError, match="missing"):
        F.demographic_parity_difference(yt, yp, np.array([1.0, np.nan, 2.0, 2.0]))
    with pytest.raises(ValueError, match="empty"):
        F.demographic_parity_difference([], [], [])
    with pytest.raises(ValueError, match="1-D"):
        F.demographic_parity_difference(np.ones((2, 2)), np.ones((2, 2)), [0, 1])
    # group "b" has no positive example: its TPR, hence equal opportunity, is undefined
    no_pos = ([1, 0, 0, 0], [1, 0, 1, 0], ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match=r"TPR is undefined for group\(s\) \['b'\]: no positive"):
        F.equal_opportunity_difference(*no_pos)
    with pytest.raises(ValueError, match=r"TPR is undefined.*\['b'\]"):
        F.equalized_odds_difference(*no_pos)
    assert F.demographic_parity_difference(*no_pos) == 0.0  # no TPR needed there
    assert np.isnan(F.group_rates(*no_pos).loc["b", "tpr"])
    with pytest.raises(ValueError, match=r"PPV is undefined for group\(s\) \[2\]: no selected"):
        F.predictive_parity_difference([1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 2, 2])
    with pytest.raises(ValueError, match="unknown metric"):
        F.bootstrap_intervals(yt, yp, g, metrics=["accuracy"])


def test_bootstrap_is_seeded_and_has_the_normal_width():
    rng = np.random.default_rng(3)
    n_a, n_b, p_a, p_b = 3000, 2000, 0.30, 0.55
    g = np.array(["a"] * n_a + ["b"] * n_b)
    y_pred = np.concatenate([rng.random(n_a) < p_a, rng.random(n_b) < p_b]).astype(int)
    y_true = rng.integers(0, 2, n_a + n_b)
    kw = {"metrics": ["demographic_parity_difference", "equal_opportunity_difference"], "n_boot": 20_000}
    ci = F.bootstrap_intervals(y_true, y_pred, g, seed=7, **kw).set_index("metric")
    again = F.bootstrap_intervals(y_true, y_pred, g, seed=7, **kw).set_index("metric")
    other = F.bootstrap_intervals(y_true, y_pred, g, seed=8, **kw).set_index("metric")
    assert ci.equals(again) and not ci.equals(other)
    dp = ci.loc["demographic_parity_difference"]
    assert dp["estimate"] == pytest.approx(F.demographic_parity_difference(y_true, y_pred, g), abs=1e-15)
    assert dp["low"] < dp["estimate"] < dp["high"] and dp["n_undefined"] == 0
    # far from 0 the gap is |ŝ_b − ŝ_a|, two independent binomial proportions: the 95 % interval
    # is ±1.96 · sqrt(s_a(1−s_a)/n_a + s_b(1−s_b)/n_b) around the estimate
    s = F.group_rates(y_true, y_pred, g)["selection_rate"]
    se = np.sqrt(s["a"] * (1 - s["a"]) / n_a + s["b"] * (1 - s["b"]) / n_b)
    assert dp["high"] - dp["low"] == pytest.approx(2 * 1.96 * se, rel=0.03)
    assert (dp["low"] + dp["high"]) / 2 == pytest.approx(dp["estimate"], abs=0.1 * se)


def test_bootstrap_covers_the_true_gap():
    # 200 data sets drawn from a known population: the 90 % interval of the DP gap contains the
    # true gap (0.2) in about 90 % of them (binomial sd over 200 data sets: 2.1 %)
    rng = np.random.default_rng(0)
    n = 800
    g = np.array(["a", "b"] * (n // 2))
    hits = 0
    for rep in range(200):
        y_pred = (rng.random(n) < np.where(g == "a", 0.3, 0.5)).astype(int)
        y_true = rng.integers(0, 2, n)
        ci = F.bootstrap_intervals(y_true, y_pred, g, metrics=["demographic_parity_difference"],
                                   n_boot=400, level=0.9, seed=rep).iloc[0]
        hits += ci["low"] <= 0.2 <= ci["high"]
    assert 0.84 <= hits / 200 <= 0.96, hits


def test_bootstrap_counts_undefined_resamples():
    # group b: 3 rows, one positive; a resample misses it with probability (2/3)^3 = 8/27
    yt = [1, 0, 1, 0, 1, 0, 0]
    yp = [1, 0, 0, 1, 1, 1, 0]
    g = ["a", "a", "a", "a", "b", "b", "b"]
    ci = F.bootstrap_intervals(yt, yp, g, metrics=["equal_opportunity_difference", "demographic_parity_difference"],
                               n_boot=4000, seed=0).set_index("metric")
    frac = ci.loc["equal_opportunity_difference", "n_undefined"] / 4000
    # undefined when b draws no positive (8/27) or a (2 positives in 4) draws none ((1/2)^4 = 1/16)
    assert frac == pytest.approx(1 - (1 - 8 / 27) * (1 - 1 / 16), abs=0.025)
    assert ci.loc["demographic_parity_difference", "n_undefined"] == 0
