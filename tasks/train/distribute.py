"""Training on several devices with tf.distribute (`train.distribute`).

- `none`: the default device, as always;
- `mirrored`: `tf.distribute.MirroredStrategy` over every GPU, or, on a machine without one,
  over every logical CPU device (what the tests use: two logical CPUs stand in for two GPUs);
  each batch is split across the replicas and the gradients summed, so the loss curve is the
  one of one device up to floating-point order;
- `multi_worker`: `MultiWorkerMirroredStrategy`, one process per machine, the cluster described
  by `TF_CONFIG` in each worker's environment (TensorFlow's convention);
- `auto`: `mirrored` when more than one GPU is visible, else `none`.

The model is built, compiled and reloaded inside the strategy's scope (`scope`); `model.fit`
distributes the tf.data batches itself. The saved `model.keras` is the same file either way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import tensorflow as tf

log = logging.getLogger("stethoscope.train")

Distribute = Literal["auto", "none", "mirrored", "multi_worker"]


def strategy_for(choice: Distribute) -> tf.distribute.Strategy | None:
    """The strategy `choice` asks for on this machine; None for the default device."""
    gpus = tf.config.list_logical_devices("GPU")
    if choice == "none" or (choice == "auto" and len(gpus) < 2):
        return None
    if choice == "multi_worker":
        strategy: tf.distribute.Strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif gpus:
        strategy = tf.distribute.MirroredStrategy([d.name for d in gpus])
    else:
        strategy = tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")])
    log.info("training with %s over %d replicas", type(strategy).__name__,
             strategy.num_replicas_in_sync)
    return strategy


@contextlib.contextmanager
def scope(strategy: tf.distribute.Strategy | None) -> Iterator[None]:
    """Inside `strategy.scope()` (variables are mirrored), or nothing without one."""
    if strategy is None:
        yield
        return
    with strategy.scope():
        yield
