"""Language-model experiments (course §7.10 eq. 7.16, exercises 11.7, 6.4, 7.5): the power-law
fit against exact and hand-computed values, the likelihoods against step-by-step references,
the normalisation enumeration, and the three quick runs."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import profond.experiments.language_models as lm
from profond.errors import ConfigError
from profond.registry import EXPERIMENTS, MODELS
from tests.conftest import run_quick_experiment

# -- power law (eq. 7.16, exercise 11.7) ---------------------------------------------------


def test_exact_power_law_recovers_alpha():
    n = np.geomspace(1e3, 1e8, 6)
    loss = (8.8e13 / n) ** 0.076
    fit = lm.fit_power_law(n, loss)
    assert fit.alpha == pytest.approx(0.076, abs=1e-12)
    assert fit.n_c == pytest.approx(8.8e13, rel=1e-8)
    assert fit.alpha_se == pytest.approx(0, abs=1e-10) and fit.r2 == pytest.approx(1)
    assert max(map(abs, fit.residuals)) < 1e-12 and abs(fit.curvature) < 1e-10
    assert fit.predict(1e11) == pytest.approx((8.8e13 / 1e11) ** 0.076)
    assert lm.local_alphas(n, loss) == pytest.approx([0.076] * 5)
    assert lm.judge_power_law(fit)[0]


def test_exercise_points_by_hand():
    """Exercise 11.7 by hand: x = log10 N = 6, 7, 8, 9 (mean 7.5, Σ(x − x̄)² = 5), y = log10 L;
    α = −Σ (x − x̄) y / 5, intercept ȳ + α x̄, L(1e11) = 10^(ȳ − α (11 − 7.5))."""
    y = [math.log10(v) for v in lm.EXERCISE_L]
    dx = [-1.5, -0.5, 0.5, 1.5]
    alpha = -sum(a * b for a, b in zip(dx, y, strict=True)) / 5
    y_bar = sum(y) / 4
    res = [yi - (y_bar - alpha * d) for yi, d in zip(y, dx, strict=True)]  # log10 residuals
    se = math.sqrt(sum(r * r for r in res) / 2 / 5)  # slope SE, base-free (both axes log10)
    fit = lm.fit_power_law(lm.EXERCISE_N, lm.EXERCISE_L)
    assert alpha == pytest.approx(0.04795, abs=1e-5)
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert fit.alpha_se == pytest.approx(se, rel=1e-9)
    assert fit.residuals == pytest.approx([r * math.log(10) for r in res], abs=1e-12)  # natural log
    assert float(fit.predict(1e11)) == pytest.approx(10 ** (y_bar - alpha * 3.5), rel=1e-12)
    assert float(fit.predict(1e11)) == pytest.approx(1.820, abs=1e-3)
    # the local slopes fall with N: the exercise's points are not a straight line in log-log
    loc = lm.local_alphas(lm.EXERCISE_N, lm.EXERCISE_L)
    assert loc[0] > loc[1] > loc[2] and fit.curvature > 0


def test_judge_power_law_can_fail():
    n = np.geomspace(1e3, 1e7, 6)
    # an irreducible loss: L = E + (N_c/N)^α bends in log-log
    bent = lm.fit_power_law(n, 1.5 + (1e5 / n) ** 0.3)
    ok, why = lm.judge_power_law(bent)
    assert not ok and "significant" in why
    # a noisy but straight one passes the curvature test, fails the residual one
    noisy = (1e9 / n) ** 0.1 * np.exp([0.05, -0.05, 0.05, -0.05, 0.05, -0.05])
    ok, why = lm.judge_power_law(lm.fit_power_law(n, noisy))
    assert not ok and "(not significant)" in why
    assert lm.t_critical(1) == 12.706 and lm.t_critical(50) == 2.0
    with pytest.raises(ConfigError, match="at least 3"):
        lm.fit_power_law([1, 2], [3, 4])
    with pytest.raises(ConfigError, match="positive"):
        lm.fit_power_law([1, 2, 3], [1, -1, 2])


# -- likelihoods (exercise 7.5) ------------------------------------------------------------


def _gpt(vocab=7, seed=0):
    torch.manual_seed(seed)
    return MODELS.build("gpt", vocab_size=vocab, d_model=16, num_heads=2, num_layers=2, max_len=16).double().eval()


def test_sequence_log_likelihood_is_the_chain_rule():
    """Batched no-cache scoring = Σ of the step-by-step KV-cached next-token log-probabilities."""
    model = _gpt()
    prefix, ids = [6, 1], [3, 0, 5, 5, 2]
    ref, state = 0.0, None
    seq = [*prefix, *ids]
    with torch.no_grad():
        logits, state = model(torch.tensor([seq[:2]]), None)
        for t in range(2, len(seq)):
            ref += float(F.log_softmax(logits[0, -1], -1)[seq[t]])
            logits, state = model(torch.tensor([[seq[t]]]), state)
    assert lm.sequence_log_likelihood(model, prefix, ids) == pytest.approx(ref, abs=1e-10)


def test_pseudo_log_likelihood_masks_one_position_at_a_time():
    torch.manual_seed(0)
    bert = MODELS.build("bert", vocab_size=9, d_model=16, num_heads=2, num_layers=1, max_len=12,
                        dropout=0.0, attn_dropout=0.0).double().eval()
    ids = [2, 5, 7, 5, 8, 6]  # [CLS] first
    ref = 0.0
    with torch.no_grad():
        for i in range(1, len(ids)):
            x = torch.tensor([ids])
            x[0, i] = 4
            ref += float(F.log_softmax(bert(x)[0, i], -1)[ids[i]])
    assert lm.pseudo_log_likelihood(bert, ids, 4) == pytest.approx(ref, abs=1e-10)
    # restricted to a sub-vocabulary: the renormalised conditionals
    allowed = [5, 6, 7, 8]
    got = lm.pseudo_log_likelihood(bert, ids, 4, allowed=allowed)
    assert got > lm.pseudo_log_likelihood(bert, ids, 4)


def test_enumeration_gpt_normalised_pll_not():
    r = lm.enumerate_normalisation(3, 3, seed=0)
    assert r["sequences"] == 27
    assert r["sum_exp_log_p_gpt"] == pytest.approx(1.0, abs=1e-12)
    assert abs(r["sum_exp_pll_bert"] - 1) > 0.1


def test_joint_pll_sum():
    a, b = np.array([0.2, 0.3, 0.5]), np.array([0.6, 0.4])
    assert lm.joint_pll_sum(np.einsum("i,j,k->ijk", a, b, a)) == pytest.approx(1.0)  # product: normalised
    assert lm.joint_pll_sum(np.array([[0.5, 0.0], [0.0, 0.5]])) == pytest.approx(2.0)  # p(aa) = p(bb) = 1/2
    p = lm.random_joint(3, 3, seed=0)
    assert p.sum() == pytest.approx(1.0) and abs(lm.joint_pll_sum(p) - 1) > 0.1
    # brute force: Σ_x Π_i p(x_i | x_-i)
    brute = 0.0
    for x in itertools.product(range(3), repeat=3):
        prod = 1.0
        for i in range(3):
            others = [x[:i] + (v,) + x[i + 1:] for v in range(3)]
            prod *= p[x] / sum(p[o] for o in others)
        brute += prod
    assert lm.joint_pll_sum(p) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(ConfigError):
        lm.joint_pll_sum(np.array([0.5, 0.6]))


def test_timed_greedy_cache_agrees_with_no_cache_in_context():
    model = _gpt(vocab=11, seed=3)
    ctx = [1, 2, 3]
    cached, t1 = lm.timed_greedy(model, ctx, 13, cache=True)
    plain, t2 = lm.timed_greedy(model, ctx, 13, cache=False)
    assert cached == plain and len(cached) == 13 and len(t1) == len(t2) == 13 and min(t1 + t2) > 0
    # past the context (16) the cache slides; both still produce the requested length
    assert len(lm.timed_greedy(model, ctx, 30, cache=True)[0]) == 30
    rnn = MODELS.build("char-lm", vocab_size=11, embed_dim=8, hidden_size=12, num_layers=1)
    assert len(lm.timed_greedy(rnn, ctx, 5, cache=True)[0]) == 5


# -- the quick runs ------------------------------------------------------------------------


def test_registered():
    assert all(name in EXPERIMENTS for name in ("scaling-law", "gpt-vs-lstm", "mlm-vs-ar"))


@pytest.fixture(scope="module")
def scaling(tmp_path_factory):
    return run_quick_experiment("scaling-law", tmp_path_factory)


def test_quick_scaling_law(scaling):
    t = pd.read_csv(scaling / "table.csv")
    s = json.loads((scaling / "summary.json").read_text())
    assert len(t) == len(lm.SCALING_QUICK.sizes) >= 5
    assert t["N"].is_monotonic_increasing and s["decades"] >= 1.5 and s["same_tokens"]
    assert t["tokens"].nunique() == 1
    # the table's fit is the fit of its own points
    fit = lm.fit_power_law(t["N"], t["test_loss"])
    assert s["alpha_N"] == pytest.approx(fit.alpha, abs=1e-5)
    assert t["log_residual"].to_numpy() == pytest.approx(fit.residuals, abs=1e-4)
    # tiny models still learn something: every one below the uniform 82-way loss
    assert (t["test_loss"] < math.log(82)).all()
    assert s["exercise_alpha_N"] == pytest.approx(0.04795, abs=1e-5)
    assert s["power_law"] in ("holds", "does not hold")
    assert (scaling / "scaling_law.png").stat().st_size > 0
    md = (scaling / "table.md").read_text()
    assert "0.076" in md and "1e11" in md


@pytest.fixture(scope="module")
def versus(tmp_path_factory):
    return run_quick_experiment("gpt-vs-lstm", tmp_path_factory)


def test_quick_gpt_vs_lstm(versus):
    t = pd.read_csv(versus / "table.csv").set_index("model")
    s = json.loads((versus / "summary.json").read_text())
    assert list(t.index) == ["LSTM", "GPT"]
    assert abs(s["param_ratio_gpt_lstm"] - 1) < 0.1  # (nearly) equal parameter budgets
    assert t["same_text_as_generate"].all()
    assert bool(t.loc["GPT", "no_cache_agrees_in_context"])
    assert (t["gen_ms_per_token"] > 0).all() and t.loc["GPT", "gen_ms_per_token_no_cache"] > 0
    assert (t["test_bpc"] > 0).all() and (t["test_bpc"] < math.log2(82)).all()
    assert (versus / "gpt_vs_lstm.png").stat().st_size > 0


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    return run_quick_experiment("mlm-vs-ar", tmp_path_factory)


def test_quick_mlm_vs_ar(mlm):
    t = pd.read_csv(mlm / "table.csv").set_index("model")
    s = json.loads((mlm / "summary.json").read_text())
    assert t.loc["GPT", "sum_exp_score_3x3"] == pytest.approx(1.0, abs=1e-6)
    assert abs(t.loc["BERT", "sum_exp_score_3x3"] - 1) > 1e-3
    assert s["gpt_sums_to_one"] == "holds" and s["pll_not_normalised"] == "holds"
    assert len(s["enumeration"]) == lm.ENUM_SEEDS
    assert t["texts"].iloc[0] > 0 and (t["bits_per_char"] > 0).all()
    assert s["exact_conditionals_pll_sum"] == pytest.approx(lm.joint_pll_sum(lm.random_joint(3, 3, seed=0)))
    md = (mlm / "table.md").read_text()
    assert "PLL" in md and "not measured" in md
    assert (mlm / "mlm_vs_ar.png").stat().st_size > 0
