"""What training on the synthetic targets learned of each target: `model/pretrain_r2.json`, the
synthetic audit's verdict on the configured network (docs/architecture.md §1.1, §4.10).

When a phase trains on the synthetic targets (`pretrain` of pretrain_finetune, or `synthetic`),
its best epoch's weights are scored, as the synthetic audit scores a network it trains itself:
R² (`sklearn.metrics.r2_score`, in the target's own units) on every validation user-week whose
target is known, next to the train mean's R² (the head's offset: the mean over the whole train
split). A network whose predictions are not finite is scored as the train mean. The record
also says what it costs to know this (the budget: epochs run, the best one, the train
user-weeks), on what it was scored (the validation users, so that the audit scores its
reference on the same ones and notices a record of another store) and the prediction of every
validation row, which the audit resamples by user for the intervals of its verdicts
(tasks/audits/synthetic/evidence.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from sklearn.metrics import r2_score

from stethoscope.model.config import ModelConfig
from stethoscope.tasks.shared.datasets import make_dataset
from stethoscope.tasks.shared.store import Store
from stethoscope.tasks.train.config import Phase

PRETRAIN_RECORD_FILE = "pretrain_r2.json"


def pretrain_record(model: keras.Model, store: Store, phase: Phase, model_config: ModelConfig,
                    history: Sequence[dict[str, Any]], batch_size: int) -> dict[str, Any] | None:
    """The record of a phase on the synthetic targets, its best weights loaded in `model`;
    `history` holds that phase's epochs (rows of history.json). None without a validation
    split (nothing to score on)."""
    val = store.splits["val"]
    if not len(val) or not history:
        return None
    train_labels = store.splits["train"].labels
    outputs = model.predict(make_dataset(store, val, phase.tasks, batch_size,
                                         use_metadata=model_config.num_metadata > 0), verbose=0)
    losses = [row.get("val_loss", np.nan) for row in history]
    best = int(np.nanargmin(losses)) if np.isfinite(losses).any() else len(losses) - 1
    targets = {}
    for spec in phase.tasks:
        truth, predicted = val.labels[spec.name], outputs[spec.head][:, 0]
        known = ~np.isnan(truth)
        if not np.all(np.isfinite(predicted[known])):  # diverged: scored as the train mean
            predicted = np.full(len(val), spec.offset)
        n_train = int(np.sum(~np.isnan(train_labels[spec.name])))
        # a single head is logged as the total loss only
        head_losses = [row.get(f"val_{spec.head}_loss", row.get("val_loss", np.nan))
                       for row in history]
        targets[spec.name] = {
            "r2": _r2(truth[known], predicted[known]),
            "baseline_r2": _r2(truth[known], np.full(int(known.sum()), spec.offset)),
            "n_train": n_train, "n_val": int(known.sum()),
            "still_improving": bool(np.isfinite(head_losses).any()
                                    and int(np.nanargmin(head_losses)) == len(history) - 1),
            # every validation row in store order, None where unknown: the audit resamples
            # them by user for its intervals
            "predicted": [float(v) if k else None for v, k in zip(predicted, known, strict=True)],
        }
    return {
        "phase": phase.name,
        "model": model_config.model_dump(mode="json"),
        "epochs": len(history), "best_epoch": best + 1, "max_epochs": phase.max_epochs,
        "train_user_weeks": len(store.splits["train"]), "val_user_weeks": len(val),
        "val_users": sorted(set(val.rows.column("user_id").to_pylist())),
        "targets": targets,
    }


def _r2(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    """R² of `predicted` on `truth` (both [n] of known values); None below two values."""
    return float(r2_score(truth, predicted)) if len(truth) >= 2 else None
