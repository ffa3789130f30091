"""Where the network goes wrong, per task of the analyze stage: losses and top rows.

`decision_threshold` turns scores into predictions; `loss_patterns` compares each metadata
value's share among the largest losses with its share among the correct predictions (one-sided
Fisher tests), `correct_patterns` adjusts those p-values across tasks and marks the reported
LOSS_PATTERNs; `top_predictions` picks the most confident rows of each kind (FP, FN, TP, TN).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.analyze.metadata import natural_key, pattern_columns
from stethoscope.tasks.shared import stats as _stats

LOSS_PATTERN_COLUMNS = ["task", "column", "value", "losses_with_value", "losses",
                        "correct_with_value", "correct", "share_losses", "share_correct",
                        "lift", "p_value"]
TOP_COLUMNS = ["task", "kind", "rank", "user_id", "week_start", "y_true", "y_score",
               "baseline_score", "device", "device_generation", "age", "sex"]


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
        for value in sorted(set(labels), key=natural_key):
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
    return pd.DataFrame(records, columns=LOSS_PATTERN_COLUMNS)


def _lift(share_losses: float | None, share_correct: float | None) -> float | None:
    if share_losses is None or share_correct is None:
        return None
    return share_losses / share_correct if share_correct else math.inf


def correct_patterns(patterns: pd.DataFrame, config: AnalyzeConfig) -> pd.DataFrame:
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
    """The k most confident rows of each kind: FP and FN (wrong), TP and TN (right); the
    TOP_COLUMNS the rows have."""
    y = rows["y_true"].to_numpy().astype(bool)
    frame = rows.assign(task=task_name)
    order = [c for c in ("y_score", "user_id", "week_start") if c in frame.columns]
    kinds = {  # kind: (its rows, ascending scores: the lowest score is the most confident)
        "FP": (~y & predicted, False), "FN": (y & ~predicted, True),
        "TP": (y & predicted, False), "TN": (~y & ~predicted, True),
    }
    parts = []
    for kind, (selected, ascending) in kinds.items():
        chosen = frame[selected].sort_values(
            order, ascending=[ascending] + [True] * (len(order) - 1)).head(top_k)
        parts.append(chosen.assign(kind=kind, rank=np.arange(1, len(chosen) + 1)))
    top = pd.concat(parts, ignore_index=True)
    return top[[c for c in TOP_COLUMNS if c in top.columns]]
