"""Model regressions: this run's model against the reference run's, each change with its evidence.

Scores (AUROC and AUPRC per task) come from each run's evaluated rows
(`analysis/baseline_scores.parquet`: user_id, week_start, task, y_true, y_score):
- **paired** when the same user-weeks were scored in both runs (at least
  `min_paired_share` of each run's rows, with the same label): the two scores of a user-week
  are compared on every user-level bootstrap resample of the common rows, and the interval of
  the difference is BCa (tasks/shared/bootstrap.py), as for the network's gain over its
  baseline in the analyze stage;
- **unpaired** otherwise: each run's users are resampled on their own, the difference of the
  two metrics is taken resample by resample, and the interval is the percentile interval of
  those differences (independent samples: the variance of a difference is the sum).

The other measures have no sampling interval here, so they can only ever be a point
regression (a warning): a synthetic target's R² dropping by more than `r2_tolerance`; a layer's
share of dead or constant units rising by more than `dead_share_tolerance` (the units newly
dead are named); the gradient horizon shrinking below `horizon_tolerance` of the reference's;
a stratum flagged tonight that was not before (its flag already needs a corrected test).
Verdicts: `regression` when the interval excludes zero and the worsening exceeds the
tolerance, `regression_point` when only the point estimate does, else `improved` / `same`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stethoscope.schemas.summary import (
    ActivationsSection,
    GradientsSection,
    MetricChange,
    StratumMetrics,
    SyntheticResult,
)
from stethoscope.tasks.gate.config import GateConfig
from stethoscope.tasks.shared.bootstrap import bca_interval, replicate
from stethoscope.tasks.shared.stats import RankedScores

SCORE_COLUMNS = ["user_id", "week_start", "task", "y_true", "y_score"]
PAIRED_METHOD = ("paired: BCa over user-level bootstrap resamples of the user-weeks scored "
                 "in both runs")
UNPAIRED_METHOD = ("unpaired: percentile interval of the difference of independent "
                   "user-level bootstrap resamples of each run")


@dataclass(frozen=True)
class ModelFacts:
    """What a run's summary says about its model (tonight's from its stages' outcomes, the
    reference's from its summary.json)."""

    activations: ActivationsSection
    gradients: GradientsSection
    synthetic: list[SyntheticResult]
    strata: list[StratumMetrics]


def verdict(delta: float | None, ci: tuple[float, float] | None, tolerance: float,
            worse_when: str = "lower") -> str:
    """The verdict of a change: `regression` (the interval excludes no change and the point
    worsening exceeds `tolerance`), `regression_point` (only the point does), else `improved`,
    `same`; `not_comparable` without a delta."""
    if delta is None or not np.isfinite(delta):
        return "not_comparable"
    worsening = -delta if worse_when == "lower" else delta
    if worsening > tolerance:
        excludes_zero = ci is not None and (ci[1] < 0 if worse_when == "lower" else ci[0] > 0)
        return "regression" if excludes_zero else "regression_point"
    return "improved" if worsening < -tolerance else "same"


# --- scores -------------------------------------------------------------------------------


def score_changes(reference: pd.DataFrame, current: pd.DataFrame,
                  config: GateConfig) -> list[MetricChange]:
    """AUROC and AUPRC per task present in either run, current - reference."""
    rng = np.random.default_rng(config.seed)
    changes = []
    tasks = sorted(set(reference["task"]) | set(current["task"]))
    for task in tasks:
        ref = reference[reference["task"] == task]
        cur = current[current["task"] == task]
        if ref.empty or cur.empty:
            for measure in ("auroc", "auprc"):
                changes.append(MetricChange(
                    measure=measure, subject=task, reference=None, current=None, delta=None,
                    verdict="not_comparable",
                    detail="scored only " + ("tonight" if ref.empty else "in the reference run")))
            continue
        common = _common_rows(ref, cur)
        share = len(common) / max(len(ref), len(cur))
        if share >= config.min_paired_share:
            changes += _paired(task, common, config, rng)
        else:
            changes += _unpaired(task, ref, cur, config, rng)
    return changes


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


def _paired(task: str, rows: pd.DataFrame, config: GateConfig,
            rng: np.random.Generator) -> list[MetricChange]:
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

    reps = replicate(statistic, int(users.max()) + 1, len(rows), config.num_bootstrap, rng)
    enough = _both_classes(users, y)
    changes = []
    for base, measure, tolerance in ((0, "auroc", config.auroc_tolerance),
                                     (3, "auprc", config.auprc_tolerance)):
        delta = float(reps.observed[base + 2])
        ci = (bca_interval(delta, reps.draws[base + 2], reps.jackknife[base + 2], config.alpha)
              if enough and np.isfinite(delta) else None)
        changes.append(MetricChange(
            measure=measure, subject=task, reference=_finite(reps.observed[base]),
            current=_finite(reps.observed[base + 1]), delta=_finite(delta), delta_ci=ci,
            paired=True, n_users=int(users.max()) + 1, tolerance=tolerance,
            verdict=verdict(_finite(delta), ci, tolerance),
            detail=f"{len(rows):,} user-weeks scored in both runs"))
    return changes


def _unpaired(task: str, ref_rows: pd.DataFrame, cur_rows: pd.DataFrame, config: GateConfig,
              rng: np.random.Generator) -> list[MetricChange]:
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

        reps = replicate(statistic, int(users.max()) + 1, len(rows), config.num_bootstrap, rng,
                         max_groups=2)
        draws.append(reps.draws)
        observed.append(reps.observed)
        enough = enough and _both_classes(users, y)
    changes = []
    for index, measure, tolerance in ((0, "auroc", config.auroc_tolerance),
                                      (1, "auprc", config.auprc_tolerance)):
        delta = float(observed[1][index] - observed[0][index])
        diff = draws[1][index] - draws[0][index]
        diff = diff[np.isfinite(diff)]
        ci = None
        if enough and np.isfinite(delta) and diff.size >= 0.9 * config.num_bootstrap:
            low, high = np.quantile(diff, [config.alpha / 2, 1 - config.alpha / 2])
            ci = (float(low), float(high))
        changes.append(MetricChange(
            measure=measure, subject=task, reference=_finite(observed[0][index]),
            current=_finite(observed[1][index]), delta=_finite(delta), delta_ci=ci,
            paired=False, n_users=int(cur_rows["user_id"].nunique()), tolerance=tolerance,
            verdict=verdict(_finite(delta), ci, tolerance),
            detail=f"{len(ref_rows):,} user-weeks in the reference run, {len(cur_rows):,} tonight"))
    return changes


def _both_classes(users: np.ndarray, y: np.ndarray, at_least: int = 3) -> bool:
    """Enough users of each class for a bootstrap interval (tasks/shared/bootstrap.py)."""
    return min(len(np.unique(users[y])), len(np.unique(users[~y]))) >= at_least


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


# --- the model's other measures -------------------------------------------------------------


def model_changes(reference: ModelFacts, current: ModelFacts,
                  config: GateConfig) -> list[MetricChange]:
    """Synthetic R², dead and constant units per layer, the gradient horizon, flagged strata."""
    return [*_synthetic(reference, current, config), *_units(reference, current, config),
            *_horizon(reference, current, config), *_strata(reference, current)]


def _synthetic(reference: ModelFacts, current: ModelFacts,
               config: GateConfig) -> list[MetricChange]:
    before = {r.target: r.r2 for r in reference.synthetic}
    changes = []
    for result in current.synthetic:
        if result.target not in before:
            continue
        ref, cur = before[result.target], result.r2
        delta = None if ref is None or cur is None else cur - ref
        changes.append(MetricChange(
            measure="synthetic_r2", subject=result.target, reference=ref, current=cur,
            delta=delta, tolerance=config.r2_tolerance,
            verdict=verdict(delta, None, config.r2_tolerance),
            detail="R² on validation users; no interval (one fit per run)"))
    return changes


def _units(reference: ModelFacts, current: ModelFacts,
           config: GateConfig) -> list[MetricChange]:
    before = {layer.name: layer for layer in reference.activations.layers}
    changes = []
    for layer in current.activations.layers:
        old = before.get(layer.name)
        if old is None or old.units != layer.units:
            continue  # a different architecture: units cannot be matched
        for measure, now, then in (("dead_fraction", layer.dead_units, old.dead_units),
                                   ("constant_fraction", layer.constant_units, old.constant_units)):
            new_units = sorted(set(now) - set(then))
            delta = (len(now) - len(then)) / layer.units
            change = verdict(delta, None, config.dead_share_tolerance, worse_when="higher")
            if change == "regression_point" and not new_units:
                change = "same"
            listed = ", ".join(map(str, new_units[:12])) + (" …" if len(new_units) > 12 else "")
            changes.append(MetricChange(
                measure=measure, subject=layer.name, reference=len(then) / layer.units,
                current=len(now) / layer.units, delta=delta,
                tolerance=config.dead_share_tolerance, verdict=change,
                detail=(f"newly {measure.split('_')[0]}: units {listed}" if new_units
                        else f"no unit newly {measure.split('_')[0]}")))
    return changes


def _horizon(reference: ModelFacts, current: ModelFacts,
             config: GateConfig) -> list[MetricChange]:
    ref, cur = reference.gradients.horizon_hours, current.gradients.horizon_hours
    if ref is None or cur is None or reference.gradients.output_layer != current.gradients.output_layer:
        return []
    # relative: a horizon below `horizon_tolerance` of the reference's is the regression
    relative = cur / ref - 1 if ref > 0 else 0.0
    change = verdict(relative, None, 1 - config.horizon_tolerance)
    return [MetricChange(
        measure="horizon_hours", subject=current.gradients.output_layer or "", reference=ref,
        current=cur, delta=cur - ref, tolerance=1 - config.horizon_tolerance, verdict=change,
        detail=f"{relative:+.0%} of the reference's horizon")]


def _strata(reference: ModelFacts, current: ModelFacts) -> list[MetricChange]:
    flagged_before = {_stratum_key(s) for s in reference.strata if s.flagged}
    tested_before = {_stratum_key(s) for s in reference.strata}
    changes = []
    for stratum in current.strata:
        key = _stratum_key(stratum)
        if stratum.flagged and key not in flagged_before:
            changes.append(MetricChange(
                measure="flagged_stratum", subject=key, reference=None,
                current=stratum.delta_vs_rest, delta=None, delta_ci=stratum.delta_ci,
                verdict="regression_point",
                detail=("flagged tonight (AUROC vs the rest, corrected test), not in the "
                        "reference run" if key in tested_before
                        else "flagged tonight; not tested in the reference run")))
    return changes


def _stratum_key(stratum: StratumMetrics) -> str:
    return f"{stratum.column}={stratum.value} · {stratum.task}"
