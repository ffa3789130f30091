"""Training data: the sequence store opened as arrays, and its batches as a tf.data pipeline.

`open_store` checks the store (index columns, null metadata, shard shapes, model/store shapes;
every breach at once) and opens the shards memory-mapped, the index split by split as arrays;
`make_dataset` batches a split: index rows permuted per epoch by `epoch_order`, a stateless
shuffle of (seed, epoch) that is identical after a resume, each batch's sequences read from the
shards by one `tf.numpy_function`, reading overlapped with the step by `prefetch`. Memory holds
the index and a few batches, never the store. The synthetic stage reads the store the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from model.deepheart import ModelConfig, TaskSpec
from schemas.errors import DataContractError, Problem, UsageError
from schemas.sequence_store import INDEX, StorePaths, StoreStats


@dataclass(frozen=True)
class Split:
    """The index rows of one split, as arrays; sequences stay on disk."""

    rows: pa.Table  # index rows in store order (for predictions)
    shard_ids: np.ndarray  # int32 [n], into Store.shards
    shard_rows: np.ndarray  # int32 [n]
    metadata: np.ndarray  # float32 [n, M]
    labels: dict[str, np.ndarray]  # task -> float32 [n], NaN = unknown

    def __len__(self) -> int:
        return len(self.shard_rows)


@dataclass(frozen=True)
class Store:
    """An opened store: its stats, its shards (memory-mapped) and the index of every split."""

    stats: StoreStats
    shards: tuple[np.ndarray, ...]  # memory-mapped float32 [n_shard, T, C]
    splits: dict[str, Split]

    def read(self, shard_ids: np.ndarray, shard_rows: np.ndarray) -> np.ndarray:
        """Sequences of a batch, [b, T, C] float32, gathered shard by shard."""
        out = np.empty((len(shard_rows), *self.shards[0].shape[1:]), np.float32)
        for shard in np.unique(shard_ids):
            at = np.flatnonzero(shard_ids == shard)
            out[at] = self.shards[shard][shard_rows[at]]
        return out


def open_store(root: Path, model_config: ModelConfig) -> Store:
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
    return Store(stats=stats, shards=shards, splits=splits)


def _split(index: pa.Table, at: np.ndarray, shard_ids: np.ndarray, stats: StoreStats) -> Split:
    rows = index.take(at)
    metadata = rows.column("metadata").combine_chunks().flatten().to_numpy()
    return Split(
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


def epoch_order(num_rows: int, seed: int, epoch: tf.Tensor | int) -> tf.Tensor:
    """The permutation of a split's rows for one epoch: a pure function of (seed, epoch)."""
    seeds = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.range(num_rows, dtype=tf.int64), seeds)


def make_dataset(store: Store, split: Split, tasks: Sequence[TaskSpec], batch_size: int, *,
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
