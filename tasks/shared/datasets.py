"""Batches of the sequence store as a tf.data pipeline, for training and the synthetic audit.

`make_dataset` batches a split: index rows permuted per epoch by `epoch_order`, a stateless
shuffle of (seed, epoch) that is identical after a resume, each batch's sequences read from the
shards by one `tf.numpy_function`, reading overlapped with the step by `prefetch`. Memory holds
the index and a few batches, never the store."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from stethoscope.model.config import TaskSpec
from stethoscope.tasks.shared.store import Split, Store


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


def without_autotune(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """`dataset` with tf.data's autotuner off. When `fit` returns, it drops its iterator, and
    deleting an iterator waits for the autotuner's thread, which wakes up only at its next
    optimisation period -- a period that grows over a long fit: 22-51 s after the last epoch
    of a nightly training, 28 s after 5 epochs at T = 4096 (bench/bench_audit_cost.py; 1 s
    without autotune). The step (a recurrent network over T bins) dwarfs reading a batch from
    the memory-mapped shards, so fixed parallelism and buffers cost nothing measurable."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
