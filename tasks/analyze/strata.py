"""Strata of the analyze stage: each (column, value) against the rest of the cohort.

`stratum_definitions` gives each stratum's rows, counts and, when it is large enough to test,
the user membership to permute; `strata_table` turns the comparison of `_stats.compare_task`
into one row per stratum; `correct_strata` adjusts the p-values across strata and tasks and
flags the strata that are significantly worse than the rest (WEAK_STRATUM).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.analyze.metadata import natural_key
from stethoscope.tasks.analyze.metrics import estimate_columns
from stethoscope.tasks.shared import stats as _stats

STRATA_COLUMNS = ["task", "column", "value", "n", "num_users", "positives", "positive_users",
                  "negative_users", "auroc", "auroc_ci_low", "auroc_ci_high", "rest_auroc",
                  "rest_auroc_ci_low", "rest_auroc_ci_high", "delta_vs_rest", "delta_ci_low",
                  "delta_ci_high", "p_value", "underpowered", "reason", "min_detectable_delta"]


def stratum_definitions(rows: pd.DataFrame, categories: pd.DataFrame, user_index: np.ndarray,
                        num_users: int, config: AnalyzeConfig) -> list[dict]:
    """Each (column, value) of the resolved strata (`metadata.with_default_strata`): row mask,
    counts, and the user membership to permute if testable.

    A user's membership is the value of most of their weeks (users rarely change device, sex or
    age band within the evaluation period)."""
    y = rows["y_true"].to_numpy().astype(bool)
    definitions = []
    for column in config.strata_columns or ():
        labels = categories[column].to_numpy()
        majority = (pd.DataFrame({"user": user_index, "value": labels})
                    .value_counts().reset_index().drop_duplicates("user")
                    .set_index("user")["value"].reindex(range(num_users)).to_numpy())
        for value in sorted(set(labels), key=natural_key):
            mask = labels == value
            counts = {"n": int(mask.sum()), "num_users": len(np.unique(user_index[mask])),
                      "positives": int(y[mask].sum()), "rest_users": len(np.unique(user_index[~mask])),
                      "rest_positives": int(y[~mask].sum()), "rest_n": int((~mask).sum()),
                      "users_by_class": _users_by_class(mask, y, user_index)}
            reason = _untestable_reason(counts, config)
            definitions.append({"column": column, "value": value, "mask": mask, **counts,
                                "reason": reason,
                                "members": None if reason else majority == value})
    return definitions


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


def strata_table(task_name: str, strata: list[dict], comparison: _stats.TaskComparison,
                 config: AnalyzeConfig) -> pd.DataFrame:
    """One row per stratum of a task: its AUROC and the rest's, their difference, each with a
    BCa interval (None when degenerate), the unadjusted p-value (None when untested) and the
    smallest drop it could detect (None when no AUROC in [0, 1] is that low)."""
    reference = comparison.auroc.value if comparison.auroc.value is not None else 0.75
    records = []
    for s, c in zip(strata, comparison.strata, strict=True):
        inside, outside = s["users_by_class"]
        records.append({
            "task": task_name, "column": s["column"], "value": s["value"], "n": s["n"],
            "num_users": s["num_users"], "positives": s["positives"],
            "positive_users": inside[0], "negative_users": inside[1],
            **estimate_columns("auroc", c.auroc), **estimate_columns("rest_auroc", c.rest_auroc),
            **estimate_columns("delta", c.delta, value_key="delta_vs_rest"),
            "p_value": c.p_value, "underpowered": s["reason"] is not None, "reason": s["reason"],
            "min_detectable_delta": _stats.min_detectable_delta(
                reference, inside, outside, config.alpha, config.power),
        })
    return pd.DataFrame(records, columns=STRATA_COLUMNS)


def _users_by_class(mask: np.ndarray, y: np.ndarray, user_index: np.ndarray
                    ) -> tuple[tuple[int, int], tuple[int, int]]:
    """((users with positive rows, users with negative rows) in the stratum's rows, the same
    in the rest's): a user with weeks of both classes counts in both."""
    def users(rows: np.ndarray) -> int:
        return len(np.unique(user_index[rows]))

    return ((users(mask & y), users(mask & ~y)), (users(~mask & y), users(~mask & ~y)))


def correct_strata(strata: pd.DataFrame, config: AnalyzeConfig) -> pd.DataFrame:
    """Adjusted p-values across every tested stratum of every task; flag the worse ones."""
    strata = strata.copy()
    tested = strata["p_value"].notna()
    strata["p_adjusted"] = np.nan
    strata.loc[tested, "p_adjusted"] = _stats.adjust_p_values(
        strata.loc[tested, "p_value"].tolist(), config.correction)
    strata["flagged"] = tested & (strata["p_adjusted"] < config.alpha) & (
        strata["delta_vs_rest"] < 0)
    return strata
