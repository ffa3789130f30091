"""What the analyze stage's tables say in summary.json: findings and summary records.

`findings_of` reads the task, strata and loss-pattern tables and raises NO_PREDICTIONS,
TASK_NOT_EVALUABLE, BASELINE_NO_METADATA, BASELINE_UNAVAILABLE, BASELINE_AT_CHANCE,
METADATA_DOMINATED, UNDERPOWERED, WEAK_STRATUM, UNDERPOWERED_STRATUM and LOSS_PATTERN, each
with a message and a recommendation. `tasks/analyze/records.py` turns the tables into the
records of the summary's predictions section.

Evidence before verdicts: a warning states a claim the data support, an interval or a
corrected test that excludes "no difference" (docs/architecture.md §7.3):
- WEAK_STRATUM: the permutation p-value, adjusted across strata and tasks, is below alpha and
  the stratum is the worse side;
- METADATA_DOMINATED: the baseline beats chance (its interval lies above 0.5), and the upper
  end of the network's gain over it is below `min_gain_over_baseline`, or the lower end of
  the correlation of their scores reaches `max_correlation_with_baseline`.
Where the data cannot tell, the finding is UNDERPOWERED (info) with the effect the data could
have detected, within the AUROC's range; a baseline at or below chance is said so
(BASELINE_AT_CHANCE, info) and never used to call the network dominated. A message names the
counts behind its numbers: user-weeks, users, positives.
"""

from __future__ import annotations

import pandas as pd

from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.summary import Finding
from stethoscope.tasks.analyze.config import NO_METADATA, AnalyzeConfig

STAGE = "analyze"
CHANCE = 0.5


def findings_of(tasks: pd.DataFrame, strata: pd.DataFrame, patterns: pd.DataFrame,
                config: AnalyzeConfig) -> list[Finding]:
    """Every finding of an analysis, from its corrected tables (see `analyze_frame`)."""
    if tasks.empty:
        return [Finding(
            stage=STAGE, severity="info", code=FindingCode.NO_PREDICTIONS,
            message="predictions.parquet holds no rows: there is nothing to analyse (a cohort "
                    "without labels trains on synthetic targets only).",
            recommendation="Add labels.parquet to the cohort to train and analyse condition "
                           "predictions.")]
    findings = [f for _, t in tasks.iterrows() for f in _task_findings(t, config)]
    if (tasks["baseline_fit"] == NO_METADATA).any():
        findings.append(_no_metadata(tasks))
    # astype(bool): a table without strata has object columns, which [] would read as names
    findings += [_weak_stratum(s) for _, s in strata[strata["flagged"].astype(bool)].iterrows()]
    for (task_name, column), group in strata[strata["underpowered"].astype(bool)].groupby(
            ["task", "column"], sort=False):
        findings.append(_underpowered_strata(task_name, column, group))
    findings += [_loss_pattern(p) for _, p in patterns[patterns["reported"]].iterrows()]
    return findings


def _task_findings(t: pd.Series, config: AnalyzeConfig) -> list[Finding]:
    if _optional(t["auroc"]) is None:
        return [Finding(
            stage=STAGE, severity="warning", code=FindingCode.TASK_NOT_EVALUABLE,
            message=f"task {t['task']}: {t['positives']} positives among {t['n']} evaluation "
                    "rows; AUROC is undefined.",
            recommendation="Evaluate on a split that holds both classes.")]
    findings = []
    if (_optional(t["auroc_ci_low"]) is None
            and min(t["positive_users"], t["negative_users"]) < config.min_class_users):
        findings.append(_underpowered_task(t, config))
    if t["baseline_fit"] == NO_METADATA:
        return findings  # one BASELINE_NO_METADATA finding for the table
    if t["baseline_fit"] == "none" or _optional(t["baseline_auroc"]) is None:
        return [*findings, Finding(
            stage=STAGE, severity="info", code=FindingCode.BASELINE_UNAVAILABLE,
            message=f"task {t['task']}: the metadata baseline could not be fitted (fewer than "
                    f"two evaluated users); whether the network leans on "
                    f"{t['baseline_features']} is unknown.",
            recommendation="Include train rows or more users in predictions.parquet.")]
    status = _baseline_status(t)
    if status == "at chance":
        return [*findings, _baseline_at_chance(t)]
    if findings:  # no interval for the network: nothing to compare with the baseline
        return findings
    if status == "undetermined":
        return [_underpowered_gain(t, config)]
    if dominated := _metadata_dominated(t, config):
        return [dominated]
    if _optional(t["gain_ci_low"]) is not None and t["gain_ci_low"] > 0:
        return []  # the network beats the baseline
    return [_underpowered_gain(t, config)]


def _baseline_status(t: pd.Series) -> str:
    """"informative" when the baseline's interval lies above chance; "at chance" when its
    AUROC is at or below 0.5 or its interval reaches 0.5; else "undetermined" (no interval)."""
    if t["baseline_auroc"] <= CHANCE:
        return "at chance"
    low = _optional(t["baseline_auroc_ci_low"])
    if low is None:
        return "undetermined"
    return "informative" if low > CHANCE else "at chance"


def _metadata_dominated(t: pd.Series, config: AnalyzeConfig) -> Finding | None:
    """METADATA_DOMINATED when the gain's upper end is below the margin or the correlation's
    lower end reaches the limit (the baseline beats chance: `_baseline_status`)."""
    reasons = []
    gain_high = _optional(t["gain_ci_high"])
    if gain_high is not None and gain_high < config.min_gain_over_baseline:
        reasons.append(f"its gain {t['gain_vs_baseline']:+.3f} "
                       f"{_ci(t['gain_ci_low'], t['gain_ci_high'], '+.3f')} over the baseline "
                       f"stays below {config.min_gain_over_baseline:+.3f}")
    corr_low = _optional(t["corr_ci_low"])
    if corr_low is not None and corr_low >= config.max_correlation_with_baseline:
        reasons.append(f"the {config.correlation} correlation of their scores is "
                       f"{t['corr_with_baseline']:.3f} {_ci(t['corr_ci_low'], t['corr_ci_high'])}"
                       f", at least {config.max_correlation_with_baseline:g}")
    if not reasons:
        return None
    features = t["baseline_features"]
    return Finding(
        stage=STAGE, severity="warning", code=FindingCode.METADATA_DOMINATED,
        message=f"task {t['task']}: network AUROC {_auroc(t, 'auroc')} vs "
                f"{_auroc(t, 'baseline_auroc')} for a logistic regression on {features}; "
                + "; ".join(reasons) + f" ({_counts(t)}).",
        recommendation=f"The network adds little beyond {features}: check that the sensor "
                       "channels reach the output (gradient audit), train once without the "
                       "metadata input, and check whether the labels are a proxy for age.")


def _baseline_at_chance(t: pd.Series) -> Finding:
    below = t["baseline_auroc"] < CHANCE
    cross_fit = (" A baseline cross-fitted on few positives ranks each left-out positive with "
                 "a model fitted without it, which drags its AUROC below 0.5."
                 if below and t["baseline_fit"] == "cross-fit" else "")
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.BASELINE_AT_CHANCE,
        message=f"task {t['task']}: the metadata baseline (logistic regression on "
                f"{t['baseline_features']}, {t['baseline_fit']}) scores AUROC "
                f"{_auroc(t, 'baseline_auroc')}, {'below' if below else 'not above'} chance "
                f"({_counts(t)}): {t['baseline_features']} alone do not predict {t['task']} "
                "here, so the baseline is no yardstick and the network is not judged against "
                f"it (network AUROC {_auroc(t, 'auroc')})." + cross_fit,
        recommendation="Nothing to fix in the network. To compare it with the metadata, give "
                       "the predictions table train rows (split = train) with both classes, "
                       "or evaluate more users.")


def _underpowered_task(t: pd.Series, config: AnalyzeConfig) -> Finding:
    detectable = _optional(t["min_detectable_auroc"])
    could = (f"an AUROC of {detectable:.2f} or more would have been told apart from chance"
             if detectable is not None else
             "no AUROC up to 1.0 would have been told apart from chance reliably")
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.UNDERPOWERED,
        message=f"task {t['task']}: {_counts(t)}: too few users of a class for an interval "
                f"(fewer than {config.min_class_users} with and without the condition), so its "
                f"AUROC {t['auroc']:.3f} is no evidence either way and it is not compared with "
                f"the baseline; {could} ({config.power:.0%} power).",
        recommendation="Evaluate more users with and without the condition (the test split of "
                       "a larger cohort) before reading this task's metrics.")


def _underpowered_gain(t: pd.Series, config: AnalyzeConfig) -> Finding:
    detectable = _optional(t["min_detectable_gain"])
    room = 1 - t["baseline_auroc"]
    if detectable is not None:
        could = (f"a gain of {detectable:+.3f} or more (a network AUROC of "
                 f"{t['baseline_auroc'] + detectable:.3f}) would have been detected")
    else:
        could = (f"no gain up to a perfect network ({room:+.3f}) would have been detected "
                 "reliably")
    if _optional(t["baseline_auroc_ci_low"]) is None:
        what = (f"whether the metadata baseline ({_auroc(t, 'baseline_auroc')}) beats chance, "
                "so whether the network adds to it, is open")
    else:
        what = (f"the data cannot tell whether the network ({_auroc(t, 'auroc')}) beats the "
                f"metadata baseline ({_auroc(t, 'baseline_auroc')}): gain "
                f"{t['gain_vs_baseline']:+.3f} "
                f"{_ci(t['gain_ci_low'], t['gain_ci_high'], '+.3f')}")
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.UNDERPOWERED,
        message=f"task {t['task']}: {what} ({_counts(t)}); {could} with "
                f"{config.power:.0%} power.",
        recommendation=f"Not a verdict on the network: evaluate more users (positives above "
                       f"all) to learn whether it adds to {t['baseline_features']}.")


def _no_metadata(tasks: pd.DataFrame) -> Finding:
    names = ", ".join(tasks.loc[tasks["baseline_fit"] == NO_METADATA, "task"])
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.BASELINE_NO_METADATA,
        message=f"the metadata baseline was not fitted (tasks {names}): the predictions table "
                "has neither an age nor a sex column, the features of that logistic regression. "
                "Whether the network does better than age and sex alone is unknown, and "
                "METADATA_DOMINATED was not checked.",
        recommendation="Add age (years) and sex (F/M/U) per user-week to the predictions table, "
                       "e.g. joined from the cohort's users.parquet, to compare the network "
                       "with a model of them.")


def _weak_stratum(s: pd.Series) -> Finding:
    return Finding(
        stage=STAGE, severity="warning", code=FindingCode.WEAK_STRATUM,
        message=f"task {s['task']}, {s['column']}={s['value']}: AUROC {s['auroc']:.3f} "
                f"{_ci(s['auroc_ci_low'], s['auroc_ci_high'])} vs {s['rest_auroc']:.3f} "
                f"for the rest (delta {s['delta_vs_rest']:+.3f} "
                f"{_ci(s['delta_ci_low'], s['delta_ci_high'], '+.3f')}, adjusted "
                f"p={s['p_adjusted']:.3g}; {s['n']} user-weeks of {s['num_users']} users, "
                f"{s['positives']} positives).",
        recommendation=f"Look at this stratum's sensor data (sampling, missingness, noise) and "
                       f"week plots; consider preprocessing per {s['column']}, more training "
                       "data for it, or giving the model this information as an input.")


def _underpowered_strata(task_name: str, column: str, group: pd.DataFrame) -> Finding:
    parts = [f"{s['value']} (n={s['n']}, {s['num_users']} users, {s['positives']} positives; "
             f"{s['reason']}; {_detectable_drop(s)})" for _, s in group.iterrows()]
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.UNDERPOWERED_STRATUM,
        message=f"task {task_name}, {column}: {len(parts)} "
                f"{'stratum' if len(parts) == 1 else 'strata'} too small to test: "
                + "; ".join(parts) + ". Their AUROC is no evidence either way.",
        recommendation=f"Collect more weeks for these values of {column}, or merge them with "
                       "neighbouring values (coarser bands).")


def _detectable_drop(s: pd.Series) -> str:
    delta = _optional(s["min_detectable_delta"])
    if delta is not None:
        return f"smallest detectable drop {delta:.2f}"
    if min(s["positive_users"], s["negative_users"]) == 0:
        return "no drop detectable: a class is missing"
    return "no drop within the AUROC's range detectable"


def _loss_pattern(p: pd.Series) -> Finding:
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.LOSS_PATTERN,
        message=f"task {p['task']}: {p['column']}={p['value']} makes "
                f"{p['share_losses']:.0%} of the top losses but {p['share_correct']:.0%} of the "
                f"correct predictions ({_lift(p['lift'])}, q={p['q_value']:.3g}).",
        recommendation=f"A hypothesis, not a verdict: test it as a stratum (name "
                       f"'{p['column']}' in --strata or analyze.strata_columns) and look at the "
                       "week plots of these losses.")


# --- formatting ---------------------------------------------------------------------------


def _lift(lift: float) -> str:
    return f"lift {lift:.1f}" if lift != float("inf") else "none among the correct"


def _counts(t: pd.Series) -> str:
    return (f"{t['n']} user-weeks of {t['num_users']} users, {_plural(t['positives'], 'positive')}"
            f" from {_plural(t['positive_users'], 'user')}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _auroc(t: pd.Series, name: str) -> str:
    return f"{t[name]:.3f} {_ci(t[f'{name}_ci_low'], t[f'{name}_ci_high'])}"


def _ci(low: object, high: object, spec: str = ".3f") -> str:
    if _optional(low) is None or _optional(high) is None:
        return "[interval undefined]"
    return f"[{format(low, spec)}, {format(high, spec)}]"


def _optional(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)  # type: ignore[arg-type]


def _interval(low: float | None, high: float) -> tuple[float, float] | None:
    value = _optional(low)
    return None if value is None else (value, float(high))
