"""Model regressions: this run's model against the reference run's, each change with its evidence.

Scores (AUROC and AUPRC per task) come from each run's evaluated rows
(`analysis/baseline_scores.parquet`), compared paired by user-week where the same user-weeks
were scored in both runs and unpaired otherwise (tasks/shared/score_deltas.py).

A synthetic target's R² dropping by more than `r2_tolerance` gets an interval when both runs
recorded one (each a BCa interval over users, tasks/audits/synthetic/evidence.py; the two runs'
validation users are independent samples, so the difference's interval is the normal one with
the two standard errors, each from its interval's width); without, it is a point regression.
The other measures are measurements of the model with no sampling interval, so they can only
ever be a point regression (a warning): a layer's
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
from scipy import stats

from stethoscope.schemas.summary import (
    ActivationsSection,
    GradientsSection,
    MetricChange,
    StratumMetrics,
    SyntheticResult,
)
from stethoscope.tasks.gate.config import GateConfig
from stethoscope.tasks.shared.score_deltas import score_deltas


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
    """AUROC and AUPRC per task present in either run, current - reference, with verdicts."""
    tolerance = {"auroc": config.auroc_tolerance, "auprc": config.auprc_tolerance}
    return [MetricChange(
        measure=d.measure, subject=d.task, reference=d.reference, current=d.current,
        delta=d.delta, delta_ci=d.ci, paired=d.paired, n_users=d.n_users,
        tolerance=None if d.delta is None else tolerance[d.measure],
        verdict=verdict(d.delta, d.ci, tolerance[d.measure]), detail=d.detail)
        for d in score_deltas(reference, current, config.num_bootstrap, config.alpha,
                              config.min_paired_share, np.random.default_rng(config.seed))]


# --- the model's other measures -------------------------------------------------------------


def model_changes(reference: ModelFacts, current: ModelFacts,
                  config: GateConfig) -> list[MetricChange]:
    """Synthetic R², dead and constant units per layer, the gradient horizon, flagged strata."""
    return [*_synthetic(reference, current, config), *_units(reference, current, config),
            *_horizon(reference, current, config), *_strata(reference, current)]


def _synthetic(reference: ModelFacts, current: ModelFacts,
               config: GateConfig) -> list[MetricChange]:
    before = {r.target: r for r in reference.synthetic}
    changes = []
    for result in current.synthetic:
        if result.target not in before:
            continue
        ref, cur = before[result.target].r2, result.r2
        delta = None if ref is None or cur is None else cur - ref
        ci = _difference_interval(delta, before[result.target].r2_ci, result.r2_ci, config.alpha)
        changes.append(MetricChange(
            measure="synthetic_r2", subject=result.target, reference=ref, current=cur,
            delta=delta, delta_ci=ci, tolerance=config.r2_tolerance,
            verdict=verdict(delta, ci, config.r2_tolerance),
            detail=("R² on each run's validation users; the interval from the two runs' "
                    "intervals (independent samples)" if ci is not None else
                    "R² on validation users; no interval (a run without one)")))
    return changes


def _difference_interval(delta: float | None, reference: tuple[float, float] | None,
                         current: tuple[float, float] | None, alpha: float
                         ) -> tuple[float, float] | None:
    """Normal interval of current - reference from each run's interval (level 1 - alpha),
    taking each standard error as its interval's width / (2 z)."""
    if delta is None or reference is None or current is None:
        return None
    z = float(stats.norm.ppf(1 - alpha / 2))
    se = np.hypot(reference[1] - reference[0], current[1] - current[0]) / (2 * z)
    return (delta - z * se, delta + z * se)


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
