"""Training stage: sequence store -> `model.keras`, checkpoints, history, TensorBoard logs and
`predictions.parquet` for the validation and test users (DESIGN section 4, issue item 2).

Modes (TrainConfig.mode):
- `supervised`: the condition labels (sigmoid heads, unknown labels masked).
- `pretrain_finetune`: pre-train on the synthetic targets (linear heads), then copy every shared
  layer into a network with condition heads and fine-tune it (technique 1 of DESIGN section 1).
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
`tasks/_train_data.py`, checkpoints and resumable early stopping in
`tasks/_train_checkpoints.py`, the fit loop over phases in `tasks/_train_loop.py`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pyarrow as pa
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from model.callbacks import DeadUnitMonitor
from model.deepheart import ModelConfig, TaskSpec, build_model
from schemas.config import StageConfig
from schemas.errors import DataContractError, Problem, UsageError
from schemas.layout import RunPaths
from schemas.tables import PREDICTIONS
from tasks._batches import iter_store_batches
from tasks._train_checkpoints import Checkpoints, run_fingerprint, save_model
from tasks._train_data import Split, Store, epoch_order, make_dataset, open_store
from tasks._train_loop import TrainRun, compile_model, resumable_state, train_phases
from tasks.io import write_json_atomic, write_parquet_atomic

__all__ = [
    "DEAD_UNITS_FILE", "PREDICTION_COLUMNS", "Mode", "Phase", "TrainConfig", "TrainResult",
    "epoch_order", "plan_phases", "train_model", "train_task",
]
# Their former private names, which tests/model and bench/ import from here.
_Split, _Store, _open_store, _dataset, _compile = (
    Split, Store, open_store, make_dataset, compile_model)

log = logging.getLogger("stethoscope.train")

DEAD_UNITS_FILE = "dead_units.json"  # DeadUnitMonitor's rows: dead share per layer per epoch
Mode = Literal["supervised", "pretrain_finetune", "synthetic"]
# predictions.parquet: DESIGN's columns, then extra metadata for strata and loss patterns
PREDICTION_COLUMNS = pa.schema([*PREDICTIONS, pa.field("coverage", pa.float64())])


class TrainConfig(StageConfig):
    """How to train. Defaults: supervised, Adam 1e-3, up to 20 epochs, patience 3."""

    mode: Mode = "supervised"
    epochs: int = Field(20, ge=1, description="maximum epochs on the labels (or the targets)")
    pretrain_epochs: int = Field(5, ge=1, description="maximum epochs of pre-training")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(3, ge=1, description="epochs without a better val loss before stopping")
    seed: int = 0
    conditions: tuple[str, ...] | None = Field(None, description="None = every store condition")
    targets: tuple[str, ...] | None = Field(None, description="None = every synthetic target")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (+ the best)")


class TrainResult(BaseModel):
    """What training produced: paths and a few numbers, cheap to pass between tasks."""

    model_config = ConfigDict(frozen=True)

    model_path: Path
    history_path: Path
    predictions_path: Path
    checkpoint_dir: Path
    tensorboard_dir: Path
    mode: Mode  # as trained, after any fallback
    tasks: tuple[str, ...]  # heads of the saved model
    epochs_completed: int  # over all phases and attempts
    monitor: str  # "val_loss", or "loss" when the store has no validation split
    best_loss: float | None  # best monitored value of the last phase
    resumed_from_epoch: int | None  # None = started fresh
    num_predictions: int


# --- pure functions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """One `fit`: its name, its heads and its epoch budget."""

    name: Literal["supervised", "synthetic", "pretrain", "finetune"]
    tasks: tuple[TaskSpec, ...]
    max_epochs: int


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


# --- the core ------------------------------------------------------------------------------


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
    keras.utils.set_random_seed(config.seed)
    model, state = train_phases(run, phases, resumed)

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


# --- Prefect shell -------------------------------------------------------------------------


class _ProgressArtifact(keras.callbacks.Callback):
    """A Prefect progress artifact, moved after every epoch."""

    def __init__(self, total_epochs: int) -> None:
        super().__init__()
        from prefect.artifacts import create_progress_artifact

        self.total = total_epochs
        self.artifact = create_progress_artifact(0.0, key="training-progress",
                                                 description="Training epochs")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.move_to(100.0 * (epoch + 1) / self.total)

    def move_to(self, percent: float) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.artifact, min(100.0, percent))


@task(name="train")
def train_task(run_dir: Path, config: TrainConfig, model_config: ModelConfig,
               callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train from `<run>/sequences` into `<run>/model`, predictions to `<run>/predictions`."""
    paths = RunPaths(Path(run_dir))
    total = config.epochs + (config.pretrain_epochs if config.mode == "pretrain_finetune" else 0)
    progress = _ProgressArtifact(total)  # an early stop ends a phase before its budget
    sample = list(iter_store_batches(paths.sequences, "val", max_user_weeks=32, batch_size=32))
    monitor = DeadUnitMonitor([sample[0][0], sample[0][1]], path=paths.model_dir / DEAD_UNITS_FILE)
    result = train_model(paths.sequences, paths.model_dir, config, model_config,
                         predictions_path=paths.predictions, callbacks=[*callbacks, monitor, progress])
    progress.move_to(100.0)
    log.info("trained %s (%s), %d epochs, best %s %.4f; %d predictions", result.tasks,
             result.mode, result.epochs_completed, result.monitor, result.best_loss or math.nan,
             result.num_predictions)
    return result
