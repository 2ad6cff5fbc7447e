"""Group-fairness metrics of a binary classifier (course §12.6.2, definitions 12.2-12.3).

Every metric here is a function of the four confusion counts (TP, FP, FN, TN) of each group
of the sensitive attribute ``A``, so :func:`confusion_by_group` computes those once and the
rest is arithmetic on a ``(G, 4)`` array (or ``(B, G, 4)`` for bootstrap resamples):

* per group (:func:`group_rates`): the base rate P(Y=1 | A=a), the selection rate
  P(Ŷ=1 | A=a), the true-positive rate P(Ŷ=1 | Y=1, A=a), the false-positive rate
  P(Ŷ=1 | Y=0, A=a) and the positive predictive value P(Y=1 | Ŷ=1, A=a);
* between groups, each a gap ``max_a − min_a`` (0 when the criterion holds exactly):
  :func:`demographic_parity_difference` (definition 12.2: equal selection rates),
  :func:`demographic_parity_ratio` (``min / max`` of the selection rates, 1 when it holds;
  the "four-fifths rule" asks for ≥ 0.8), :func:`equal_opportunity_difference`
  (definition 12.3: equal TPRs), :func:`equalized_odds_difference` (the larger of the TPR and
  the FPR gaps: equal TPRs *and* equal FPRs) and :func:`predictive_parity_difference` (equal
  PPVs, the "égalité prédictive" of exercise 12.5);
* :func:`bootstrap_intervals`: seeded percentile bootstrap intervals of all of these.

The conventions are fairlearn's (``method="between_groups"``, ``agg="worst_case"``), and the
tests check equality with it. One difference: a rate whose denominator is empty in some
group (a TPR in a group without positives, an FPR without negatives, a PPV where nobody is
selected) is undefined, and the gap that needs it raises a ``ValueError`` naming the group
instead of silently counting the rate as 0. Inputs are 1-D arrays of equal length: ``y_true``
and ``y_pred`` binary (0/1 or booleans: threshold scores first), ``group`` any labels
without missing values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: column order of the confusion counts
TP, FP, FN, TN = range(4)


@dataclass(frozen=True)
class GroupCounts:
    """The groups (sorted labels) and their confusion counts, shape ``(G, 4)``: TP, FP, FN, TN."""

    groups: np.ndarray
    counts: np.ndarray


def _binary(name: str, values: object) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be binary (0/1), got dtype {a.dtype}")
    bad = ~np.isin(a, (0, 1))
    if bad.any():
        found = np.unique(a[bad])[:5]
        hint = " (scores? threshold them first)" if name == "y_pred" else ""
        raise ValueError(f"{name} must be binary (0/1); found {found.tolist()}{hint}")
    return a.astype(np.int64)


def confusion_by_group(y_true: object, y_pred: object, group: object) -> GroupCounts:
    """Confusion counts per group, after checking the inputs (see the module docstring)."""
    yt, yp = _binary("y_true", y_true), _binary("y_pred", y_pred)
    g = np.asarray(group)
    if g.ndim != 1:
        raise ValueError(f"group must be 1-D, got shape {g.shape}")
    if not (len(yt) == len(yp) == len(g)):
        raise ValueError(f"y_true, y_pred and group must have the same length, got {len(yt)}, {len(yp)}, {len(g)}")
    if len(g) == 0:
        raise ValueError("empty input: no examples")
    if pd.isna(g).any():
        raise ValueError("group has missing values (NaN / None)")
    groups, idx = np.unique(g, return_inverse=True)
    # cell index as TP, FP, FN, TN: y=1,ŷ=1 → 0; y=0,ŷ=1 → 1; y=1,ŷ=0 → 2; y=0,ŷ=0 → 3
    cell = np.where(yp == 1, np.where(yt == 1, TP, FP), np.where(yt == 1, FN, TN))
    counts = np.zeros((len(groups), 4), dtype=np.int64)
    np.add.at(counts, (idx, cell), 1)
    return GroupCounts(groups, counts)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def rates_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group rates from counts ``(..., G, 4)``; NaN where a denominator is 0."""
    c = np.asarray(counts, dtype=float)
    tp, fp, fn, tn = c[..., TP], c[..., FP], c[..., FN], c[..., TN]
    n = tp + fp + fn + tn
    return {
        "base_rate": _ratio(tp + fn, n),
        "selection_rate": _ratio(tp + fp, n),  # P(Ŷ=1 | A=a), definition 12.2
        "tpr": _ratio(tp, tp + fn),  # P(Ŷ=1 | Y=1, A=a), definition 12.3
        "fpr": _ratio(fp, fp + tn),  # P(Ŷ=1 | Y=0, A=a)
        "ppv": _ratio(tp, tp + fp),  # P(Y=1 | Ŷ=1, A=a), predictive parity (exercise 12.5)
    }


def group_rates(y_true: object, y_pred: object, group: object) -> pd.DataFrame:
    """One row per group (index: the group label): ``n``, ``positives``, ``base_rate``,
    ``selection_rate``, ``tpr``, ``fpr``, ``ppv`` (NaN where undefined)."""
    gc = confusion_by_group(y_true, y_pred, group)
    df = pd.DataFrame(rates_from_counts(gc.counts), index=pd.Index(gc.groups, name="group"))
    df.insert(0, "positives", gc.counts[:, TP] + gc.counts[:, FN])
    df.insert(0, "n", gc.counts.sum(1))
    return df


#: what each rate needs, for the error message of an undefined one
_NEEDS = {"tpr": "no positive examples (y_true = 1)", "fpr": "no negative examples (y_true = 0)",
          "ppv": "no selected examples (y_pred = 1)", "selection_rate": "no examples"}


def _defined(rates: dict[str, np.ndarray], name: str, groups: np.ndarray) -> np.ndarray:
    r = rates[name]
    missing = np.isnan(r)
    if missing.any():
        bad = [g.item() if hasattr(g, "item") else g for g in groups[missing]]
        raise ValueError(f"{name.upper() if name != 'selection_rate' else name} is undefined for group(s) "
                         f"{bad}: {_NEEDS[name]}")
    return r


def _gap(r: np.ndarray) -> np.ndarray:
    """``max_a r_a − min_a r_a`` over the last axis (NaN propagates)."""
    return r.max(-1) - r.min(-1)


# the gaps from rates (vectorised over leading axes: used by the bootstrap too)
def _dp_diff(r: dict[str, np.ndarray]) -> np.ndarray:
    return _gap(r["selection_rate"])


def _dp_ratio(r: dict[str, np.ndarray]) -> np.ndarray:
    s = r["selection_rate"]
    return _ratio(s.min(-1), s.max(-1))


def _eo_diff(r: dict[str, np.ndarray]) -> np.ndarray:
    return _gap(r["tpr"])


def _eodds_diff(r: dict[str, np.ndarray]) -> np.ndarray:
    return np.maximum(_gap(r["tpr"]), _gap(r["fpr"]))


def _pp_diff(r: dict[str, np.ndarray]) -> np.ndarray:
    return _gap(r["ppv"])


#: metric name → (rates it needs, function of the rates)
METRICS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, np.ndarray]], np.ndarray]]] = {
    "demographic_parity_difference": (("selection_rate",), _dp_diff),
    "demographic_parity_ratio": (("selection_rate",), _dp_ratio),
    "equal_opportunity_difference": (("tpr",), _eo_diff),
    "equalized_odds_difference": (("tpr", "fpr"), _eodds_diff),
    "predictive_parity_difference": (("ppv",), _pp_diff),
}


def _metric(name: str, y_true: object, y_pred: object, group: object) -> float:
    gc = confusion_by_group(y_true, y_pred, group)
    rates = rates_from_counts(gc.counts)
    needs, fn = METRICS[name]
    for k in needs:
        _defined(rates, k, gc.groups)
    return float(fn(rates))


def demographic_parity_difference(y_true: object, y_pred: object, group: object) -> float:
    """``max_a P(Ŷ=1|A=a) − min_a P(Ŷ=1|A=a)``: 0 under demographic parity (definition 12.2)."""
    return _metric("demographic_parity_difference", y_true, y_pred, group)


def demographic_parity_ratio(y_true: object, y_pred: object, group: object) -> float:
    """``min_a P(Ŷ=1|A=a) / max_a P(Ŷ=1|A=a)``: 1 under demographic parity (definition 12.2);
    NaN when no group selects anybody (as fairlearn)."""
    return _metric("demographic_parity_ratio", y_true, y_pred, group)


def equal_opportunity_difference(y_true: object, y_pred: object, group: object) -> float:
    """``max_a TPR_a − min_a TPR_a``: 0 under equal opportunity (definition 12.3). Raises if a
    group has no positive example."""
    return _metric("equal_opportunity_difference", y_true, y_pred, group)


def equalized_odds_difference(y_true: object, y_pred: object, group: object) -> float:
    """``max(TPR gap, FPR gap)``: 0 when both the TPRs and the FPRs are equal across groups."""
    return _metric("equalized_odds_difference", y_true, y_pred, group)


def predictive_parity_difference(y_true: object, y_pred: object, group: object) -> float:
    """``max_a PPV_a − min_a PPV_a``, PPV = P(Y=1 | Ŷ=1, A=a): 0 under predictive parity."""
    return _metric("predictive_parity_difference", y_true, y_pred, group)


def fairness_report(y_true: object, y_pred: object, group: object) -> dict[str, float]:
    """Every metric of :data:`METRICS` plus the accuracy; an undefined one is NaN here (the
    single-metric functions raise instead)."""
    gc = confusion_by_group(y_true, y_pred, group)
    rates = rates_from_counts(gc.counts)
    c = gc.counts.sum(0)
    out = {"accuracy": float((c[TP] + c[TN]) / c.sum())}
    for name, (_, fn) in METRICS.items():
        out[name] = float(fn(rates))
    return out


def bootstrap_intervals(y_true: object, y_pred: object, group: object, *,
                        metrics: Sequence[str] | None = None, n_boot: int = 1000,
                        level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Percentile bootstrap intervals of the between-group metrics, one row per metric.

    Resampling is stratified by group (each group keeps its size, as in a design where the
    group sizes are fixed) and with replacement within the group. A metric depends on a
    resample only through the group's confusion counts, and the counts of ``n_a`` rows drawn
    with replacement from a group are multinomial(``n_a``, that group's cell frequencies):
    so each resample draws those counts directly (the same distribution as resampling rows,
    at a cost independent of n). The interval is ``[q_{(1−level)/2}, q_{(1+level)/2}]`` of the
    resampled values. Resamples where a metric is undefined (a small group that drew no
    positive) are left out and counted in ``n_undefined``. Seeded: the same ``seed`` gives
    the same intervals. Columns: ``metric``, ``estimate``, ``low``, ``high``, ``level``,
    ``n_boot``, ``n_undefined``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    names = list(metrics) if metrics is not None else list(METRICS)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    gc = confusion_by_group(y_true, y_pred, group)
    rates = rates_from_counts(gc.counts)
    for m in names:  # the point estimates must exist
        for k in METRICS[m][0]:
            _defined(rates, k, gc.groups)
    rng = np.random.default_rng(seed)
    n_g = gc.counts.sum(1)
    boot = np.stack([rng.multinomial(n, c / n, size=n_boot) for n, c in zip(n_g, gc.counts, strict=True)],
                    axis=1)  # (n_boot, G, 4)
    brates = rates_from_counts(boot)
    alpha = (1 - level) / 2
    rows = []
    for m in names:
        fn = METRICS[m][1]
        vals = fn(brates)
        ok = ~np.isnan(vals)
        lo, hi = np.quantile(vals[ok], [alpha, 1 - alpha]) if ok.any() else (np.nan, np.nan)
        rows.append({"metric": m, "estimate": float(fn(rates)), "low": float(lo), "high": float(hi),
                     "level": level, "n_boot": n_boot, "n_undefined": int((~ok).sum())})
    return pd.DataFrame(rows)
