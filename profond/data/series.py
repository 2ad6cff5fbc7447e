"""Real time series and sliding windows for forecasting with RNNs (exercise 5.3).

Exercise 5.3 asks for a sliding window of 30 steps predicting the next step, then a
multi-step (7) forecast. The series come with ``statsmodels`` (no network needed):

* ``co2`` - weekly atmospheric CO2 at Mauna Loa (ppm), March 1958 - December 2001,
  2284 weeks of which 59 are missing (NaN): seasonal period 52;
* ``sunspots`` - yearly mean sunspot numbers 1700-2008, 309 years, no gaps: period 11
  (the solar cycle, approximate);
* ``elnino`` - monthly sea surface temperature (deg C) of the El Nino region, 1950-2010,
  732 months, no gaps: period 12.

The CSV files are read straight from the installed ``statsmodels`` package (importing
``statsmodels.datasets`` costs seconds); the values are those of
``statsmodels.datasets.<name>.load_pandas()``.

Gaps are handled explicitly (``gaps=``):

* ``"interpolate"`` (default): each missing value is filled by linear interpolation in
  time between its observed neighbours (``np.interp`` on the step index; the series are
  regularly spaced, so this is linear in time). :attr:`SeriesData.n_filled` reports how
  many points were filled and :attr:`SeriesData.observed` marks them; windows are kept;
* ``"drop"``: the values are filled the same way (so the series stays regular), but every
  window whose inputs or targets touch a filled point is dropped
  (:attr:`Windows.dropped` counts them).

Split: chronological, never shuffled across time: the first ``train_frac`` of the steps
are train, the next ``val_frac`` val, the rest test. Normalisation ``(v - mean) / std``
uses the mean and std of the *observed training* values only.

Windows: :meth:`SeriesData.windows` gives inputs ``x (N, input_len, 1)`` (ready for
``nn.LSTM(input_size=1, batch_first=True)``) and targets ``y (N, horizon)``, normalised.
A window belongs to the split that holds *all* its targets; its inputs are the
``input_len`` steps just before, which for val/test windows may lie in the previous
split: that is the known past at forecast time, not a leak (targets of one split are
never targets or inputs of an earlier split's windows). Train windows lie entirely in
train. ``inputs_within_split=True`` also keeps val/test inputs inside their split.

Baselines: :meth:`SeriesData.seasonal_naive` forecasts ``v[t + h - m * ceil((h+1)/m)]``
(the value one season before, from data known at the forecast origin) and
:meth:`SeriesData.mase_scale` is the in-sample mean absolute seasonal difference of the
training series (Hyndman & Koehler 2006): MASE = MAE / mase_scale.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..registry import DATASETS

SPLITS = ("train", "val", "test")
GAP_POLICIES = ("interpolate", "drop")


@dataclass
class Windows:
    """Sliding windows of one split (normalised values)."""

    x: torch.Tensor  # float32 (N, input_len, 1)
    y: torch.Tensor  # float32 (N, horizon)
    target_index: torch.Tensor  # int64 (N,): series index of each window's first target
    observed: torch.Tensor  # bool (N, horizon): target was observed (not filled)
    dropped: int  # windows dropped because they touch a filled gap (gaps="drop")

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class SeriesData:
    """A univariate, regularly spaced series with gaps filled, split in time."""

    name: str
    values: np.ndarray  # float64 (T,), gaps filled
    observed: np.ndarray  # bool (T,), False where the value was filled
    times: np.ndarray  # (T,) datetime64[D] dates, or int years
    period: int  # seasonal period in steps (naive seasonal baseline, MASE)
    freq: str  # "weekly", "monthly", "yearly"
    units: str
    bounds: dict[str, tuple[int, int]]  # split -> [lo, hi) step indices
    mean: float  # of the observed training values
    std: float
    gaps: str  # the gap policy
    source: str

    @property
    def n_filled(self) -> int:
        """How many missing values were filled by interpolation."""
        return int((~self.observed).sum())

    def __len__(self) -> int:
        return len(self.values)

    def normalize(self, v):
        return (v - self.mean) / self.std

    def denormalize(self, z):
        """Back to the series' units (works on numpy arrays and tensors)."""
        return z * self.std + self.mean

    @property
    def normalized(self) -> np.ndarray:
        return self.normalize(self.values)

    def split_values(self, split: str, normalized: bool = False) -> np.ndarray:
        lo, hi = self._bounds(split)
        v = self.values[lo:hi]
        return self.normalize(v) if normalized else v

    def _bounds(self, split: str) -> tuple[int, int]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}.")
        return self.bounds[split]

    def window_targets(
        self, split: str, input_len: int, horizon: int, stride: int, inputs_within_split: bool
    ) -> np.ndarray:
        """Indices ``t`` of the first target of each window of ``split`` (before gap dropping)."""
        if input_len < 1 or horizon < 1 or stride < 1:
            raise ConfigError(
                f"input_len, horizon and stride must be >= 1, got {input_len}, {horizon}, {stride}."
            )
        lo, hi = self._bounds(split)
        first = lo + input_len if (split == "train" or inputs_within_split) else max(lo, input_len)
        return np.arange(first, hi - horizon + 1, stride)

    def windows(
        self,
        split: str,
        input_len: int = 30,
        horizon: int = 1,
        stride: int = 1,
        inputs_within_split: bool = False,
    ) -> Windows:
        """Windows of ``input_len`` steps -> the next ``horizon`` steps (module doc)."""
        starts = self.window_targets(split, input_len, horizon, stride, inputs_within_split)
        z = self.normalized
        inp = starts[:, None] + np.arange(-input_len, 0)[None, :]
        tgt = starts[:, None] + np.arange(horizon)[None, :]
        dropped = 0
        if self.gaps == "drop" and len(starts):
            clean = self.observed[inp].all(1) & self.observed[tgt].all(1)
            dropped = int((~clean).sum())
            starts, inp, tgt = starts[clean], inp[clean], tgt[clean]
        if len(starts) == 0:
            inp = np.zeros((0, input_len), dtype=np.int64)
            tgt = np.zeros((0, horizon), dtype=np.int64)
        return Windows(
            x=torch.from_numpy(z[inp].astype(np.float32)).unsqueeze(-1),
            y=torch.from_numpy(z[tgt].astype(np.float32)),
            target_index=torch.from_numpy(starts.astype(np.int64)),
            observed=torch.from_numpy(self.observed[tgt]),
            dropped=dropped,
        )

    def seasonal_naive(self, w: Windows) -> torch.Tensor:
        """Seasonal naive forecast ``(N, horizon)`` (normalised) for the windows ``w``.

        For target step ``t + h`` (origin ``t``, ``h = 0..horizon-1``) it is the value
        ``m * ceil((h+1)/m)`` steps earlier, always at or before ``t - 1``: it uses the
        whole known past, not only the window's inputs (30 < 52 for weekly CO2). Windows
        too early for a full season of history get NaN (only the first train windows).
        """
        m = self.period
        horizon = w.y.shape[1]
        h = np.arange(horizon)
        src = w.target_index.numpy()[:, None] + h[None, :] - m * np.ceil((h + 1) / m).astype(int)
        z = self.normalized
        out = np.where(src >= 0, z[np.clip(src, 0, None)], np.nan)
        return torch.from_numpy(out.astype(np.float32))

    def mase_scale(self, normalized: bool = True) -> float:
        """Mean absolute seasonal difference ``|v_t - v_{t-m}|`` over the training split."""
        lo, hi = self.bounds["train"]
        v = self.normalized if normalized else self.values
        v, obs = v[lo:hi], self.observed[lo:hi]
        m = self.period
        both = obs[m:] & obs[:-m]  # differences between observed values only
        return float(np.abs(v[m:] - v[:-m])[both].mean())


def mase(pred: torch.Tensor, target: torch.Tensor, scale: float) -> float:
    """Mean absolute scaled error: MAE / ``scale`` (:meth:`SeriesData.mase_scale`)."""
    return float((pred - target).abs().mean()) / scale


def rmse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).pow(2).mean().sqrt())


# ----------------------------------------------------------------------------------------
# Reading the statsmodels files
# ----------------------------------------------------------------------------------------


def _statsmodels_csv(name: str) -> Path:
    spec = importlib.util.find_spec("statsmodels")  # locates it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            f"the {name} series comes with statsmodels, which is not installed: "
            "`pip install statsmodels`."
        )
    p = Path(list(spec.submodule_search_locations)[0]) / "datasets" / name / f"{name}.csv"
    if not p.is_file():
        raise DatasetError(f"{p}: missing from the statsmodels installation; reinstall it.")
    return p


def _read_csv(name: str) -> tuple[list[str], list[list[str]]]:
    lines = _statsmodels_csv(name).read_text().strip().splitlines()
    header = [h.strip('"') for h in lines[0].split(",")]
    return header, [line.split(",") for line in lines[1:]]


def fill_gaps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation over NaNs (constant beyond the ends); returns (filled, observed)."""
    observed = ~np.isnan(values)
    if not observed.any():
        raise DatasetError("the series has no observed value.")
    idx = np.arange(len(values))
    filled = values.copy()
    filled[~observed] = np.interp(idx[~observed], idx[observed], values[observed])
    return filled, observed


@functools.lru_cache(maxsize=1)
def _co2_raw() -> tuple[np.ndarray, np.ndarray]:
    _, rows = _read_csv("co2")
    dates = np.array([f"{r[0][:4]}-{r[0][4:6]}-{r[0][6:8]}" for r in rows], dtype="datetime64[D]")
    if not (np.diff(dates) == np.timedelta64(7, "D")).all():
        raise DatasetError("co2.csv: the dates are not consecutive weeks.")
    values = np.array([float(r[1]) if r[1].strip() else np.nan for r in rows])
    return dates, values


@functools.lru_cache(maxsize=1)
def _sunspots_raw() -> tuple[np.ndarray, np.ndarray]:
    _, rows = _read_csv("sunspots")
    years = np.array([int(float(r[0])) for r in rows])
    return years, np.array([float(r[1]) for r in rows])


@functools.lru_cache(maxsize=1)
def _elnino_raw() -> tuple[np.ndarray, np.ndarray]:
    _, rows = _read_csv("elnino")
    months = np.array(
        [f"{int(float(r[0]))}-{m:02d}" for r in rows for m in range(1, 13)], dtype="datetime64[M]"
    )
    values = np.array([float(v) if v.strip() else np.nan for r in rows for v in r[1:13]])
    return months, values


# ----------------------------------------------------------------------------------------
# Building a SeriesData
# ----------------------------------------------------------------------------------------


def chrono_bounds(n: int, train_frac: float, val_frac: float) -> dict[str, tuple[int, int]]:
    """``[lo, hi)`` of each split: the first ``train_frac`` steps, then ``val_frac``, the rest."""
    if not (0 < train_frac < 1 and 0 <= val_frac < 1 and train_frac + val_frac < 1):
        raise ConfigError(
            f"train_frac={train_frac}, val_frac={val_frac}: need 0 < train_frac, 0 <= "
            "val_frac and train_frac + val_frac < 1 (the rest is the test split)."
        )
    a = int(round(train_frac * n))
    b = int(round((train_frac + val_frac) * n))
    return {"train": (0, a), "val": (a, b), "test": (b, n)}


def make_series(
    name: str,
    times: np.ndarray,
    raw: np.ndarray,
    *,
    period: int,
    freq: str,
    units: str,
    source: str,
    gaps: str = "interpolate",
    train_frac: float = 0.7,
    val_frac: float = 0.15,
) -> SeriesData:
    """Fill gaps, split chronologically and fit the normalisation on train (module doc)."""
    if gaps not in GAP_POLICIES:
        raise ConfigError(f"unknown gap policy {gaps!r}; valid: {', '.join(GAP_POLICIES)}.")
    values, observed = fill_gaps(np.asarray(raw, dtype=np.float64))
    bounds = chrono_bounds(len(values), train_frac, val_frac)
    lo, hi = bounds["train"]
    train_obs = values[lo:hi][observed[lo:hi]]
    mean, std = float(train_obs.mean()), float(train_obs.std())
    if std == 0:
        raise DatasetError(f"{name}: the training values are constant; cannot normalise.")
    return SeriesData(
        name, values, observed, times, period, freq, units, bounds, mean, std, gaps, source
    )


def co2(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    gaps: str = "interpolate",
    train_frac: float = 0.7,
    val_frac: float = 0.15,
) -> SeriesData:
    """Weekly Mauna Loa CO2 (ppm) 1958-2001 from statsmodels: 2284 weeks, 59 missing."""
    dates, raw = _co2_raw()
    return make_series(
        "co2", dates, raw, period=52, freq="weekly", units="ppm",
        source="statsmodels.datasets.co2", gaps=gaps, train_frac=train_frac, val_frac=val_frac,
    )  # fmt: skip


def sunspots(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    gaps: str = "interpolate",
    train_frac: float = 0.7,
    val_frac: float = 0.15,
) -> SeriesData:
    """Yearly sunspot numbers 1700-2008 from statsmodels (309 years, period ~11)."""
    years, raw = _sunspots_raw()
    return make_series(
        "sunspots", years, raw, period=11, freq="yearly", units="sunspot number",
        source="statsmodels.datasets.sunspots", gaps=gaps, train_frac=train_frac,
        val_frac=val_frac,
    )  # fmt: skip


def elnino(
    data_dir: str | None = None,
    download: bool = True,
    progress: bool = True,
    *,
    gaps: str = "interpolate",
    train_frac: float = 0.7,
    val_frac: float = 0.15,
) -> SeriesData:
    """Monthly El Nino sea surface temperature 1950-2010 from statsmodels (period 12)."""
    months, raw = _elnino_raw()
    return make_series(
        "elnino", months, raw, period=12, freq="monthly", units="deg C",
        source="statsmodels.datasets.elnino", gaps=gaps, train_frac=train_frac,
        val_frac=val_frac,
    )  # fmt: skip


# The builders take the vision builders' (data_dir, download, progress), ignored here, and
# return SeriesData; forecasting methods call DATASETS.build(name, gaps=..., ...).
DATASETS.add("co2", co2, "weekly Mauna Loa CO2 1958-2001, 59 gaps filled (statsmodels; ex. 5.3)")
DATASETS.add("sunspots", sunspots, "yearly sunspot numbers 1700-2008 (statsmodels; ex. 5.3)")
DATASETS.add("elnino", elnino, "monthly El Nino sea temperature 1950-2010 (statsmodels; ex. 5.3)")
