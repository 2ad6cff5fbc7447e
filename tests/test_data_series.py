"""Time series (profond.data.series): gaps, chronological split, windows, baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from profond.data import series as S
from profond.errors import ConfigError


@pytest.fixture(scope="module")
def co2() -> S.SeriesData:
    return S.co2()


def toy(values, period=4, gaps="interpolate", train_frac=0.5, val_frac=0.25) -> S.SeriesData:
    v = np.asarray(values, dtype=np.float64)
    return S.make_series(
        "toy", np.arange(len(v)), v, period=period, freq="steps", units="", source="test",
        gaps=gaps, train_frac=train_frac, val_frac=val_frac,
    )  # fmt: skip


# -- gaps ---------------------------------------------------------------------------------


def test_fill_gaps_linear_and_edges():
    filled, observed = S.fill_gaps(np.array([np.nan, 1.0, np.nan, np.nan, 4.0, np.nan]))
    assert filled.tolist() == [1.0, 1.0, 2.0, 3.0, 4.0, 4.0]
    assert observed.tolist() == [False, True, False, False, True, False]


def test_co2_gaps_reported_and_filled(co2):
    assert len(co2) == 2284 and co2.period == 52 and co2.freq == "weekly"
    assert co2.n_filled == 59 == int((~co2.observed).sum())
    assert not np.isnan(co2.values).any()
    assert str(co2.times[0]) == "1958-03-29" and str(co2.times[-1]) == "2001-12-29"
    # every filled value lies on the line between its observed neighbours
    i = int(np.flatnonzero(~co2.observed)[0])
    lo = i - 1
    hi = i + int(np.argmax(co2.observed[i:]))
    frac = (i - lo) / (hi - lo)
    expect = co2.values[lo] + frac * (co2.values[hi] - co2.values[lo])
    assert co2.values[i] == pytest.approx(expect)


def test_drop_policy_drops_windows_touching_gaps(co2):
    dropped = S.co2(gaps="drop")
    w_all, w = co2.windows("train", 30, 7), dropped.windows("train", 30, 7)
    assert w.dropped > 0 and len(w) + w.dropped == len(w_all)
    for t in w.target_index.tolist():
        assert dropped.observed[t - 30 : t + 7].all()
    assert w.observed.all()
    with pytest.raises(ConfigError):
        S.co2(gaps="zero")


# -- split and normalisation --------------------------------------------------------------


def test_chronological_split_covers_in_order(co2):
    b = co2.bounds
    assert b["train"][0] == 0 and b["train"][1] == b["val"][0] and b["val"][1] == b["test"][0]
    assert b["test"][1] == len(co2) and b["train"][1] == round(0.7 * len(co2))
    assert (np.diff(co2.times) > np.timedelta64(0, "D")).all()
    with pytest.raises(ConfigError):
        S.co2(train_frac=0.9, val_frac=0.2)


def test_normalisation_fitted_on_train_only():
    base = np.sin(np.arange(40) * 0.7)
    a, b = base.copy(), base.copy()
    b[20:] += 1000.0  # change val and test only
    sa, sb = toy(a), toy(b)
    assert (sa.mean, sa.std) == (sb.mean, sb.std)
    z = sa.split_values("train", normalized=True)
    assert z.mean() == pytest.approx(0, abs=1e-9) and z.std() == pytest.approx(1)
    assert sa.denormalize(sa.normalize(3.5)) == pytest.approx(3.5)


# -- windows ------------------------------------------------------------------------------


@pytest.mark.parametrize("horizon", [1, 7])
def test_window_shapes_and_values(co2, horizon):
    z = co2.normalized
    for split in S.SPLITS:
        w = co2.windows(split, input_len=30, horizon=horizon)
        n = len(w)
        assert w.x.shape == (n, 30, 1) and w.y.shape == (n, horizon)
        assert w.x.dtype == torch.float32 and n > 300
        t = int(w.target_index[-1])
        assert torch.allclose(w.x[-1, :, 0], torch.tensor(z[t - 30 : t], dtype=torch.float32))
        assert torch.allclose(w.y[-1], torch.tensor(z[t : t + horizon], dtype=torch.float32))


def test_windows_do_not_leak_across_splits(co2):
    lo_val, hi_val = co2.bounds["val"]
    train = co2.windows("train", 30, 7)
    last_train_step = int(train.target_index.max()) + 7 - 1
    assert last_train_step < lo_val  # train windows never see val/test
    assert int(train.target_index.min()) == 30  # inputs start at step 0
    val = co2.windows("val", 30, 7)
    t = val.target_index
    assert int(t.min()) >= lo_val and int(t.max()) + 7 <= hi_val  # all targets in val
    inside = co2.windows("val", 30, 7, inputs_within_split=True)
    assert int(inside.target_index.min()) == lo_val + 30
    strided = co2.windows("test", 30, 1, stride=5)
    assert (torch.diff(strided.target_index) == 5).all()
    with pytest.raises(ConfigError):
        co2.windows("test", input_len=0)
    with pytest.raises(ConfigError):
        co2.windows("holdout")


# -- baselines ----------------------------------------------------------------------------


def test_seasonal_naive_is_exact_on_a_periodic_series():
    s = toy(np.tile([1.0, 5.0, 2.0, 7.0], 10), period=4)
    w = s.windows("test", input_len=3, horizon=6)
    pred = s.seasonal_naive(w)
    assert pred.shape == w.y.shape and torch.allclose(pred, w.y)
    # the source of every prediction is before the forecast origin
    assert S.rmse(pred, w.y) == pytest.approx(0, abs=1e-6)


def test_seasonal_naive_and_mase_on_co2(co2):
    w = co2.windows("test", 30, 7)
    pred = co2.seasonal_naive(w)
    assert not pred.isnan().any()  # test windows have a full season of history
    t, m = int(w.target_index[0]), co2.period
    assert float(pred[0, 0]) == pytest.approx(co2.normalized[t - m], rel=1e-6)
    scale = co2.mase_scale()
    assert scale > 0
    assert co2.mase_scale(normalized=False) == pytest.approx(scale * co2.std)
    assert 0.2 < S.mase(pred, w.y, scale) < 5  # the baseline is in a sane range
    early = co2.seasonal_naive(co2.windows("train", 30, 1))
    assert early[:22].isnan().all() and not early[22:].isnan().any()


def test_mase_scale_toy():
    s = toy([0, 1, 0, 1, 0, 3, 0, 3, 9, 9, 9, 9], period=2, train_frac=0.5, val_frac=0.25)
    # train is [0, 1, 0, 1, 0, 3]: seasonal differences 0, 0, 0, 2 -> mean 0.5 (raw units)
    assert s.mase_scale(normalized=False) == pytest.approx(0.5)


# -- other series and the registry --------------------------------------------------------


def test_sunspots_and_elnino():
    sp = S.sunspots()
    assert len(sp) == 309 and sp.n_filled == 0 and sp.period == 11 and sp.times[0] == 1700
    en = S.elnino()
    assert len(en) == 732 and en.period == 12 and str(en.times[0]) == "1950-01"
    assert len(sp.windows("test", 30, 7)) > 0


def test_registered(monkeypatch):
    from profond import registry

    monkeypatch.setattr(registry, "_LOADED", True)  # this module is imported already
    assert {"co2", "sunspots", "elnino"} <= set(registry.DATASETS.names())
    d = registry.DATASETS.build("co2", gaps="drop")
    assert isinstance(d, S.SeriesData) and d.gaps == "drop"
