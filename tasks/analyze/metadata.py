"""What the analyze stage makes of the metadata columns (age, sex, device, ...).

- which columns are strata by default (`with_default_strata`): device_generation, sex and
  age_band when the table has them, and every extra column that looks like a grouping;
- labels: every stratum or loss-pattern column as text labels (`metadata_categories`), age in
  bands (`age_bands`), numbers with many values in quartiles (`as_categories`), and their
  natural order (`natural_key`);
- the metadata baseline: a logistic regression on age and sex, or on the one of them the table
  has (`fit_baseline`), fitted on the train split or cross-fitted by user, that the network has
  to beat; not fitted ("no-metadata") when the table has neither.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from stethoscope.schemas.devices import UNKNOWN_STRATUM
from stethoscope.schemas.tables import PREDICTIONS, SEXES
from stethoscope.tasks.analyze.config import AGE_BAND, NO_METADATA, AnalyzeConfig
from stethoscope.tasks.analyze.inputs import evaluation_rows

PATTERN_COLUMNS = ("device_generation", "device", "sex", AGE_BAND, "timezone")
METADATA_STRATA = ("device_generation", "sex", AGE_BAND)  # in this order, when present
BASELINE_FEATURES = ("age", "sex")
# pandas' inferred kinds of a column that can name groups; floats are measurements (coverage),
# dates and timestamps are times
_GROUPING_KINDS = {"string", "integer", "boolean", "categorical"}


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


def _present(frame: pd.DataFrame, names: tuple[str, ...]) -> list[str]:
    """`names` the frame has; age_band counts as present when age is."""
    return [c for c in names if c in frame.columns or (c == AGE_BAND and "age" in frame.columns)]


def extra_columns(frame: pd.DataFrame) -> list[str]:
    """Columns beyond the predictions contract and the ones this stage adds (baseline score,
    timezone from the users file)."""
    known = {f.name for f in PREDICTIONS} | {"baseline_score", *PATTERN_COLUMNS}
    return [c for c in frame.columns if c not in known]


def pattern_columns(frame: pd.DataFrame, config: AnalyzeConfig) -> tuple[str, ...]:
    """The configured pattern columns, or the default ones present plus every extra column."""
    if config.pattern_columns is not None:
        return config.pattern_columns
    return tuple(_present(frame, (*PATTERN_COLUMNS, *extra_columns(frame))))


def _is_grouping(values: pd.Series, max_levels: int) -> bool:
    """Text, integers or booleans with 2 to max_levels distinct values (nulls aside)."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    return kind in _GROUPING_KINDS and 2 <= values.nunique(dropna=True) <= max_levels


def with_default_strata(frame: pd.DataFrame, config: AnalyzeConfig) -> AnalyzeConfig:
    """`config` with its strata resolved: the configured ones, or by default METADATA_STRATA
    the frame has, then every extra column that is a grouping (`_is_grouping`).

    Resolve before columns are added to the frame that are not the table's own (timezone
    from the users file)."""
    if config.strata_columns is not None:
        return config
    extras = [c for c in extra_columns(frame) if _is_grouping(frame[c], config.max_levels)]
    return config.with_strata((*_present(frame, METADATA_STRATA), *extras))


def metadata_categories(frame: pd.DataFrame, config: AnalyzeConfig) -> pd.DataFrame:
    """One label column per stratum or pattern column, aligned with `frame`. A pattern column
    of text with too many values (an identifier) is left out; a stratum column never is.
    `config` has its strata resolved (`with_default_strata`)."""
    strata = config.strata_columns or ()
    columns: dict[str, pd.Series] = {}
    for name in dict.fromkeys((*strata, *pattern_columns(frame, config))):
        if name == AGE_BAND:
            columns[name] = age_bands(frame["age"], config.age_band_edges)
        elif name in frame.columns:
            limit = None if name in strata else config.max_levels
            if (labels := as_categories(frame[name], limit)) is not None:
                columns[name] = labels
    return pd.DataFrame(columns, index=frame.index)


def natural_key(value: str) -> tuple:
    """Order labels by their leading number ('<30' before '30-44', '2' before '10'), then
    text, then 'unknown' last."""
    if found := re.match(r"^(<)?[\[(]?(-?\d+(?:\.\d+)?)", value):
        return (0, float(found.group(2)) - (1e-9 if found.group(1) else 0.0), value)
    return (2 if value == UNKNOWN_STRATUM else 1, 0.0, value)


def baseline_features(frame: pd.DataFrame) -> tuple[str, ...]:
    """What the metadata baseline is fitted on: age and sex, those of them the table has."""
    return tuple(c for c in BASELINE_FEATURES if c in frame.columns)


def _baseline_model(features: tuple[str, ...]) -> Pipeline:
    """Logistic regression on age (median-imputed, with a missing flag) and sex (one-hot)."""
    encoders = {
        "age": make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                           keep_empty_features=True), StandardScaler()),
        "sex": OneHotEncoder(categories=[list(SEXES)], handle_unknown="ignore"),
    }
    features_of = ColumnTransformer([(name, encoders[name], [name]) for name in features])
    return make_pipeline(features_of, LogisticRegression(max_iter=1000))


def _fit_predict(train: pd.DataFrame, apply: pd.DataFrame, features: tuple[str, ...]
                 ) -> np.ndarray:
    if train["y_true"].nunique() < 2:  # one class: the prior is the best the baseline can do
        return np.full(len(apply), float(train["y_true"].mean()) if len(train) else 0.5)
    model = _baseline_model(features).fit(train[list(features)], train["y_true"])
    return model.predict_proba(apply[list(features)])[:, 1]


def fit_baseline(frame: pd.DataFrame, config: AnalyzeConfig) -> tuple[pd.Series, dict[str, str]]:
    """Baseline scores of the evaluation rows and, per task, how they were fitted.

    On the train split when it holds both classes ("train"); otherwise cross-fitted on the
    evaluation rows with GroupKFold by user ("cross-fit"), so no row is scored by a model that
    saw its user; "none" when fewer than two users are evaluated; NO_METADATA (scores NaN)
    when the table has neither age nor sex.
    """
    evaluated_rows = evaluation_rows(frame, config)
    scores = pd.Series(np.nan, index=frame.index[evaluated_rows])
    features = baseline_features(frame)
    if not features:
        return scores, dict.fromkeys(sorted(frame["task"].unique()), NO_METADATA)
    fits: dict[str, str] = {}
    for task_name, rows in frame.groupby("task", sort=True):
        evaluated = rows[evaluated_rows.loc[rows.index]]
        train = rows[rows["split"] == config.train_split] if "split" in rows else rows.iloc[:0]
        num_users = evaluated["user_id"].nunique()
        if train["y_true"].nunique() == 2:
            scores[evaluated.index] = _fit_predict(train, evaluated, features)
            fits[task_name] = "train"
        elif num_users >= 2:
            folds = GroupKFold(n_splits=min(config.baseline_folds, num_users))
            for fit_at, score_at in folds.split(evaluated, groups=evaluated["user_id"]):
                part = evaluated.iloc[score_at]
                scores[part.index] = _fit_predict(evaluated.iloc[fit_at], part, features)
            fits[task_name] = "cross-fit"
        else:
            fits[task_name] = "none"
    return scores, fits
