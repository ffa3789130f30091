"""Training stage: sequence store -> `model.keras`, checkpoints, history, TensorBoard logs and
`predictions.parquet` for the validation and test users (docs/architecture.md §4.7).

Modes (TrainConfig.mode):
- `supervised`: the condition labels (sigmoid heads, unknown labels masked).
- `pretrain_finetune`: pre-train on the synthetic targets (linear heads), then copy every shared
  layer into a network with condition heads and fine-tune it (technique 1, docs/architecture.md §1.1).
- `synthetic`: the synthetic targets alone. Also what the two other modes fall back to when the
  store has no conditions (no labels.parquet); predictions.parquet is then empty.

Data: index rows are permuted per epoch with a stateless shuffle of (seed, epoch) -- a uniform
shuffle with no buffer, identical after a resume -- batched, and each batch's sequences are read
from the memory-mapped shards by one `tf.numpy_function`; `prefetch` overlaps reading with the
step. Memory holds the index and a few batches, never the store.

Fault tolerance: after every epoch the model (with optimizer state) is saved to
`checkpoints/epoch-NNN.keras`, then `epoch-NNN.json` records the epoch, the phase and the early
stopping state; the JSON is written last, so it marks a complete checkpoint. A retried run
continues from the newest complete checkpoint with the same per-epoch data order. Early stopping
lives in that JSON (Keras' EarlyStopping and BackupAndRestore forget their state on restart).

The parts live in private modules: the store and its tf.data batches in
`tasks/shared/store.py`, checkpoints and resumable early stopping in
`tasks/train/checkpoints.py`, the fit loop over phases in `tasks/train/loop.py`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa

from stethoscope.model.config import ModelConfig, TaskSpec
from stethoscope.model.deepheart import build_model, compile_model
from stethoscope.schemas.atomic import write_json_atomic, write_parquet_atomic
from stethoscope.schemas.errors import DataContractError, Problem, UsageError
from stethoscope.tasks.shared.datasets import make_dataset
from stethoscope.tasks.shared.store import Split, Store, open_store
from stethoscope.tasks.train.checkpoints import (
    Checkpoints,
    CheckpointState,
    run_fingerprint,
    save_model,
)
from stethoscope.tasks.train.config import PREDICTION_COLUMNS, Phase, TrainConfig, TrainResult
from stethoscope.tasks.train.loop import TrainRun, resumable_state, train_phases
from stethoscope.tasks.train.pretrain_record import PRETRAIN_RECORD_FILE, pretrain_record

log = logging.getLogger("stethoscope.train")


# Their former private names, which tests/model and bench/ import from here.
_Split, _Store, _open_store, _dataset, _compile = (
    Split, Store, open_store, make_dataset, compile_model)


def plan_phases(
    config: TrainConfig, conditions: Sequence[TaskSpec], targets: Sequence[TaskSpec]
) -> list[Phase]:
    """The phases of a run, after falling back for what the store lacks."""
    mode = config.mode
    if mode != "synthetic" and not conditions:
        log.warning("no condition labels in the store (no labels.parquet?): training on the "
                    "synthetic targets alone; predictions.parquet will be empty")
        mode = "synthetic"
    if mode == "pretrain_finetune" and not targets:
        log.warning("no synthetic targets to pre-train on: training supervised only")
        mode = "supervised"
    if mode == "synthetic" and not targets:
        raise DataContractError(
            "train: nothing to learn",
            [Problem("no_tasks", f"mode {config.mode!r} needs a synthetic target with a known "
                     "training value, and the sequence store has none"
                     f"{'' if conditions else ' (nor condition labels)'}.", "Re-run the labels "
                     "and sequences stages, supply labels.parquet, or train supervised.",
                     file="index.parquet")],
        )
    if mode == "supervised":
        return [Phase("supervised", tuple(conditions), config.epochs)]
    if mode == "synthetic":
        return [Phase("synthetic", tuple(targets), config.epochs)]
    return [Phase("pretrain", tuple(targets), config.pretrain_epochs),
            Phase("finetune", tuple(conditions), config.epochs)]


def _task_specs(store: Store, config: TrainConfig) -> tuple[list[TaskSpec], list[TaskSpec]]:
    """Condition and target heads; a target is standardised with its train-split mean and std."""
    stats, train = store.stats, store.splits["train"]
    unknown = sorted({*(config.conditions or ()), *(config.targets or ())}
                     - {*stats.conditions, *stats.targets})
    if unknown:
        raise UsageError(f"train: {unknown} are not in the store (conditions {stats.conditions}, "
                         f"targets {stats.targets}). Fix train.conditions / train.targets.")
    conditions = [TaskSpec(name=c, kind="classification")
                  for c in (stats.conditions if config.conditions is None else config.conditions)]
    targets = []
    for name in stats.targets if config.targets is None else config.targets:
        known = train.labels[name][~np.isnan(train.labels[name])]
        if not len(known):
            log.warning("synthetic target %s has no known value in the train split; skipped", name)
            continue
        std = float(np.std(known))
        scale = std if math.isfinite(std) and std > 1e-12 else 1.0
        targets.append(TaskSpec(name=name, kind="regression", offset=float(np.mean(known)),
                                scale=scale))
    return conditions, targets


def train_model(
    store_dir: Path,
    out_dir: Path,
    config: TrainConfig,
    model_config: ModelConfig,
    *,
    predictions_path: Path | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train on the sequence store at `store_dir`, resuming from the newest checkpoint under
    `out_dir/checkpoints` if one exists; write `out_dir/model.keras` (best weights, no compile
    state), `out_dir/history.json` and predictions (default `out_dir/predictions.parquet`).
    `callbacks` run before the checkpoint and TensorBoard callbacks, so logs they add are kept."""
    out_dir = Path(out_dir)
    store = open_store(store_dir, model_config)
    phases = plan_phases(config, *_task_specs(store, config))
    checkpoints = Checkpoints(out_dir / "checkpoints", config.keep_checkpoints,
                              run_fingerprint(model_config, phases))
    resumed = resumable_state(checkpoints)
    run = TrainRun(store, config, model_config, out_dir, checkpoints, tuple(callbacks),
                   monitor="val_loss" if len(store.splits["val"]) else "loss")
    record_path = out_dir / PRETRAIN_RECORD_FILE
    if resumed is None:
        record_path.unlink(missing_ok=True)  # an earlier run's, in a reused model directory

    def record(phase: Phase, model: keras.Model, state: CheckpointState) -> None:
        if phase.name in ("pretrain", "synthetic"):
            history = [row for row in state.history if row["phase"] == phase.name]
            found = pretrain_record(model, store, phase, model_config, history, config.batch_size)
            if found is not None:
                write_json_atomic(found, record_path)

    keras.utils.set_random_seed(config.seed)
    model, state = train_phases(run, phases, resumed, after_phase=record)

    final_tasks = phases[-1].tasks
    final = build_model(model_config, final_tasks)  # uncompiled: loads without stethoscope
    final.set_weights(model.get_weights())
    model_path = save_model(final, out_dir / "model.keras")
    history_path = write_json_atomic(list(state.history), out_dir / "history.json")
    predictions = _predict(final, run, final_tasks)
    predictions_path = write_parquet_atomic(
        predictions, Path(predictions_path or out_dir / "predictions.parquet"))
    return TrainResult(
        model_path=model_path, history_path=history_path, predictions_path=predictions_path,
        checkpoint_dir=checkpoints.root, tensorboard_dir=out_dir / "tensorboard",
        mode="pretrain_finetune" if phases[-1].name == "finetune" else phases[-1].name,
        tasks=tuple(t.name for t in final_tasks), epochs_completed=state.epoch,
        monitor=run.monitor, best_loss=state.best,
        resumed_from_epoch=resumed.epoch if resumed else None,
        num_predictions=predictions.num_rows,
        pretrain_record=record_path if record_path.exists() and any(
            p.name in ("pretrain", "synthetic") for p in phases) else None,
    )


def _predict(model: keras.Model, run: TrainRun, tasks: Sequence[TaskSpec]) -> pa.Table:
    """Validation and test rows x condition tasks with a known label."""
    parts = []
    conditions = [t for t in tasks if t.kind == "classification"]
    for name in ("val", "test"):
        split = run.store.splits[name]
        if not len(split) or not conditions:
            continue
        scores = model.predict(make_dataset(run.store, split, conditions, run.config.batch_size,
                                            use_metadata=run.use_metadata), verbose=0)
        for condition in conditions:
            y_true = split.labels[condition.name]
            at = np.flatnonzero(~np.isnan(y_true))
            rows = split.rows.take(at)
            parts.append(pa.table({
                "user_id": rows.column("user_id"), "week_start": rows.column("week_start"),
                "task": pa.array([condition.name] * len(at), pa.string()),
                "split": pa.array([name] * len(at), pa.string()),
                "y_true": pa.array(y_true[at].astype(np.int8)),
                "y_score": pa.array(scores[condition.head][at, 0].astype(np.float64)),
                **{c: rows.column(c) for c in ("device", "device_generation", "age", "sex",
                                               "coverage")},
            }).cast(PREDICTION_COLUMNS))
    return pa.concat_tables(parts) if parts else PREDICTION_COLUMNS.empty_table()
