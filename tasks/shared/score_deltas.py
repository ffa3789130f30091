"""Two runs' scores of the same tasks compared: AUROC and AUPRC, current - reference, with an
interval (the gate compares tonight with a reference run, the variant comparison each variant
with the best).

Scores are evaluated rows (`analysis/baseline_scores.parquet`: user_id, week_start, task,
y_true, y_score):
- **paired** when the same user-weeks were scored in both runs (at least `min_paired_share`
  of each run's rows, with the same label): the two scores of a user-week are compared on
  every user-level bootstrap resample of the common rows, and the interval of the difference
  is BCa (tasks/shared/bootstrap.py), as for the network's gain over its baseline;
- **unpaired** otherwise: each run's users are resampled on their own, the difference of the
  two metrics is taken resample by resample, and the interval is the percentile interval of
  those differences (independent samples: the variance of a difference is the sum).
An interval is None with fewer than three users of either class (bootstrap over clusters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stethoscope.tasks.shared.bootstrap import bca_interval, replicate
from stethoscope.tasks.shared.stats import RankedScores

SCORE_COLUMNS = ["user_id", "week_start", "task", "y_true", "y_score"]
PAIRED_METHOD = ("paired: BCa over user-level bootstrap resamples of the user-weeks scored "
                 "in both runs")
UNPAIRED_METHOD = ("unpaired: percentile interval of the difference of independent "
                   "user-level bootstrap resamples of each run")


@dataclass(frozen=True)
class ScoreDelta:
    """One metric of one task in two runs; `delta` = current - reference."""

    measure: str  # auroc, auprc
    task: str
    reference: float | None
    current: float | None
    delta: float | None
    ci: tuple[float, float] | None
    paired: bool | None  # None: not comparable (the task is scored in one run only)
    n_users: int | None
    detail: str


def score_deltas(reference: pd.DataFrame, current: pd.DataFrame, num_bootstrap: int,
                 alpha: float, min_paired_share: float,
                 rng: np.random.Generator) -> list[ScoreDelta]:
    """AUROC and AUPRC per task present in either run, current - reference."""
    deltas = []
    for task in sorted(set(reference["task"]) | set(current["task"])):
        ref = reference[reference["task"] == task]
        cur = current[current["task"] == task]
        if ref.empty or cur.empty:
            where = "tonight" if ref.empty else "in the reference run"
            deltas += [ScoreDelta(m, task, None, None, None, None, None, None,
                                  f"scored only {where}") for m in ("auroc", "auprc")]
            continue
        common = _common_rows(ref, cur)
        if len(common) / max(len(ref), len(cur)) >= min_paired_share:
            deltas += _paired(task, common, num_bootstrap, alpha, rng)
        else:
            deltas += _unpaired(task, ref, cur, num_bootstrap, alpha, rng)
    return deltas


def _common_rows(ref: pd.DataFrame, cur: pd.DataFrame) -> pd.DataFrame:
    """User-weeks scored in both runs with the same label: y_score_ref, y_score_cur."""
    keys = ["user_id", "week_start"] if _has_weeks(ref) and _has_weeks(cur) else ["user_id"]
    if keys == ["user_id"] and (ref["user_id"].duplicated().any()
                                or cur["user_id"].duplicated().any()):
        return ref.iloc[0:0].assign(y_score_ref=[], y_score_cur=[])  # no way to pair rows
    merged = ref[[*keys, "y_true", "y_score"]].merge(
        cur[[*keys, "y_true", "y_score"]], on=[*keys, "y_true"], suffixes=("_ref", "_cur"))
    return merged


def _has_weeks(frame: pd.DataFrame) -> bool:
    return "week_start" in frame.columns and frame["week_start"].notna().all()


def _user_index(users: pd.Series) -> np.ndarray:
    return pd.factorize(users)[0]


def _paired(task: str, rows: pd.DataFrame, num_bootstrap: int, alpha: float,
            rng: np.random.Generator) -> list[ScoreDelta]:
    y = rows["y_true"].to_numpy(dtype=bool)
    users = _user_index(rows["user_id"])
    ref, cur = RankedScores(rows["y_score_ref"].to_numpy(float), y), \
        RankedScores(rows["y_score_cur"].to_numpy(float), y)
    ref_users, cur_users = ref.sort(users), cur.sort(users)

    def statistic(counts: np.ndarray) -> np.ndarray:
        a = ref.groups(counts[:, ref_users])
        b = cur.groups(counts[:, cur_users])
        auroc_ref, auroc_cur = a.auroc(), b.auroc()
        auprc_ref, auprc_cur = a.average_precision(), b.average_precision()
        return np.vstack([auroc_ref, auroc_cur, auroc_cur - auroc_ref,
                          auprc_ref, auprc_cur, auprc_cur - auprc_ref])

    reps = replicate(statistic, int(users.max()) + 1, len(rows), num_bootstrap, rng)
    enough = _both_classes(users, y)
    deltas = []
    for base, measure in ((0, "auroc"), (3, "auprc")):
        delta = float(reps.observed[base + 2])
        ci = (bca_interval(delta, reps.draws[base + 2], reps.jackknife[base + 2], alpha)
              if enough and np.isfinite(delta) else None)
        deltas.append(ScoreDelta(
            measure, task, _finite(reps.observed[base]), _finite(reps.observed[base + 1]),
            _finite(delta), ci, True, int(users.max()) + 1,
            f"{len(rows):,} user-weeks scored in both runs"))
    return deltas


def _unpaired(task: str, ref_rows: pd.DataFrame, cur_rows: pd.DataFrame, num_bootstrap: int,
              alpha: float, rng: np.random.Generator) -> list[ScoreDelta]:
    draws, observed, enough = [], [], True
    for rows in (ref_rows, cur_rows):
        y = rows["y_true"].to_numpy(dtype=bool)
        users = _user_index(rows["user_id"])
        ranked = RankedScores(rows["y_score"].to_numpy(float), y)
        ranked_users = ranked.sort(users)

        def statistic(counts: np.ndarray, ranked: RankedScores = ranked,
                      ranked_users: np.ndarray = ranked_users) -> np.ndarray:
            groups = ranked.groups(counts[:, ranked_users])
            return np.vstack([groups.auroc(), groups.average_precision()])

        reps = replicate(statistic, int(users.max()) + 1, len(rows), num_bootstrap, rng,
                         max_groups=2)
        draws.append(reps.draws)
        observed.append(reps.observed)
        enough = enough and _both_classes(users, y)
    deltas = []
    for index, measure in ((0, "auroc"), (1, "auprc")):
        delta = float(observed[1][index] - observed[0][index])
        diff = draws[1][index] - draws[0][index]
        diff = diff[np.isfinite(diff)]
        ci = None
        if enough and np.isfinite(delta) and diff.size >= 0.9 * num_bootstrap:
            low, high = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
            ci = (float(low), float(high))
        deltas.append(ScoreDelta(
            measure, task, _finite(observed[0][index]), _finite(observed[1][index]),
            _finite(delta), ci, False, int(cur_rows["user_id"].nunique()),
            f"{len(ref_rows):,} user-weeks in the reference run, {len(cur_rows):,} in this one"))
    return deltas


def _both_classes(users: np.ndarray, y: np.ndarray, at_least: int = 3) -> bool:
    """Enough users of each class for a bootstrap interval (tasks/shared/bootstrap.py)."""
    return min(len(np.unique(users[y])), len(np.unique(users[~y]))) >= at_least


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
