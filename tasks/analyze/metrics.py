"""The metrics of one task beside its AUROC, as statistics of weighted rows.

Every statistic here is a function of row weights [draws, rows] (row order of the task's
evaluation rows) returning one value per draw, so the user-level bootstrap of
`tasks/shared/stats.compare_task` gives it a BCa interval from the same resamples as the AUROC
(`task_statistics` gathers them):

- AUPRC (average precision, as scikit-learn computes it);
- Brier score: the weighted mean of (score - label)^2;
- expected calibration error (`ece`): rows in `calibration_bins` bins of equal size by score
  (quantiles: rare outcomes crowd their scores near 0, where equal-width bins would hold
  everything in one), ECE = sum over bins of (bin weight / total) * |observed rate - mean
  score|. It is biased upwards on few rows (noise in a bin's rate counts as miscalibration),
  so a perfectly calibrated network on 40 users does not score 0;
- operating points: sensitivity, specificity and PPV (and NPV) at thresholds fixed on the
  evaluated rows: the analysis's decision threshold, the highest threshold with sensitivity
  >= `target_sensitivity`, the lowest with specificity >= `target_specificity`, and 0.5.
  Choosing a threshold on the rows it is scored on flatters it; its interval holds the
  threshold fixed;
- the correlation of the network's scores with the baseline's (Pearson, or Pearson of the
  whole sample's ranks for "spearman").

`reliability_table` and `operating_points_table` are the tidy tables behind the reliability
diagram and the operating points of the report.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from stethoscope.tasks.shared.bootstrap import UNDEFINED, Estimate
from stethoscope.tasks.shared.stats import RankedScores, RowStatistic

CALIBRATION_COLUMNS = ["task", "bin", "score_low", "score_high", "n", "num_users", "positives",
                       "mean_score", "observed_rate", "observed_rate_ci_low",
                       "observed_rate_ci_high"]
OPERATING_POINT_METRICS = ("sensitivity", "specificity", "ppv", "npv")
OPERATING_POINT_COLUMNS = [
    "task", "point", "threshold", "n", "num_users", "positives", "tp", "fp", "fn", "tn",
    *(f"{m}{suffix}" for m in OPERATING_POINT_METRICS for suffix in ("", "_ci_low", "_ci_high")),
]


def estimate_columns(name: str, value: Estimate | None, value_key: str | None = None) -> dict:
    """Table columns of an estimate: `name` (or `value_key`), `name_ci_low`, `name_ci_high`;
    None where undefined."""
    value = value or UNDEFINED
    low, high = value.ci or (None, None)
    return {value_key or name: value.value, f"{name}_ci_low": low, f"{name}_ci_high": high}


def _per_draw(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1),
                        np.nan)


def brier(y: np.ndarray, scores: np.ndarray) -> RowStatistic:
    squared = (scores - y) ** 2
    return lambda w: _per_draw(w @ squared, w.sum(axis=1))


def task_statistics(y: np.ndarray, scores: np.ndarray, baseline: np.ndarray | None,
                    bins: np.ndarray, points: dict[str, float],
                    correlation: str) -> dict[str, RowStatistic]:
    """Weighted statistics bootstrapped beside the AUROC: AUPRC, Brier, ECE, the observed
    rate per calibration bin ("bin <b>"), the correlation with the baseline, and the metrics
    of each operating point ("<point>|<metric>")."""
    ranked = RankedScores(scores, y)
    extra = {
        "auprc": lambda w: ranked.groups(ranked.sort(w)).average_precision(),
        "brier": brier(y, scores),
        "ece": expected_calibration_error(y, scores, bins),
    }
    for b in np.unique(bins):
        extra[f"bin {b}"] = _observed_rate(y, bins == b)
    if baseline is not None and np.std(scores) > 0 and np.std(baseline) > 0:
        extra["correlation"] = weighted_correlation(scores, baseline, correlation)
    for point, threshold in points.items():
        for metric, function in operating_point_statistics(
                y, scores, threshold).items():
            extra[f"{point}|{metric}"] = function
    return extra


def weighted_correlation(a: np.ndarray, b: np.ndarray, kind: str) -> RowStatistic:
    """Pearson correlation of a and b (of their ranks in the whole sample for "spearman")
    under row weights, per draw."""
    if kind == "spearman":
        a, b = stats.rankdata(a), stats.rankdata(b)
    a, b = a - a.mean(), b - b.mean()  # centred once: better conditioned moments

    def correlation(w: np.ndarray) -> np.ndarray:
        total = w.sum(axis=1)
        mean_a, mean_b = w @ a / total, w @ b / total
        cov = w @ (a * b) / total - mean_a * mean_b
        var_a, var_b = w @ (a * a) / total - mean_a**2, w @ (b * b) / total - mean_b**2
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((var_a > 0) & (var_b > 0), cov / np.sqrt(var_a * var_b), np.nan)

    return correlation


# --- calibration --------------------------------------------------------------------------


def calibration_bins(scores: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin of each row: `num_bins` quantile bins of the scores (fewer when scores tie), each
    row by its score; ties stay in one bin."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, num_bins + 1)[1:-1]))
    return np.searchsorted(edges, scores, side="right")


def expected_calibration_error(y: np.ndarray, scores: np.ndarray,
                               bins: np.ndarray) -> RowStatistic:
    """ECE over the fixed bins `bins` (see `calibration_bins`), per draw of row weights."""
    members = np.zeros((len(bins), int(bins.max()) + 1))
    members[np.arange(len(bins)), bins] = 1.0
    gap = members * (y - scores)[:, None]  # [rows, bins]: label - score where the row is

    def ece(w: np.ndarray) -> np.ndarray:
        return _per_draw(np.abs(w @ gap).sum(axis=1), w.sum(axis=1))

    return ece


def _observed_rate(y: np.ndarray, in_bin: np.ndarray) -> RowStatistic:
    positive, member = (y * in_bin).astype(float), in_bin.astype(float)
    return lambda w: _per_draw(w @ positive, w @ member)


def reliability_table(task_name: str, y: np.ndarray, scores: np.ndarray, bins: np.ndarray,
                      user_index: np.ndarray, rates: dict[str, Estimate]) -> pd.DataFrame:
    """One row per calibration bin: its score range, counts, mean score and observed rate with
    its interval (`rates`: the "bin <b>" estimates of `task_statistics`)."""
    frame = pd.DataFrame({"bin": bins, "y": y, "score": scores, "user": user_index})
    table = frame.groupby("bin").agg(
        score_low=("score", "min"), score_high=("score", "max"), n=("y", "size"),
        num_users=("user", "nunique"), positives=("y", "sum"), mean_score=("score", "mean"),
        observed_rate=("y", "mean")).reset_index()
    intervals = [rates[f"bin {b}"].ci or (None, None) for b in table["bin"]]
    table["observed_rate_ci_low"] = [low for low, _ in intervals]
    table["observed_rate_ci_high"] = [high for _, high in intervals]
    return table.assign(task=task_name)[CALIBRATION_COLUMNS]


# --- operating points ---------------------------------------------------------------------


def operating_thresholds(scores: np.ndarray, y: np.ndarray, decision: float,
                         target_sensitivity: float, target_specificity: float
                         ) -> dict[str, float]:
    """Point name -> threshold (a row is called positive when its score >= the threshold);
    a point no threshold reaches is left out."""
    positives = np.sort(scores[y == 1])[::-1]
    negatives = np.sort(scores[y == 0])
    points = {"decision": decision}
    if positives.size:  # the k-th highest positive score calls k of them positive
        points[f"sensitivity {target_sensitivity:.2f}"] = float(
            positives[math.ceil(target_sensitivity * positives.size) - 1])
    if negatives.size:  # above the k-th lowest negative score, k of them are called negative
        kept = negatives[math.ceil(target_specificity * negatives.size) - 1]
        above = scores[scores > kept]
        points[f"specificity {target_specificity:.2f}"] = (
            float(above.min()) if above.size else math.inf)
    points["score 0.50"] = 0.5
    return {name: t for name, t in points.items() if math.isfinite(t)}  # inf calls none


def operating_point_statistics(y: np.ndarray, scores: np.ndarray,
                               threshold: float) -> dict[str, RowStatistic]:
    """Sensitivity, specificity, PPV and NPV at `threshold`, per draw of row weights."""
    called = scores >= threshold
    tp, fp = (called & (y == 1)).astype(float), (called & (y == 0)).astype(float)
    fn, tn = (~called & (y == 1)).astype(float), (~called & (y == 0)).astype(float)
    return {
        "sensitivity": lambda w: _per_draw(w @ tp, w @ (tp + fn)),
        "specificity": lambda w: _per_draw(w @ tn, w @ (tn + fp)),
        "ppv": lambda w: _per_draw(w @ tp, w @ (tp + fp)),
        "npv": lambda w: _per_draw(w @ tn, w @ (tn + fn)),
    }


def confusion_counts(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    called = scores >= threshold
    return {"tp": int((called & (y == 1)).sum()), "fp": int((called & (y == 0)).sum()),
            "fn": int((~called & (y == 1)).sum()), "tn": int((~called & (y == 0)).sum())}
