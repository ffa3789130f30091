"""What the analyze stage's tables say in summary.json: findings and summary records.

`findings_of` reads the task, strata and loss-pattern tables and raises NO_PREDICTIONS,
TASK_NOT_EVALUABLE, BASELINE_NO_METADATA, BASELINE_UNAVAILABLE, METADATA_DOMINATED,
WEAK_STRATUM, UNDERPOWERED_STRATUM and LOSS_PATTERN, each with a message and a
recommendation. `tasks/analyze/records.py` turns the tables into the records of the summary's
predictions section.
"""

from __future__ import annotations

import pandas as pd

from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.summary import Finding
from stethoscope.tasks.analyze.config import NO_METADATA, AnalyzeConfig

STAGE = "analyze"


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
        findings.append(_underpowered(task_name, column, group))
    findings += [_loss_pattern(p) for _, p in patterns[patterns["reported"]].iterrows()]
    return findings


def _task_findings(t: pd.Series, config: AnalyzeConfig) -> list[Finding]:
    if t["auroc"] is None or pd.isna(t["auroc"]):
        return [Finding(
            stage=STAGE, severity="warning", code=FindingCode.TASK_NOT_EVALUABLE,
            message=f"task {t['task']}: {t['positives']} positives among {t['n']} evaluation "
                    "rows; AUROC is undefined.",
            recommendation="Evaluate on a split that holds both classes.")]
    if t["baseline_fit"] == NO_METADATA:
        return []  # one BASELINE_NO_METADATA finding for the table
    features = t["baseline_features"]
    if t["baseline_fit"] == "none" or pd.isna(t["baseline_auroc"]):
        return [Finding(
            stage=STAGE, severity="info", code=FindingCode.BASELINE_UNAVAILABLE,
            message=f"task {t['task']}: the metadata baseline could not be fitted (fewer than "
                    f"two evaluated users); whether the network leans on {features} is unknown.",
            recommendation="Include train rows or more users in predictions.parquet.")]
    corr = t["corr_with_baseline"]
    too_close = corr is not None and not pd.isna(corr) and corr >= config.max_correlation_with_baseline
    not_better = not pd.isna(t["gain_p_value"]) and t["gain_p_value"] >= config.alpha
    if not (too_close or not_better):
        return []
    reasons = []
    if not_better:
        reasons.append(f"its gain {t['gain_vs_baseline']:+.3f} "
                       f"[{t['gain_ci_low']:+.3f}, {t['gain_ci_high']:+.3f}] over the baseline "
                       f"is not significant (p={t['gain_p_value']:.3g})")
    if too_close:
        reasons.append(f"the {config.correlation} correlation of their scores is {corr:.2f} "
                       f">= {config.max_correlation_with_baseline:g}")
    return [Finding(
        stage=STAGE, severity="warning", code=FindingCode.METADATA_DOMINATED,
        message=f"task {t['task']}: network AUROC {t['auroc']:.3f} vs {t['baseline_auroc']:.3f} "
                f"for a logistic regression on {features}; " + "; ".join(reasons) + ".",
        recommendation=f"The network adds little beyond {features}: check that the sensor "
                       "channels reach the output (gradient audit), train once without the "
                       "metadata input, and check whether the labels are a proxy for age.")]


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
                f"[{s['auroc_ci_low']:.3f}, {s['auroc_ci_high']:.3f}] vs {s['rest_auroc']:.3f} "
                f"for the rest (delta {s['delta_vs_rest']:+.3f} [{s['delta_ci_low']:+.3f}, "
                f"{s['delta_ci_high']:+.3f}], adjusted p={s['p_adjusted']:.3g}; "
                f"{s['n']} user-weeks of {s['num_users']} users).",
        recommendation=f"Look at this stratum's sensor data (sampling, missingness, noise) and "
                       f"week plots; consider preprocessing per {s['column']}, more training "
                       "data for it, or giving the model this information as an input.")


def _underpowered(task_name: str, column: str, group: pd.DataFrame) -> Finding:
    parts = [f"{s['value']} (n={s['n']}, {s['num_users']} users, {s['positives']} positives; "
             f"{s['reason']}; smallest detectable delta {s['min_detectable_delta']:.2f})"
             for _, s in group.iterrows()]
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.UNDERPOWERED_STRATUM,
        message=f"task {task_name}, {column}: {len(parts)} "
                f"{'stratum' if len(parts) == 1 else 'strata'} too small to test: "
                + "; ".join(parts) + ". Their AUROC is no evidence either way.",
        recommendation=f"Collect more weeks for these values of {column}, or merge them with "
                       "neighbouring values (coarser bands).")


def _loss_pattern(p: pd.Series) -> Finding:
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.LOSS_PATTERN,
        message=f"task {p['task']}: {p['column']}={p['value']} makes "
                f"{p['share_losses']:.0%} of the top losses but {p['share_correct']:.0%} of the "
                f"correct predictions (lift {p['lift']:.1f}, q={p['q_value']:.3g}).",
        recommendation=f"A hypothesis, not a verdict: test it as a stratum (name "
                       f"'{p['column']}' in --strata or analyze.strata_columns) and look at the "
                       "week plots of these losses.")


def _optional(value: float | None) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _interval(low: float | None, high: float) -> tuple[float, float] | None:
    value = _optional(low)
    return None if value is None else (value, float(high))
