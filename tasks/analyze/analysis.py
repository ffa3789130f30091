"""The analyze stage: what a network's predictions say beyond its AUROC (docs/architecture.md §1.1, §4.7).

It owns, per task, on the evaluation rows of a predictions table (`predictions.parquet` of
the train stage, or any table with user_id, task, y_true and y_score; rows of the evaluation
splits, every row when there is no split column), every metric with its counts (user-weeks,
users, positives) and a BCa interval from a bootstrap over users (weeks of one user stay
together; undefined when degenerate, `tasks/shared/bootstrap.py`):
1. AUROC, AUPRC, Brier score, the expected calibration error with a reliability diagram, ROC
   and precision-recall curves, and sensitivity / specificity / PPV at a few operating points;
2. a metadata baseline (logistic regression on age and sex, or the one of them present) and
   whether the network beats it: `METADATA_DOMINATED` only with evidence (a baseline above
   chance, and an interval of the gain below a margin or of the score correlation above a
   limit); a baseline at or below chance says so (`BASELINE_AT_CHANCE`), what the data cannot
   tell is `UNDERPOWERED` with the effect it could have detected; a table with neither
   metadata column says so (`BASELINE_NO_METADATA`);
3. the most egregious false positives/negatives and the most confident correct predictions;
4. loss patterns: metadata values over-represented among the largest losses (`LOSS_PATTERN`);
5. strata (by default device generation, sex, age band and the extra columns that are
   groupings; or the ones named): AUROC vs the rest of the cohort with an interval and a
   permutation p-value, corrected across strata and tasks (`WEAK_STRATUM`); a stratum too
   small to test is reported as such (`UNDERPOWERED_STRATUM`, with the drop it could have
   detected within the AUROC's range), never passed.

`analyze_frame` is the pure core (a DataFrame in, tables and findings out); `analyze_predictions`
reads the file, writes tables and plots under `out_dir`; `analyze_task` is the Prefect shell.
The parts live in private modules: the predictions contract in `tasks/analyze/inputs.py`,
metadata labels and the baseline in `tasks/analyze/metadata.py`, strata in
`tasks/analyze/strata.py`, loss patterns and top rows in `tasks/analyze/losses.py`,
calibration, operating points and the other weighted metrics in `tasks/analyze/metrics.py`,
findings in `tasks/analyze/findings.py`, summary records in `tasks/analyze/records.py`, the
statistics in `tasks/shared/stats.py` and `tasks/shared/bootstrap.py`, the plots in
`tasks/analyze/plots.py`.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from stethoscope.schemas.atomic import write_json_atomic, write_parquet_atomic
from stethoscope.tasks.analyze import metrics, plots
from stethoscope.tasks.analyze.config import (
    NO_METADATA,
    AnalysisResult,
    AnalysisTables,
    AnalyzeConfig,
)
from stethoscope.tasks.analyze.findings import findings_of
from stethoscope.tasks.analyze.inputs import evaluation_rows, read_predictions
from stethoscope.tasks.analyze.losses import (
    LOSS_PATTERN_COLUMNS,
    TOP_COLUMNS,
    correct_patterns,
    decision_threshold,
    loss_patterns,
    top_predictions,
)
from stethoscope.tasks.analyze.metadata import (
    baseline_features,
    fit_baseline,
    metadata_categories,
    with_default_strata,
)
from stethoscope.tasks.analyze.metrics import estimate_columns
from stethoscope.tasks.analyze.records import stratum_records, task_records, top_loss_records
from stethoscope.tasks.analyze.strata import (
    STRATA_COLUMNS,
    correct_strata,
    strata_table,
    stratum_definitions,
)
from stethoscope.tasks.shared import stats as _stats
from stethoscope.tasks.shared.bootstrap import UNDEFINED, Estimate


def analyze_frame(frame: pd.DataFrame, config: AnalyzeConfig) -> AnalysisTables:
    """The whole analysis of a normalised predictions frame (see `read_predictions`)."""
    config = with_default_strata(frame, config)
    evaluation = frame[evaluation_rows(frame, config)].copy()
    evaluation["baseline_score"], fits = fit_baseline(frame, config)
    features = " and ".join(baseline_features(frame)) or None
    categories = metadata_categories(evaluation, config)
    inputs = [_task_input(task_name, rows, categories.loc[rows.index], fits[task_name],
                          features, config)
              for task_name, rows in evaluation.groupby("task", sort=True)]
    num_tests = sum(s["members"] is not None for t in inputs for s in t.strata)
    permutations = _stats.permutations_needed(num_tests, config.alpha, config.num_permutations)
    per_task = [_analyze_one_task(t, permutations, config) for t in inputs]
    tasks = pd.DataFrame([r.metrics for r in per_task], columns=_TASK_COLUMNS)
    strata = correct_strata(_concat([r.strata for r in per_task], STRATA_COLUMNS), config)
    patterns = correct_patterns(
        _concat([r.patterns for r in per_task], LOSS_PATTERN_COLUMNS), config)
    top = _concat([r.top for r in per_task], TOP_COLUMNS)
    baseline = evaluation[[c for c in _BASELINE_COLUMNS if c in evaluation.columns]
                          ].reset_index(drop=True)
    return AnalysisTables(
        tasks, strata, patterns, top, baseline,
        calibration=_concat([r.calibration for r in per_task], metrics.CALIBRATION_COLUMNS),
        operating_points=_concat([r.operating_points for r in per_task],
                                 metrics.OPERATING_POINT_COLUMNS),
        findings=findings_of(tasks, strata, patterns, config))


_BASELINE_COLUMNS = ["user_id", "week_start", "task", "split", "y_true", "y_score",
                     "baseline_score"]


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Per-task tables stacked; an empty table with its columns when there is no task."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


@dataclass(frozen=True)
class _TaskInput:
    name: str
    rows: pd.DataFrame  # evaluation rows of the task, with baseline_score
    categories: pd.DataFrame  # metadata labels of these rows
    user_index: np.ndarray  # row -> user number
    strata: list[dict]  # see stratum_definitions
    fit: str  # how the baseline was fitted: train, cross-fit, none, no-metadata
    features: str | None  # what it was fitted on: "age and sex", "age", "sex"


@dataclass(frozen=True)
class _TaskTables:
    metrics: dict
    strata: pd.DataFrame
    patterns: pd.DataFrame
    top: pd.DataFrame
    calibration: pd.DataFrame
    operating_points: pd.DataFrame


def _task_input(name: str, rows: pd.DataFrame, categories: pd.DataFrame, fit: str,
                features: str | None, config: AnalyzeConfig) -> _TaskInput:
    user_index, users = pd.factorize(rows["user_id"])
    strata = stratum_definitions(rows, categories, user_index, len(users), config)
    return _TaskInput(name, rows, categories, user_index, strata, fit, features)


def _analyze_one_task(t: _TaskInput, num_permutations: int, config: AnalyzeConfig) -> _TaskTables:
    y, scores = t.rows["y_true"].to_numpy(), t.rows["y_score"].to_numpy()
    baseline = None if t.fit in ("none", NO_METADATA) else t.rows["baseline_score"].to_numpy()
    # One random stream per task, independent of which other tasks are present.
    rng = np.random.default_rng([config.seed, zlib.crc32(t.name.encode())])
    resampling = _stats.Resampling(config.num_bootstrap, num_permutations, config.alpha, rng,
                                   config.max_undefined_resamples, config.min_class_users)
    threshold = decision_threshold(scores, y, config.decision_threshold)
    bins = metrics.calibration_bins(scores, config.calibration_bins)
    points = metrics.operating_thresholds(scores, y, threshold, config.target_sensitivity,
                                          config.target_specificity)
    extra = metrics.task_statistics(y, scores, baseline, bins, points, config.correlation)
    comparison = _stats.compare_task(scores, y, t.user_index, baseline,
                                     [(s["mask"], s["members"]) for s in t.strata], resampling,
                                     extra)
    return _TaskTables(
        metrics=_task_metrics(t, comparison, config),
        strata=strata_table(t.name, t.strata, comparison, config),
        patterns=loss_patterns(t.name, t.rows, t.categories, scores >= threshold, config),
        top=top_predictions(t.name, t.rows, scores >= threshold, config.top_k),
        calibration=metrics.reliability_table(t.name, y, scores, bins, t.user_index,
                                              comparison.extra),
        operating_points=_operating_points(t, points, comparison),
    )


def _operating_points(t: _TaskInput, points: dict[str, float],
                      comparison: _stats.TaskComparison) -> pd.DataFrame:
    y, scores = t.rows["y_true"].to_numpy(), t.rows["y_score"].to_numpy()
    records = []
    for point, threshold in points.items():
        record = {"task": t.name, "point": point, "threshold": threshold, "n": len(y),
                  "num_users": int(t.user_index.max()) + 1, "positives": int(y.sum()),
                  **metrics.confusion_counts(y, scores, threshold)}
        for metric in metrics.OPERATING_POINT_METRICS:
            record.update(estimate_columns(metric, comparison.extra[f"{point}|{metric}"]))
        records.append(record)
    return pd.DataFrame(records, columns=metrics.OPERATING_POINT_COLUMNS)


def _task_metrics(t: _TaskInput, comparison: _stats.TaskComparison,
                  config: AnalyzeConfig) -> dict:
    y = t.rows["y_true"].to_numpy()
    users_with = [int(len(np.unique(t.user_index[y == label]))) for label in (1, 0)]
    baseline = comparison.baseline_auroc
    gain = comparison.gain
    detectable = None
    if baseline is not None and baseline.value is not None:
        detectable = _min_detectable_gain(gain, baseline.value, users_with, config)
    correlation = comparison.extra.get("correlation", UNDEFINED)
    return {
        "task": t.name, "n": len(y), "num_users": int(t.user_index.max()) + 1,
        "positives": int(y.sum()), "positive_users": users_with[0],
        "negative_users": users_with[1],
        **estimate_columns("auroc", comparison.auroc),
        **estimate_columns("auprc", comparison.extra["auprc"]),
        **estimate_columns("brier", comparison.extra["brier"]),
        **estimate_columns("ece", comparison.extra["ece"]),
        "baseline_fit": t.fit,
        "baseline_features": None if t.fit == NO_METADATA else t.features,
        **estimate_columns("baseline_auroc", baseline),
        **estimate_columns("gain", gain, value_key="gain_vs_baseline"),
        "gain_p_value": comparison.gain_p_value,
        "min_detectable_gain": detectable,
        "min_detectable_auroc": _min_detectable_auroc(users_with, config),
        **_correlations(t, baseline is not None),
        **estimate_columns("corr", correlation, value_key="corr_with_baseline"),
    }


def _correlations(t: _TaskInput, has_baseline: bool) -> dict:
    scores, baseline = t.rows["y_score"].to_numpy(), t.rows["baseline_score"].to_numpy()
    pearson = spearman = None
    if has_baseline and np.std(scores) > 0 and np.std(baseline) > 0:
        pearson = float(stats.pearsonr(scores, baseline).statistic)
        spearman = float(stats.spearmanr(scores, baseline).statistic)
    return {"pearson_with_baseline": pearson, "spearman_with_baseline": spearman}


def _min_detectable_gain(gain: Estimate | None, baseline_auroc: float, users_with: list[int],
                         config: AnalyzeConfig) -> float | None:
    """Smallest gain over the baseline a two-sided test at alpha would detect with `power`:
    from the gain's bootstrap standard error, or, when its interval is degenerate, from
    Hanley-McNeil on the users of each class (the two AUROCs taken as independent, which
    overstates it). None when no AUROC up to 1 is that far above the baseline's."""
    if gain is not None and gain.se is not None:
        se = gain.se
    elif min(users_with) > 0:
        se = math.sqrt(2 * _stats.auroc_variance(baseline_auroc, *users_with))
    else:
        return None
    detectable = _stats.detectable_difference(se, config.alpha, config.power)
    return detectable if baseline_auroc + detectable <= 1 else None


def _min_detectable_auroc(users_with: list[int], config: AnalyzeConfig) -> float | None:
    """Lowest AUROC told apart from chance (0.5) by a two-sided test at alpha with `power`,
    Hanley-McNeil on the users of each class; None when no AUROC up to 1 is, or a class is
    missing."""
    if min(users_with) == 0:
        return None
    se = math.sqrt(_stats.auroc_variance(0.5, *users_with))
    detectable = 0.5 + _stats.detectable_difference(se, config.alpha, config.power)
    return detectable if detectable <= 1 else None


_TASK_COLUMNS = ["task", "n", "num_users", "positives", "positive_users", "negative_users",
                 "auroc", "auroc_ci_low", "auroc_ci_high", "auprc", "auprc_ci_low",
                 "auprc_ci_high", "brier", "brier_ci_low", "brier_ci_high", "ece",
                 "ece_ci_low", "ece_ci_high", "baseline_fit", "baseline_features",
                 "baseline_auroc", "baseline_auroc_ci_low", "baseline_auroc_ci_high",
                 "gain_vs_baseline", "gain_ci_low", "gain_ci_high", "gain_p_value",
                 "min_detectable_gain", "min_detectable_auroc", "pearson_with_baseline",
                 "spearman_with_baseline", "corr_with_baseline", "corr_ci_low", "corr_ci_high"]


def analyze_predictions(predictions_file: Path, out_dir: Path, config: AnalyzeConfig,
                        sensor_logs_dir: Path | None = None,
                        users_file: Path | None = None,
                        require_rows: bool = False) -> AnalysisResult:
    """Read predictions, analyse them, write tables, plots and analysis.json under `out_dir`.

    With `sensor_logs_dir` and `users_file` (the run's clean logs, or a cohort's `sensor_logs/`
    and `users.parquet`) the weeks of the top rows are plotted. `require_rows`: an empty table
    is a DataContractError, not the finding NO_PREDICTIONS."""
    frame = read_predictions(Path(predictions_file), config, require_rows)
    config = with_default_strata(frame, config)  # the table's own columns, not the timezone
    plots.check_sensor_logs(sensor_logs_dir)
    timezones = plots.read_timezones(users_file) if users_file else None
    if timezones is not None and "timezone" not in frame.columns:
        frame["timezone"] = frame["user_id"].map(timezones)
    tables = analyze_frame(frame, config)
    out_dir = Path(out_dir)
    week_plots, skipped = plots.plot_top_weeks(tables.top_predictions, out_dir / "plots" / "weeks",
                                               sensor_logs_dir, timezones)
    top = tables.top_predictions.assign(week_plot=[str(p) if p else None for p in week_plots])
    written = {name: write_parquet_atomic(pa.Table.from_pandas(table, preserve_index=False),
                                          out_dir / f"{name}.parquet")
               for name, table in (("tasks", tables.tasks), ("strata", tables.strata),
                                   ("loss_patterns", tables.loss_patterns),
                                   ("top_predictions", top),
                                   ("baseline_scores", tables.baseline_scores),
                                   ("calibration", tables.calibration),
                                   ("operating_points", tables.operating_points))}
    figures = plots.plot_tasks(tables, out_dir / "plots")
    result = AnalysisResult(
        tasks=task_records(tables.tasks, tables.operating_points),
        strata=stratum_records(tables.strata),
        top_losses=top_loss_records(tables.top_predictions), findings=tables.findings,
        interval_method=config.interval_method(),
        tables=written, plots=figures, week_plots=[p for p in week_plots if p],
        week_plots_skipped=skipped)
    write_json_atomic({"predictions": result.predictions_section().model_dump(mode="json"),
                       "findings": [f.model_dump(mode="json") for f in result.findings]},
                      out_dir / "analysis.json")
    return result
