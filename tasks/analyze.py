"""The analyze stage: what a network's predictions say beyond its AUROC (DESIGN sections 1.4, 4).

It owns, per task, on the evaluation rows of `predictions.parquet`:
1. AUROC with a 95% interval from a bootstrap over users (weeks of one user stay together),
   AUPRC and Brier score;
2. a metadata baseline (logistic regression on age and sex) and whether the network beats it
   (`METADATA_DOMINATED` when the gain is not significant or their scores are too correlated);
3. the most egregious false positives/negatives and the most confident correct predictions;
4. loss patterns: metadata values over-represented among the largest losses (`LOSS_PATTERN`);
5. strata (device generation, sex, age band, ...): AUROC vs the rest of the cohort with an
   interval and a permutation p-value, corrected across strata and tasks (`WEAK_STRATUM`); a
   stratum too small to test is reported as such (`UNDERPOWERED_STRATUM`), never passed.

`analyze_frame` is the pure core (a DataFrame in, tables and findings out); `analyze_predictions`
reads the file, writes tables and plots under `out_dir`; `analyze_task` is the Prefect shell.
The statistics live in `tasks/_stats.py`, the plots in `tasks/_analysis_plots.py`.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import stats
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from schemas.config import StageConfig
from schemas.devices import UNKNOWN_STRATUM
from schemas.errors import DataContractError, Problem
from schemas.summary import Finding, PredictionsSection, StratumMetrics, TaskMetrics, TopLoss
from schemas.tables import PREDICTIONS, SEXES
from tasks import _analysis_plots as plots
from tasks import _stats
from tasks.io import write_json_atomic, write_parquet_atomic

STAGE = "analyze"
AGE_BAND = "age_band"  # derived from `age` with AnalyzeConfig.age_band_edges
PATTERN_COLUMNS = ("device_generation", "device", "sex", AGE_BAND, "timezone")


class AnalyzeConfig(StageConfig):
    """How predictions are analysed. Intervals are at level 1 - alpha (95% by default)."""

    eval_splits: tuple[str, ...] = Field(("val", "test"), min_length=1)
    train_split: str = Field("train", description="rows that fit the baseline; else cross-fit")
    num_bootstrap: int = Field(1000, ge=100, le=100_000, description="user-level resamples")
    num_permutations: int = Field(
        1000, ge=100, le=100_000,
        description="per stratum, at most: clear nulls stop early; raised to 2 x tests / alpha")
    alpha: float = Field(0.05, gt=0, lt=0.5)
    correction: Literal["bh", "holm"] = Field("bh", description="across strata x tasks")
    strata_columns: tuple[str, ...] = ("device_generation", "sex", AGE_BAND)
    age_band_edges: tuple[float, ...] = (30.0, 45.0, 60.0, 75.0)
    min_stratum_users: int = Field(10, ge=2, description="in the stratum and in the rest")
    min_stratum_positives: int = Field(10, ge=1)
    min_stratum_negatives: int = Field(10, ge=1)
    power: float = Field(0.8, gt=0, lt=1, description="for the smallest detectable difference")
    baseline_folds: int = Field(5, ge=2, description="GroupKFold by user when no train rows")
    correlation: Literal["pearson", "spearman"] = "spearman"
    max_correlation_with_baseline: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(10, ge=1, le=1000, description="rows per kind: FP, FN, TP, TN")
    decision_threshold: float | None = Field(
        None, gt=0, lt=1, description="None: as many predicted positives as true positives"
    )
    loss_share: float = Field(0.1, gt=0, le=1, description="share of rows that are top losses")
    pattern_columns: tuple[str, ...] | None = Field(
        None, description="None: device_generation, device, sex, age_band, timezone + extras"
    )
    min_lift: float = Field(1.5, ge=1)
    max_levels: int = Field(20, ge=2, description="more distinct numbers are binned in quartiles")
    seed: int = 0

    @field_validator("age_band_edges")
    @classmethod
    def _increasing(cls, edges: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"age_band_edges must increase strictly, got {edges}")
        return edges


class AnalysisResult(BaseModel):
    """What the stage returns to the flow: summary records and the paths it wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: list[TaskMetrics]
    strata: list[StratumMetrics]
    top_losses: list[TopLoss]
    findings: list[Finding]
    tables: dict[str, Path]
    plots: list[Path]
    week_plots: list[Path]
    week_plots_skipped: str | None = None  # why the weeks of top rows were not plotted

    def predictions_section(self) -> PredictionsSection:
        return PredictionsSection(tasks=self.tasks, strata=self.strata, top_losses=self.top_losses)

    def describe(self) -> str:
        lines = [
            f"{t.task}: n={t.n}, AUROC {_fmt(t.auroc)} {_fmt_ci(t.auroc_ci)}, "
            f"baseline {_fmt(t.baseline_auroc)}"
            for t in self.tasks
        ]
        lines += [f"[{f.severity}] {f.code}: {f.message}" for f in self.findings]
        if self.week_plots_skipped:
            lines.append(f"week plots skipped: {self.week_plots_skipped}")
        return "\n".join(lines)


@dataclass(frozen=True)
class AnalysisTables:
    """The tidy tables of one analysis (one row per task / stratum / pattern / top row)."""

    tasks: pd.DataFrame
    strata: pd.DataFrame
    loss_patterns: pd.DataFrame
    top_predictions: pd.DataFrame
    baseline_scores: pd.DataFrame
    findings: list[Finding]


# --- reading ------------------------------------------------------------------------------


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_string(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_date(t: pa.DataType) -> bool:
    return pa.types.is_date(t) or pa.types.is_timestamp(t)


def _is_label(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_boolean(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


_TYPE_RULES = {
    "user_id": (_is_string, "a string"),
    "week_start": (_is_date, "a date"),
    "task": (_is_string, "a string"),
    "split": (_is_string, "a string"),
    "y_true": (_is_label, "an integer 0/1"),
    "y_score": (pa.types.is_floating, "a float probability"),
    "device": (_is_string, "a string"),
    "device_generation": (pa.types.is_integer, "an integer (null = unknown device)"),
    "age": (_is_number, "a number of years"),
    "sex": (_is_string, "a string F/M/U"),
}


def _count_outside_unit(column: pa.ChunkedArray) -> int:
    score = pc.cast(column, pa.float64())
    inside = pc.and_(pc.greater_equal(score, 0.0), pc.less_equal(score, 1.0))  # NaN: false
    return int(pc.sum(pc.invert(inside)).as_py() or 0)


def _count_not_binary(column: pa.ChunkedArray) -> int:
    return int(pc.sum(pc.invert(pc.is_in(pc.cast(column, pa.int64()), pa.array([0, 1]))))
               .as_py() or 0)


def _count_bad_sex(column: pa.ChunkedArray) -> int:
    known = pc.fill_null(pc.is_in(pc.cast(column, pa.string()), pa.array(SEXES)), True)
    return int(pc.sum(pc.invert(known)).as_py() or 0)


_VALUE_RULES = {  # column: (count of bad rows, rule, what is wrong, fix)
    "y_score": (_count_outside_unit, "probability", "is outside [0, 1] (or NaN).",
                "pass probabilities (apply the sigmoid), not logits."),
    "y_true": (_count_not_binary, "binary_label", "is not 0 or 1.",
               "encode the label as 0/1; drop rows whose label is unknown."),
    "sex": (_count_bad_sex, "sex_values", f"is not one of {list(SEXES)} or null.",
            "map sexes to F, M and U (unknown)."),
}


def check_predictions(table: pa.Table, source: str, config: AnalyzeConfig) -> list[Problem]:
    """Every way `table` breaks the predictions contract (schemas.tables.PREDICTIONS), at once:
    missing columns, wrong types, nulls, values out of their domain, duplicate user-weeks."""
    problems: list[Problem] = []
    usable: set[str] = set()
    for field in PREDICTIONS:
        name = field.name
        if name not in table.column_names:
            problems.append(Problem("required_column", "is missing.",
                                    f"add {name!r} ({field.type}).", source, name))
            continue
        accepts, expected = _TYPE_RULES[name]
        actual = table.schema.field(name).type
        if not accepts(actual) and not (field.nullable and pa.types.is_null(actual)):
            problems.append(Problem("column_type", f"is {actual}, expected {expected}.",
                                    f"cast it to {field.type}.", source, name))
        elif not field.nullable and (nulls := table.column(name).null_count):
            problems.append(Problem("not_null", "holds nulls.", "drop or fill those rows.",
                                    source, name, nulls))
        else:
            usable.add(name)
    for name, (count_bad, rule, message, fix) in _VALUE_RULES.items():
        if name in usable and (bad := count_bad(table.column(name))):
            problems.append(Problem(rule, message, fix, source, name, bad))
    return problems + _check_rows(table, usable, source, config)


def _check_rows(table: pa.Table, usable: set[str], source: str,
                config: AnalyzeConfig) -> list[Problem]:
    problems = []
    keys = ["user_id", "week_start", "task"]
    if usable.issuperset(keys):
        distinct = table.select(keys).group_by(keys).aggregate([([], "count_all")]).num_rows
        if table.num_rows > distinct:
            problems.append(Problem(
                "unique_user_week", "repeats a (user_id, week_start, task).",
                "keep one prediction per user-week and task.", source, "task",
                table.num_rows - distinct))
    if "split" in usable and table.num_rows and not pc.any(pc.is_in(pc.cast(table.column("split"), pa.string()),
                                                 pa.array(config.eval_splits))).as_py():
        problems.append(Problem(
            "evaluation_rows", f"has no row whose split is one of {list(config.eval_splits)}.",
            "set AnalyzeConfig.eval_splits to the splits to evaluate.", source, "split"))
    problems += [Problem("strata_column", "is configured as a stratum but absent.",
                         "add the column or remove it from strata_columns.", source, c)
                 for c in config.strata_columns
                 if c != AGE_BAND and c not in table.column_names]
    return problems


def read_predictions(path: Path, config: AnalyzeConfig) -> pd.DataFrame:
    """Read and check `predictions.parquet`; raise DataContractError listing every problem."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataContractError(f"analyze: cannot read predictions file {path}.", [Problem(
            "readable", f"is not a readable Parquet file ({exc}).",
            "point --predictions at predictions.parquet written by the train stage.",
            str(path))]) from exc
    if problems := check_predictions(table, str(path), config):
        raise DataContractError(
            f"analyze: {path} breaks the predictions contract ({len(problems)} problems).",
            problems)
    return normalise_predictions(table)


def normalise_predictions(table: pa.Table) -> pd.DataFrame:
    """A checked table as a frame with canonical dtypes; null sex is U, null device unknown."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), field.type.value_type))
    frame = table.to_pandas()
    frame["week_start"] = pd.to_datetime(frame["week_start"]).dt.date
    frame["y_true"] = frame["y_true"].astype("int8")
    frame["y_score"] = frame["y_score"].astype("float64")
    frame["age"] = frame["age"].astype("float64")
    frame["device_generation"] = frame["device_generation"].astype("Int16")
    frame["sex"] = frame["sex"].fillna("U").astype(str)
    frame["device"] = frame["device"].fillna(UNKNOWN_STRATUM).astype(str)
    for name in ("user_id", "task", "split"):
        frame[name] = frame[name].astype(str)
    return frame.reset_index(drop=True)


# --- the pure core ------------------------------------------------------------------------


def analyze_frame(frame: pd.DataFrame, config: AnalyzeConfig) -> AnalysisTables:
    """The whole analysis of a normalised predictions frame (see `read_predictions`)."""
    evaluation = frame[frame["split"].isin(config.eval_splits)].copy()
    evaluation["baseline_score"], fits = fit_baseline(frame, config)
    categories = metadata_categories(evaluation, config)
    inputs = [_task_input(task_name, rows, categories.loc[rows.index], fits[task_name], config)
              for task_name, rows in evaluation.groupby("task", sort=True)]
    num_tests = sum(s["members"] is not None for t in inputs for s in t.strata)
    permutations = _stats.permutations_needed(num_tests, config.alpha, config.num_permutations)
    per_task = [_analyze_one_task(t, permutations, config) for t in inputs]
    tasks = pd.DataFrame([r.metrics for r in per_task], columns=_TASK_COLUMNS)
    strata = _correct_strata(_concat([r.strata for r in per_task], _STRATA_COLUMNS), config)
    patterns = _correct_patterns(
        _concat([r.patterns for r in per_task], _PATTERN_COLUMNS_OUT), config)
    top = _concat([r.top for r in per_task], _TOP_COLUMNS)
    baseline = evaluation[["user_id", "week_start", "task", "split", "y_true", "y_score",
                           "baseline_score"]].reset_index(drop=True)
    return AnalysisTables(tasks, strata, patterns, top, baseline,
                          findings_of(tasks, strata, patterns, config))


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    """Per-task tables stacked; an empty table with its columns when there is no task."""
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def age_bands(age: pd.Series, edges: tuple[float, ...]) -> pd.Series:
    """'<30', '30-44', ..., '75+' for the default edges; null age is 'unknown'."""
    bounds = [-math.inf, *edges, math.inf]
    integral = all(float(e).is_integer() for e in edges)
    labels = []
    for low, high in zip(bounds, bounds[1:], strict=False):
        if low == -math.inf:
            labels.append(f"<{high:g}")
        elif high == math.inf:
            labels.append(f"{low:g}+")
        else:
            labels.append(f"{low:g}-{high - 1:g}" if integral else f"[{low:g}, {high:g})")
    bands = pd.cut(age, bounds, right=False, labels=labels).astype(object)
    return bands.where(age.notna(), UNKNOWN_STRATUM).astype(str)


def as_categories(values: pd.Series, max_levels: int | None) -> pd.Series | None:
    """Values as stratum labels: numbers with more than `max_levels` distinct values binned in
    quartiles, integral numbers without '.0', null 'unknown'. None for a string column with
    more than `max_levels` values (an identifier, not a pattern) unless max_levels is None."""
    present = values.dropna()
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = present.astype(float)
        if numbers.nunique() > (max_levels or 20):
            bins = pd.qcut(numbers, 4, duplicates="drop").astype(str)
            return bins.reindex(values.index).fillna(UNKNOWN_STRATUM).astype(str)
        labels = numbers.map(lambda v: f"{v:.0f}" if float(v).is_integer() else f"{v:g}")
        return labels.reindex(values.index).fillna(UNKNOWN_STRATUM).astype(str)
    if max_levels is not None and present.nunique() > max_levels:
        return None
    return values.astype(object).where(values.notna(), UNKNOWN_STRATUM).astype(str)


def pattern_columns(frame: pd.DataFrame, config: AnalyzeConfig) -> tuple[str, ...]:
    """The configured pattern columns, or the default ones present plus every extra column."""
    if config.pattern_columns is not None:
        return config.pattern_columns
    extras = [c for c in frame.columns
              if c not in {f.name for f in PREDICTIONS} | {"baseline_score", *PATTERN_COLUMNS}]
    return tuple(c for c in (*PATTERN_COLUMNS, *extras) if c == AGE_BAND or c in frame.columns)


def metadata_categories(frame: pd.DataFrame, config: AnalyzeConfig) -> pd.DataFrame:
    """One label column per stratum or pattern column, aligned with `frame`. A pattern column
    of text with too many values (an identifier) is left out; a stratum column never is."""
    columns: dict[str, pd.Series] = {}
    for name in dict.fromkeys((*config.strata_columns, *pattern_columns(frame, config))):
        if name == AGE_BAND:
            columns[name] = age_bands(frame["age"], config.age_band_edges)
        elif name in frame.columns:
            limit = None if name in config.strata_columns else config.max_levels
            if (labels := as_categories(frame[name], limit)) is not None:
                columns[name] = labels
    return pd.DataFrame(columns, index=frame.index)


def _baseline_model() -> Pipeline:
    """Logistic regression on age (median-imputed, with a missing flag) and sex (one-hot)."""
    features = ColumnTransformer([
        ("age", make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                            keep_empty_features=True), StandardScaler()), ["age"]),
        ("sex", OneHotEncoder(categories=[list(SEXES)], handle_unknown="ignore"), ["sex"]),
    ])
    return make_pipeline(features, LogisticRegression(max_iter=1000))


def _fit_predict(train: pd.DataFrame, apply: pd.DataFrame) -> np.ndarray:
    if train["y_true"].nunique() < 2:  # one class: the prior is the best the baseline can do
        return np.full(len(apply), float(train["y_true"].mean()) if len(train) else 0.5)
    model = _baseline_model().fit(train[["age", "sex"]], train["y_true"])
    return model.predict_proba(apply[["age", "sex"]])[:, 1]


def fit_baseline(frame: pd.DataFrame, config: AnalyzeConfig) -> tuple[pd.Series, dict[str, str]]:
    """Baseline scores of the evaluation rows and, per task, how they were fitted.

    On the train split when it holds both classes ("train"); otherwise cross-fitted on the
    evaluation rows with GroupKFold by user ("cross-fit"), so no row is scored by a model that
    saw its user; "none" when fewer than two users are evaluated.
    """
    scores = pd.Series(np.nan, index=frame.index[frame["split"].isin(config.eval_splits)])
    fits: dict[str, str] = {}
    for task_name, rows in frame.groupby("task", sort=True):
        evaluated = rows[rows["split"].isin(config.eval_splits)]
        train = rows[rows["split"] == config.train_split]
        num_users = evaluated["user_id"].nunique()
        if train["y_true"].nunique() == 2:
            scores[evaluated.index] = _fit_predict(train, evaluated)
            fits[task_name] = "train"
        elif num_users >= 2:
            folds = GroupKFold(n_splits=min(config.baseline_folds, num_users))
            for fit_at, score_at in folds.split(evaluated, groups=evaluated["user_id"]):
                part = evaluated.iloc[score_at]
                scores[part.index] = _fit_predict(evaluated.iloc[fit_at], part)
            fits[task_name] = "cross-fit"
        else:
            fits[task_name] = "none"
    return scores, fits


@dataclass(frozen=True)
class _TaskInput:
    name: str
    rows: pd.DataFrame  # evaluation rows of the task, with baseline_score
    categories: pd.DataFrame  # metadata labels of these rows
    user_index: np.ndarray  # row -> user number
    strata: list[dict]  # see _stratum_definitions
    fit: str  # how the baseline was fitted: train, cross-fit, none


@dataclass(frozen=True)
class _TaskTables:
    metrics: dict
    strata: pd.DataFrame
    patterns: pd.DataFrame
    top: pd.DataFrame


def _task_input(name: str, rows: pd.DataFrame, categories: pd.DataFrame, fit: str,
                config: AnalyzeConfig) -> _TaskInput:
    user_index, users = pd.factorize(rows["user_id"])
    strata = _stratum_definitions(rows, categories, user_index, len(users), config)
    return _TaskInput(name, rows, categories, user_index, strata, fit)


def _analyze_one_task(t: _TaskInput, num_permutations: int, config: AnalyzeConfig) -> _TaskTables:
    y, scores = t.rows["y_true"].to_numpy(), t.rows["y_score"].to_numpy()
    baseline = None if t.fit == "none" else t.rows["baseline_score"].to_numpy()
    # One random stream per task, independent of which other tasks are present.
    rng = np.random.default_rng([config.seed, zlib.crc32(t.name.encode())])
    resampling = _stats.Resampling(config.num_bootstrap, num_permutations, config.alpha, rng)
    comparison = _stats.compare_task(scores, y, t.user_index, baseline,
                                     [(s["mask"], s["members"]) for s in t.strata], resampling)
    predicted = scores >= decision_threshold(scores, y, config.decision_threshold)
    return _TaskTables(
        metrics=_task_metrics(t, comparison, baseline, config),
        strata=_strata_table(t.name, t.strata, comparison, config),
        patterns=loss_patterns(t.name, t.rows, t.categories, predicted, config),
        top=top_predictions(t.name, t.rows, predicted, config.top_k),
    )


def _stratum_definitions(rows: pd.DataFrame, categories: pd.DataFrame, user_index: np.ndarray,
                         num_users: int, config: AnalyzeConfig) -> list[dict]:
    """Each (column, value): row mask, counts, and the user membership to permute if testable.

    A user's membership is the value of most of their weeks (users rarely change device, sex or
    age band within the evaluation period)."""
    y = rows["y_true"].to_numpy().astype(bool)
    definitions = []
    for column in config.strata_columns:
        labels = categories[column].to_numpy()
        majority = (pd.DataFrame({"user": user_index, "value": labels})
                    .value_counts().reset_index().drop_duplicates("user")
                    .set_index("user")["value"].reindex(range(num_users)).to_numpy())
        for value in sorted(set(labels), key=_natural_key):
            mask = labels == value
            counts = {"n": int(mask.sum()), "num_users": len(np.unique(user_index[mask])),
                      "positives": int(y[mask].sum()), "rest_users": len(np.unique(user_index[~mask])),
                      "rest_positives": int(y[~mask].sum()), "rest_n": int((~mask).sum())}
            reason = _untestable_reason(counts, config)
            definitions.append({"column": column, "value": value, "mask": mask, **counts,
                                "reason": reason,
                                "members": None if reason else majority == value})
    return definitions


def _natural_key(value: str) -> tuple:
    """Order labels by their leading number ('<30' before '30-44', '2' before '10'), then
    text, then 'unknown' last."""
    if found := re.match(r"^(<)?[\[(]?(-?\d+(?:\.\d+)?)", value):
        return (0, float(found.group(2)) - (1e-9 if found.group(1) else 0.0), value)
    return (2 if value == UNKNOWN_STRATUM else 1, 0.0, value)


def _untestable_reason(c: dict, config: AnalyzeConfig) -> str | None:
    for group, n, users, pos in (("stratum", c["n"], c["num_users"], c["positives"]),
                                 ("rest of the cohort", c["rest_n"], c["rest_users"],
                                  c["rest_positives"])):
        if users < config.min_stratum_users:
            return f"{group}: {users} users < {config.min_stratum_users}"
        if pos < config.min_stratum_positives:
            return f"{group}: {pos} positives < {config.min_stratum_positives}"
        if n - pos < config.min_stratum_negatives:
            return f"{group}: {n - pos} negatives < {config.min_stratum_negatives}"
    return None


def _task_metrics(t: _TaskInput, comparison: _stats.TaskComparison,
                  baseline: np.ndarray | None, config: AnalyzeConfig) -> dict:
    y, scores = t.rows["y_true"].to_numpy(), t.rows["y_score"].to_numpy()
    both = 0 < y.sum() < len(y)
    pearson = spearman = None
    if baseline is not None and np.std(scores) > 0 and np.std(baseline) > 0:
        pearson = float(stats.pearsonr(scores, baseline).statistic)
        spearman = float(stats.spearmanr(scores, baseline).statistic)
    low, high = comparison.auroc_ci or (None, None)
    gain_low, gain_high = comparison.gain_ci or (None, None)
    return {
        "task": t.name, "n": len(y), "num_users": int(t.user_index.max()) + 1,
        "positives": int(y.sum()),
        "auroc": comparison.auroc, "auroc_ci_low": low, "auroc_ci_high": high,
        "auprc": float(average_precision_score(y, scores)) if both else None,
        "brier": float(brier_score_loss(y, scores, labels=[0, 1])),
        "baseline_fit": t.fit, "baseline_auroc": comparison.baseline_auroc,
        "gain_vs_baseline": None if comparison.baseline_auroc is None or comparison.auroc is None
        else comparison.auroc - comparison.baseline_auroc,
        "gain_ci_low": gain_low, "gain_ci_high": gain_high,
        "gain_p_value": comparison.gain_p_value,
        "pearson_with_baseline": pearson, "spearman_with_baseline": spearman,
        "corr_with_baseline": pearson if config.correlation == "pearson" else spearman,
    }


_TASK_COLUMNS = ["task", "n", "num_users", "positives", "auroc", "auroc_ci_low",
                 "auroc_ci_high", "auprc", "brier", "baseline_fit", "baseline_auroc",
                 "gain_vs_baseline", "gain_ci_low", "gain_ci_high", "gain_p_value",
                 "pearson_with_baseline", "spearman_with_baseline", "corr_with_baseline"]


def _strata_table(task_name: str, strata: list[dict], comparison: _stats.TaskComparison,
                  config: AnalyzeConfig) -> pd.DataFrame:
    reference = comparison.auroc if comparison.auroc is not None else 0.75
    records = []
    for s, c in zip(strata, comparison.strata, strict=True):
        inside = (s["positives"], s["n"] - s["positives"])
        outside = (s["rest_positives"], s["rest_n"] - s["rest_positives"])
        low, high = c.auroc_ci or (None, None)
        delta_low, delta_high = c.delta_ci or (None, None)
        records.append({
            "task": task_name, "column": s["column"], "value": s["value"], "n": s["n"],
            "num_users": s["num_users"], "positives": s["positives"], "auroc": c.auroc,
            "auroc_ci_low": low, "auroc_ci_high": high, "rest_auroc": c.rest_auroc,
            "delta_vs_rest": c.delta, "delta_ci_low": delta_low, "delta_ci_high": delta_high,
            "p_value": c.p_value, "underpowered": s["reason"] is not None, "reason": s["reason"],
            "min_detectable_delta": _stats.min_detectable_delta(
                reference, inside, outside, config.alpha, config.power),
        })
    return pd.DataFrame(records, columns=_STRATA_COLUMNS)


_STRATA_COLUMNS = ["task", "column", "value", "n", "num_users", "positives", "auroc",
                   "auroc_ci_low", "auroc_ci_high", "rest_auroc", "delta_vs_rest",
                   "delta_ci_low", "delta_ci_high", "p_value", "underpowered", "reason",
                   "min_detectable_delta"]


def _correct_strata(strata: pd.DataFrame, config: AnalyzeConfig) -> pd.DataFrame:
    """Adjusted p-values across every tested stratum of every task; flag the worse ones."""
    strata = strata.copy()
    tested = strata["p_value"].notna()
    strata["p_adjusted"] = np.nan
    strata.loc[tested, "p_adjusted"] = _stats.adjust_p_values(
        strata.loc[tested, "p_value"].tolist(), config.correction)
    strata["flagged"] = tested & (strata["p_adjusted"] < config.alpha) & (
        strata["delta_vs_rest"] < 0)
    return strata


def decision_threshold(scores: np.ndarray, y: np.ndarray, fixed: float | None) -> float:
    """`fixed`, or the score of the k-th highest row where k = number of positives, so that a
    badly calibrated network still has as many predicted positives as true ones."""
    if fixed is not None:
        return fixed
    num_pos = int(y.sum())
    return float(np.sort(scores)[::-1][num_pos - 1]) if num_pos else math.inf


def log_loss_per_row(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    p = np.clip(scores, 1e-12, 1 - 1e-12)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def loss_patterns(task_name: str, rows: pd.DataFrame, categories: pd.DataFrame,
                  predicted: np.ndarray, config: AnalyzeConfig) -> pd.DataFrame:
    """Per metadata value: its share among the top losses vs among correct predictions.

    Top losses are the misclassified rows with the largest log loss, at most `loss_share` of
    the rows; correct predictions are the correctly classified rows. p-values are one-sided
    Fisher exact tests (more common among losses), adjusted later across tasks."""
    y = rows["y_true"].to_numpy()
    wrong = predicted != y.astype(bool)
    loss = np.where(wrong, log_loss_per_row(y, rows["y_score"].to_numpy()), -np.inf)
    num_losses = min(int(wrong.sum()), math.ceil(config.loss_share * len(rows)))
    is_loss = np.zeros(len(rows), dtype=bool)
    is_loss[np.argsort(-loss, kind="stable")[:num_losses]] = True
    num_correct = int((~wrong).sum())
    records = []
    for column in [c for c in pattern_columns(rows, config) if c in categories.columns]:
        labels = categories[column].to_numpy()
        for value in sorted(set(labels), key=_natural_key):
            in_losses = int((is_loss & (labels == value)).sum())
            in_correct = int((~wrong & (labels == value)).sum())
            share_losses = in_losses / num_losses if num_losses else None
            share_correct = in_correct / num_correct if num_correct else None
            records.append({
                "task": task_name, "column": column, "value": value,
                "losses_with_value": in_losses, "losses": num_losses,
                "correct_with_value": in_correct, "correct": num_correct,
                "share_losses": share_losses, "share_correct": share_correct,
                "lift": _lift(share_losses, share_correct),
                "p_value": _stats.fisher_greater(in_losses, num_losses, in_correct, num_correct)
                if num_losses and num_correct else None,
            })
    return pd.DataFrame(records, columns=_PATTERN_COLUMNS_OUT)


_PATTERN_COLUMNS_OUT = ["task", "column", "value", "losses_with_value", "losses",
                        "correct_with_value", "correct", "share_losses", "share_correct",
                        "lift", "p_value"]


def _lift(share_losses: float | None, share_correct: float | None) -> float | None:
    if share_losses is None or share_correct is None:
        return None
    return share_losses / share_correct if share_correct else math.inf


def _correct_patterns(patterns: pd.DataFrame, config: AnalyzeConfig) -> pd.DataFrame:
    """Benjamini-Hochberg across all values of all tasks; report significant, lifted ones."""
    patterns = patterns.copy()
    tested = patterns["p_value"].notna()
    patterns["q_value"] = np.nan
    patterns.loc[tested, "q_value"] = _stats.adjust_p_values(
        patterns.loc[tested, "p_value"].tolist(), "bh")
    patterns["reported"] = (tested & (patterns["q_value"] < config.alpha)
                            & (patterns["lift"].astype(float) >= config.min_lift))
    return patterns


def top_predictions(task_name: str, rows: pd.DataFrame, predicted: np.ndarray,
                    top_k: int) -> pd.DataFrame:
    """The k most confident rows of each kind: FP and FN (wrong), TP and TN (right)."""
    y = rows["y_true"].to_numpy().astype(bool)
    frame = rows.assign(task=task_name)
    kinds = {  # kind: (its rows, ascending scores: the lowest score is the most confident)
        "FP": (~y & predicted, False), "FN": (y & ~predicted, True),
        "TP": (y & predicted, False), "TN": (~y & ~predicted, True),
    }
    parts = []
    for kind, (selected, ascending) in kinds.items():
        chosen = frame[selected].sort_values(
            ["y_score", "user_id", "week_start"], ascending=[ascending, True, True]).head(top_k)
        parts.append(chosen.assign(kind=kind, rank=np.arange(1, len(chosen) + 1)))
    return pd.concat(parts, ignore_index=True)[_TOP_COLUMNS]


_TOP_COLUMNS = ["task", "kind", "rank", "user_id", "week_start", "y_true", "y_score",
                "baseline_score", "device", "device_generation", "age", "sex"]


# --- findings -----------------------------------------------------------------------------


def findings_of(tasks: pd.DataFrame, strata: pd.DataFrame, patterns: pd.DataFrame,
                config: AnalyzeConfig) -> list[Finding]:
    if tasks.empty:
        return [Finding(
            stage=STAGE, severity="info", code="NO_PREDICTIONS",
            message="predictions.parquet holds no rows: there is nothing to analyse (a cohort "
                    "without labels trains on synthetic targets only).",
            recommendation="Add labels.parquet to the cohort to train and analyse condition "
                           "predictions.")]
    findings = [f for _, t in tasks.iterrows() for f in _task_findings(t, config)]
    findings += [_weak_stratum(s) for _, s in strata[strata["flagged"]].iterrows()]
    for (task_name, column), group in strata[strata["underpowered"]].groupby(
            ["task", "column"], sort=False):
        findings.append(_underpowered(task_name, column, group))
    findings += [_loss_pattern(p) for _, p in patterns[patterns["reported"]].iterrows()]
    return findings


def _task_findings(t: pd.Series, config: AnalyzeConfig) -> list[Finding]:
    if t["auroc"] is None or pd.isna(t["auroc"]):
        return [Finding(
            stage=STAGE, severity="warning", code="TASK_NOT_EVALUABLE",
            message=f"task {t['task']}: {t['positives']} positives among {t['n']} evaluation "
                    "rows; AUROC is undefined.",
            recommendation="Evaluate on a split that holds both classes.")]
    if t["baseline_fit"] == "none" or pd.isna(t["baseline_auroc"]):
        return [Finding(
            stage=STAGE, severity="info", code="BASELINE_UNAVAILABLE",
            message=f"task {t['task']}: the metadata baseline could not be fitted (fewer than "
                    "two evaluated users); whether the network leans on age and sex is unknown.",
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
        stage=STAGE, severity="warning", code="METADATA_DOMINATED",
        message=f"task {t['task']}: network AUROC {t['auroc']:.3f} vs {t['baseline_auroc']:.3f} "
                f"for a logistic regression on age and sex; " + "; ".join(reasons) + ".",
        recommendation="The network adds little beyond age and sex: check that the sensor "
                       "channels reach the output (gradient audit), train once without the "
                       "metadata input, and check whether the labels are a proxy for age.")]


def _weak_stratum(s: pd.Series) -> Finding:
    return Finding(
        stage=STAGE, severity="warning", code="WEAK_STRATUM",
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
        stage=STAGE, severity="info", code="UNDERPOWERED_STRATUM",
        message=f"task {task_name}, {column}: {len(parts)} "
                f"{'stratum' if len(parts) == 1 else 'strata'} too small to test: "
                + "; ".join(parts) + ". Their AUROC is no evidence either way.",
        recommendation=f"Collect more weeks for these values of {column}, or merge them with "
                       "neighbouring values (coarser bands).")


def _loss_pattern(p: pd.Series) -> Finding:
    return Finding(
        stage=STAGE, severity="info", code="LOSS_PATTERN",
        message=f"task {p['task']}: {p['column']}={p['value']} makes "
                f"{p['share_losses']:.0%} of the top losses but {p['share_correct']:.0%} of the "
                f"correct predictions (lift {p['lift']:.1f}, q={p['q_value']:.3g}).",
        recommendation=f"A hypothesis, not a verdict: test it as a stratum ('{p['column']}' in "
                       "strata_columns) and look at the week plots of these losses.")


# --- files --------------------------------------------------------------------------------


def analyze_predictions(predictions_file: Path, out_dir: Path, config: AnalyzeConfig,
                        sensor_logs_dir: Path | None = None,
                        users_file: Path | None = None) -> AnalysisResult:
    """Read predictions, analyse them, write tables, plots and analysis.json under `out_dir`."""
    frame = read_predictions(Path(predictions_file), config)
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
                                   ("baseline_scores", tables.baseline_scores))}
    figures = plots.plot_tasks(tables.baseline_scores, tables.strata, tables.tasks,
                               out_dir / "plots")
    result = AnalysisResult(
        tasks=task_records(tables.tasks), strata=stratum_records(tables.strata),
        top_losses=top_loss_records(tables.top_predictions), findings=tables.findings,
        tables=written, plots=figures, week_plots=[p for p in week_plots if p],
        week_plots_skipped=skipped)
    write_json_atomic({"predictions": result.predictions_section().model_dump(mode="json"),
                       "findings": [f.model_dump(mode="json") for f in result.findings]},
                      out_dir / "analysis.json")
    return result


def _optional(value: object) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _interval(low: object, high: object) -> tuple[float, float] | None:
    return None if _optional(low) is None else (float(low), float(high))


def task_records(tasks: pd.DataFrame) -> list[TaskMetrics]:
    return [TaskMetrics(task=t["task"], n=int(t["n"]), auroc=_optional(t["auroc"]),
                        auroc_ci=_interval(t["auroc_ci_low"], t["auroc_ci_high"]),
                        baseline_auroc=_optional(t["baseline_auroc"]),
                        corr_with_baseline=_optional(t["corr_with_baseline"]))
            for _, t in tasks.iterrows()]


def stratum_records(strata: pd.DataFrame) -> list[StratumMetrics]:
    """p_value is the adjusted one (what `flagged` compares with alpha); None when untested."""
    return [StratumMetrics(column=s["column"], value=s["value"], task=s["task"], n=int(s["n"]),
                           auroc=_optional(s["auroc"]),
                           auroc_ci=_interval(s["auroc_ci_low"], s["auroc_ci_high"]),
                           delta_vs_rest=_optional(s["delta_vs_rest"]),
                           p_value=_optional(s["p_adjusted"]), flagged=bool(s["flagged"]))
            for _, s in strata.iterrows()]


def top_loss_records(top: pd.DataFrame) -> list[TopLoss]:
    losses = top[top["kind"].isin(["FP", "FN"])]
    return [TopLoss(user_id=r["user_id"], week_start=r["week_start"], task=r["task"],
                    y_true=int(r["y_true"]), y_score=float(r["y_score"]), kind=r["kind"])
            for _, r in losses.iterrows()]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _fmt_ci(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


# --- Prefect shell ------------------------------------------------------------------------


@task(name="analyze", task_run_name="analyze {predictions_file.name}")
def analyze_task(predictions_file: Path, out_dir: Path, config: AnalyzeConfig,
                 sensor_logs_dir: Path | None = None,
                 users_file: Path | None = None) -> AnalysisResult:
    """Prefect shell: analyse predictions, publish the strata as a table artifact. The flow
    applies the retry and cache policy (`tasks.policy.stage_options`)."""
    result = analyze_predictions(predictions_file, out_dir, config, sensor_logs_dir, users_file)
    create_table_artifact(
        key="analyze-strata", table=[s.model_dump(mode="json") for s in result.strata],
        description="AUROC per stratum vs the rest of the cohort (p_value adjusted).")
    return result


