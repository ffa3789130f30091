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
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from model.callbacks import DeadUnitMonitor
from model.deepheart import ModelConfig, TaskSpec, build_model, transfer_weights
from model.losses import MaskedBinaryCrossentropy, MaskedMeanSquaredError
from schemas.config import StageConfig
from schemas.errors import DataContractError, Problem, UsageError
from schemas.layout import RunPaths
from schemas.sequence_store import INDEX, StorePaths, StoreStats
from schemas.tables import PREDICTIONS
from tasks._batches import iter_store_batches
from tasks.io import write_json_atomic, write_parquet_atomic

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


def epoch_order(num_rows: int, seed: int, epoch: tf.Tensor | int) -> tf.Tensor:
    """The permutation of a split's rows for one epoch: a pure function of (seed, epoch)."""
    seeds = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(num_rows, dtype=tf.int64), seeds)


# --- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Split:
    """The index rows of one split, as arrays; sequences stay on disk."""

    rows: pa.Table  # index rows in store order (for predictions)
    shard_ids: np.ndarray  # int32 [n], into _Store.shards
    shard_rows: np.ndarray  # int32 [n]
    metadata: np.ndarray  # float32 [n, M]
    labels: dict[str, np.ndarray]  # task -> float32 [n], NaN = unknown

    def __len__(self) -> int:
        return len(self.shard_rows)


@dataclass(frozen=True)
class _Store:
    stats: StoreStats
    shards: tuple[np.ndarray, ...]  # memory-mapped float32 [n_shard, T, C]
    splits: dict[str, _Split]

    def read(self, shard_ids: np.ndarray, shard_rows: np.ndarray) -> np.ndarray:
        """Sequences of a batch, [b, T, C] float32, gathered shard by shard."""
        out = np.empty((len(shard_rows), *self.shards[0].shape[1:]), np.float32)
        for shard in np.unique(shard_ids):
            at = np.flatnonzero(shard_ids == shard)
            out[at] = self.shards[shard][shard_rows[at]]
        return out


def _open_store(root: Path, model_config: ModelConfig) -> _Store:
    paths = StorePaths(root=Path(root))
    missing = [p for p in (paths.index, paths.stats) if not p.exists()]
    if missing:
        raise DataContractError("train: the sequence store is incomplete", [
            Problem("missing_file", f"{p.name} does not exist.", "Run the sequences stage first.",
                    file=str(p)) for p in missing])
    stats = StoreStats.model_validate_json(paths.stats.read_text())
    index = pq.read_table(paths.index)
    _check_store(paths, stats, index, model_config)
    names = sorted(set(index.column("shard").to_pylist()))
    shards = tuple(np.load(paths.shard(name), mmap_mode="r") for name in names)
    bad = [Problem("shard_shape", f"shape {s.shape}, dtype {s.dtype}; expected [n, "
                   f"{stats.num_steps}, {len(stats.channels)}] float32.", "Re-run the sequences "
                   "stage.", file=str(paths.shard(name)))
           for name, s in zip(names, shards, strict=True)
           if s.dtype != np.float32 or s.shape[1:] != (stats.num_steps, len(stats.channels))]
    if bad:
        raise DataContractError("train: shards do not match stats.json", bad)
    shard_ids = pc.index_in(index.column("shard"), pa.array(names)).to_numpy().astype(np.int32)
    shard_lengths = np.array([len(s) for s in shards])
    rows = index.column("row").to_numpy().astype(np.int32)
    if np.any(rows >= shard_lengths[shard_ids]):
        raise DataContractError("train: index.parquet and the shards disagree", [Problem(
            "row_out_of_range", f"{int(np.sum(rows >= shard_lengths[shard_ids]))} index rows "
            "point past the end of their shard.", "Re-run the sequences stage.",
            file=str(paths.index), column="row")])
    split_column = index.column("split").to_numpy(zero_copy_only=False)
    splits = {name: _split(index, np.flatnonzero(split_column == name), shard_ids, stats)
              for name in ("train", "val", "test")}
    return _Store(stats=stats, shards=shards, splits=splits)


def _split(index: pa.Table, at: np.ndarray, shard_ids: np.ndarray, stats: StoreStats) -> _Split:
    rows = index.take(at)
    metadata = rows.column("metadata").combine_chunks().flatten().to_numpy()
    return _Split(
        rows=rows,
        shard_ids=shard_ids[at],
        shard_rows=rows.column("row").to_numpy().astype(np.int32),
        metadata=metadata.reshape(len(at), len(stats.metadata_features)).astype(np.float32),
        labels={name: pc.cast(rows.column(name), pa.float32()).to_numpy(zero_copy_only=False)
                for name in (*stats.targets, *stats.conditions)},
    )


def _check_store(paths: StorePaths, stats: StoreStats, index: pa.Table, config: ModelConfig) -> None:
    """Every contract breach at once: index columns, null metadata, model/store shapes."""
    problems = [Problem("missing_column", f"column {c!r} is missing.", "Re-run the sequences "
                        "stage.", file=str(paths.index), column=c)
                for c in (*INDEX.names, *stats.targets, *stats.conditions)
                if c not in index.column_names]
    if not problems and index.column("metadata").null_count:
        problems.append(Problem("null_metadata", "metadata vectors are null.", "Re-run the "
                                "sequences stage.", file=str(paths.index), column="metadata",
                                count=index.column("metadata").null_count))
    if problems:
        raise DataContractError("train: index.parquet breaks the sequence store contract", problems)
    store_shape = (stats.num_steps, len(stats.channels), len(stats.metadata_features))
    model_shape = (config.num_steps, config.num_channels, config.num_metadata)
    if model_shape not in (store_shape, (*store_shape[:2], 0)):
        raise UsageError(
            f"train: the model expects (T, C, M) = {model_shape} but the store at {paths.root} "
            f"holds {store_shape}. Set model num_steps={store_shape[0]}, num_channels="
            f"{store_shape[1]}, num_metadata={store_shape[2]} (or 0 for no metadata)."
        )


def _task_specs(store: _Store, config: TrainConfig) -> tuple[list[TaskSpec], list[TaskSpec]]:
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


def _dataset(store: _Store, split: _Split, tasks: Sequence[TaskSpec], batch_size: int, *,
             use_metadata: bool, seed: int | None = None, epochs: range = range(1)
             ) -> tf.data.Dataset:
    """Batches ({sequence, metadata}, {head: y}) of `split`; shuffled per epoch when `seed` is
    given (then one pass per epoch in `epochs`, for fit with steps_per_epoch), else in order."""
    num_rows = len(split)
    if seed is None:
        order = tf.data.Dataset.range(num_rows).batch(batch_size)
    else:
        order = tf.data.Dataset.range(epochs.start, epochs.stop).flat_map(
            lambda epoch: tf.data.Dataset.from_tensor_slices(
                epoch_order(num_rows, seed, epoch)).batch(batch_size))
    shard_ids, shard_rows = tf.constant(split.shard_ids), tf.constant(split.shard_rows)
    metadata = tf.constant(split.metadata)
    labels = {task.head: tf.constant(split.labels[task.name]) for task in tasks}
    shape = store.shards[0].shape[1:]

    def load(at: tf.Tensor) -> tuple[dict[str, tf.Tensor], dict[str, tf.Tensor]]:
        sequence = tf.numpy_function(store.read, [tf.gather(shard_ids, at),
                                                  tf.gather(shard_rows, at)], tf.float32,
                                     stateful=False)
        sequence.set_shape([None, *shape])  # [b, T, C]
        x = {"sequence": sequence}
        if use_metadata:
            x["metadata"] = tf.gather(metadata, at)  # [b, M]
        return x, {head: tf.gather(y, at)[:, None] for head, y in labels.items()}  # [b, 1]

    return order.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _State:
    """Everything a retried run needs besides the weights; stored next to each checkpoint."""

    fingerprint: str
    phase_index: int
    phase: str
    phase_first_epoch: int  # global epochs completed before this phase began
    epoch: int  # global epochs completed
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped: bool = False
    history: tuple[dict[str, Any], ...] = ()

    def finished(self, phase: Phase) -> bool:
        return self.stopped or self.epoch >= self.phase_first_epoch + phase.max_epochs


class _Checkpoints:
    """checkpoints/epoch-NNN.keras + epoch-NNN.json of one configuration (its fingerprint)."""

    def __init__(self, root: Path, keep: int, fingerprint: str) -> None:
        self.root, self.keep, self.fingerprint = Path(root), keep, fingerprint

    def model_path(self, epoch: int) -> Path:
        return self.root / f"epoch-{epoch:03d}.keras"

    def latest(self) -> _State | None:
        """The newest complete checkpoint (its JSON exists, so its model was saved first)."""
        for state_file in sorted(self.root.glob("epoch-*.json"), key=_epoch_of, reverse=True):
            state = json.loads(state_file.read_text())
            if self.model_path(state["epoch"]).exists():
                return _State(**{**state, "history": tuple(state["history"])})
        return None

    def save(self, model: keras.Model, state: _State) -> None:
        path = _save_model(model, self.model_path(state.epoch))
        write_json_atomic(asdict(state), path.with_suffix(".json"))
        keep = {state.best_epoch, *sorted(self._epochs())[-self.keep:]}
        for epoch in self._epochs() - keep:
            self.model_path(epoch).with_suffix(".json").unlink(missing_ok=True)
            self.model_path(epoch).unlink(missing_ok=True)

    def _epochs(self) -> set[int]:
        return {_epoch_of(p) for p in self.root.glob("epoch-*.json")}


def _epoch_of(state_file: Path) -> int:
    return int(state_file.stem.split("-")[1])  # epoch-NNN.json; numeric, so 1000 follows 999


class _EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: resumable early stopping, a checkpoint, one log line."""

    def __init__(self, checkpoints: _Checkpoints, state: _State, monitor: str, patience: int,
                 phase: Phase) -> None:
        super().__init__()
        self.checkpoints, self.state = checkpoints, state
        self.monitor, self.patience, self.phase = monitor, patience, phase

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        value, state = logs.get(self.monitor, math.nan), self.state
        improved = math.isfinite(value) and (state.best is None or value < state.best)
        wait = 0 if improved else state.wait + 1
        self.state = state = replace(
            state,
            epoch=epoch + 1,
            best=value if improved else state.best,
            best_epoch=epoch + 1 if improved else state.best_epoch,
            wait=wait,
            stopped=wait >= self.patience,
            history=(*state.history, {"epoch": epoch + 1, "phase": state.phase, **logs}),
        )
        self.model.stop_training = state.stopped
        self.checkpoints.save(self.model, state)
        log.info("epoch %d (%s, ends by %d): %s=%.4f best=%.4f%s", epoch + 1, state.phase,
                 state.phase_first_epoch + self.phase.max_epochs, self.monitor, value,
                 state.best if state.best is not None else math.nan,
                 " -> early stop" if state.stopped else "")


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
    store = _open_store(store_dir, model_config)
    phases = plan_phases(config, *_task_specs(store, config))
    checkpoints = _Checkpoints(out_dir / "checkpoints", config.keep_checkpoints,
                               _fingerprint(model_config, phases))
    resumed = _resumable(checkpoints)
    run = _Run(store, config, model_config, out_dir, checkpoints, tuple(callbacks),
               monitor="val_loss" if len(store.splits["val"]) else "loss")
    keras.utils.set_random_seed(config.seed)
    model, state = _train_phases(run, phases, resumed)

    final_tasks = phases[-1].tasks
    final = build_model(model_config, final_tasks)  # uncompiled: loads without stethoscope
    final.set_weights(model.get_weights())
    model_path = _save_model(final, out_dir / "model.keras")
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


@dataclass(frozen=True)
class _Run:
    """What every phase of one training run shares."""

    store: _Store
    config: TrainConfig
    model_config: ModelConfig
    out_dir: Path
    checkpoints: _Checkpoints
    callbacks: tuple[keras.callbacks.Callback, ...]
    monitor: str

    @property
    def use_metadata(self) -> bool:
        return self.model_config.num_metadata > 0


def _resumable(checkpoints: _Checkpoints) -> _State | None:
    """The newest checkpoint's state, after checking that it belongs to this configuration."""
    state = checkpoints.latest()
    if state is not None and state.fingerprint != checkpoints.fingerprint:
        raise UsageError(
            f"train: the checkpoints in {checkpoints.root} come from a different model or task "
            "set than this configuration, so they cannot be resumed. Delete that directory or "
            "train into a new run directory."
        )
    if state is not None:
        log.info("resuming from checkpoint epoch %d (%s)", state.epoch, state.phase)
    return state


def _train_phases(run: _Run, phases: Sequence[Phase], resumed: _State | None
                  ) -> tuple[keras.Model, _State]:
    """Run (or finish) every phase; returns the last phase's model with its best weights."""
    model, state = None, resumed
    for index, phase in enumerate(phases):
        if state is not None and state.phase_index > index:
            continue  # finished before the crash; its weights live on in the later phase
        if state is not None and state.phase_index == index:
            model = keras.saving.load_model(run.checkpoints.model_path(state.epoch),
                                            safe_mode=True)
        else:
            keras.utils.set_random_seed(run.config.seed + index)  # same init fresh or resumed
            previous, model = model, build_model(run.model_config, phase.tasks)
            if previous is not None:
                log.info("fine-tuning from pre-trained layers %s",
                         transfer_weights(previous, model))
            _compile(model, phase.tasks, run.config.learning_rate)
            first = state.epoch if state is not None else 0
            state = _State(run.checkpoints.fingerprint, index, phase.name, first, first,
                           history=state.history if state is not None else ())
        if not state.finished(phase):
            state = _fit(run, model, phase, state)
        if state.best_epoch is not None:  # early stopping restores the best epoch's weights
            model.load_weights(run.checkpoints.model_path(state.best_epoch))
    return model, state


def _compile(model: keras.Model, tasks: Sequence[TaskSpec], learning_rate: float) -> None:
    """Adam; masked losses; a regression loss weighted 1/scale**2, i.e. in standardised units."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={t.head: MaskedBinaryCrossentropy() if t.kind == "classification"
              else MaskedMeanSquaredError() for t in tasks},
        loss_weights={t.head: 1.0 / t.scale**2 for t in tasks},
    )


def _fit(run: _Run, model: keras.Model, phase: Phase, state: _State) -> _State:
    """model.fit from the state's epoch to the end of the phase (or an early stop)."""
    last = state.phase_first_epoch + phase.max_epochs
    train, val = run.store.splits["train"], run.store.splits["val"]
    batch_size, metadata = run.config.batch_size, run.use_metadata
    train_data = _dataset(run.store, train, phase.tasks, batch_size, use_metadata=metadata,
                          seed=run.config.seed, epochs=range(state.epoch, last))
    val_data = (_dataset(run.store, val, phase.tasks, batch_size, use_metadata=metadata)
                if len(val) else None)
    checkpoint = _EpochCheckpoint(run.checkpoints, state, run.monitor, run.config.patience, phase)
    tensorboard = _tensorboard(run.out_dir / "tensorboard" / phase.name)
    model.fit(train_data, validation_data=val_data, initial_epoch=state.epoch, epochs=last,
              steps_per_epoch=math.ceil(len(train) / batch_size),
              callbacks=[*run.callbacks, checkpoint, *tensorboard], shuffle=False, verbose=0)
    return checkpoint.state


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """The TensorBoard callback; none (and a warning) when the tensorboard package is absent,
    since Keras would only fail at the end of the first epoch."""
    if importlib.util.find_spec("tensorboard") is None:
        log.warning("tensorboard is not installed, so no TensorBoard logs are written to %s; "
                    "`pip install tensorboard` to get them", log_dir)
        return []
    return [keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False)]


def _predict(model: keras.Model, run: _Run, tasks: Sequence[TaskSpec]) -> pa.Table:
    """Validation and test rows x condition tasks with a known label."""
    parts = []
    conditions = [t for t in tasks if t.kind == "classification"]
    for name in ("val", "test"):
        split = run.store.splits[name]
        if not len(split) or not conditions:
            continue
        scores = model.predict(_dataset(run.store, split, conditions, run.config.batch_size,
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


def _save_model(model: keras.Model, path: Path) -> Path:
    """model.save, atomically (Keras insists on the .keras suffix, so no tasks.io helper)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    model.save(partial)
    os.replace(partial, path)
    return path


def _fingerprint(model_config: ModelConfig, phases: Sequence[Phase]) -> str:
    """What a checkpoint must agree with to be resumed: the architecture and the heads."""
    spec = {"model": model_config.model_dump(mode="json"),
            "phases": [[p.name, [t.model_dump(mode="json") for t in p.tasks]] for p in phases]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


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
