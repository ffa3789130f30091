"""What the analyze stage makes of the metadata columns (age, sex, device, ...).

- labels: every stratum or loss-pattern column as text labels (`metadata_categories`), age in
  bands (`age_bands`), numbers with many values in quartiles (`as_categories`), and their
  natural order (`natural_key`);
- the metadata baseline: a logistic regression on age and sex (`fit_baseline`), fitted on the
  train split or cross-fitted by user, that the network has to beat.
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
from stethoscope.tasks.analyze.config import AGE_BAND, AnalyzeConfig

PATTERN_COLUMNS = ("device_generation", "device", "sex", AGE_BAND, "timezone")


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


def natural_key(value: str) -> tuple:
    """Order labels by their leading number ('<30' before '30-44', '2' before '10'), then
    text, then 'unknown' last."""
    if found := re.match(r"^(<)?[\[(]?(-?\d+(?:\.\d+)?)", value):
        return (0, float(found.group(2)) - (1e-9 if found.group(1) else 0.0), value)
    return (2 if value == UNKNOWN_STRATUM else 1, 0.0, value)


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
