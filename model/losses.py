"""Losses that mask unknown labels.

A label is unknown when it is NaN (labels.parquet null -> NaN in the training arrays). Unknown
labels contribute zero loss and zero gradient, and the batch loss is the mean over the *known*
labels only, so a batch with the masked example gives exactly the gradient of the same batch
without it (a plain sample-weight mask divides by the batch size instead, which silently scales
the learning rate of a head by its share of known labels). Under tf.distribute the known labels
are counted over every replica's slice of the batch (`_over_replicas`), so two devices compute
the loss and gradient of one.

Both losses are registered (package "stethoscope"); a checkpoint that holds them loads after
`import model.losses`. The final `model.keras` is saved without compile state, so it loads with
plain Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

_EPSILON = 1e-7


def _masked_mean(y_true: Any, y_pred: Any, elementwise: Callable[[Any, Any], Any]) -> Any:
    """Per-example values whose sum is the mean of `elementwise` over the known elements.

    Each returned value already carries the 1 / num_known weight, and the losses reduce by a
    plain sum, so `loss == sum(known losses) / num_known` (0 when nothing is known: the batch
    then teaches this head nothing).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    y_true = ops.cast(y_true, y_pred.dtype)
    known = ops.logical_not(ops.isnan(y_true))
    # NaN is replaced before it meets any arithmetic: where(known, loss, 0) alone would still
    # back-propagate NaN * 0 = NaN through the branch it did not select.
    safe_true = ops.where(known, y_true, ops.zeros_like(y_true))
    weight = ops.cast(known, y_pred.dtype)
    per_element = elementwise(safe_true, y_pred) * weight
    num_known = ops.maximum(_over_replicas(ops.sum(weight)), 1.0)
    per_example = ops.reshape(per_element, (ops.shape(per_element)[0], -1))  # [batch, outputs]
    return ops.sum(per_example, axis=-1) / num_known


def _over_replicas(count: Any) -> Any:
    """`count` summed over the replicas of a tf.distribute strategy (itself on one device).

    Each replica holds a slice of the batch; dividing its sum of losses by the *global*
    number of known labels makes the replicas' summed gradients exactly the gradient of the
    whole batch's masked mean (and Keras' loss report, which averages the replicas' losses
    times their number, exactly that mean). A replica's own count would weigh a slice with
    few known labels as much as one with many."""
    if keras.backend.backend() != "tensorflow":
        return count
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return count
    return context.all_reduce(tf.distribute.ReduceOp.SUM, count)


def _binary_crossentropy(y_true: Any, y_pred: Any) -> Any:
    p = ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
    return -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))


def _squared_error(y_true: Any, y_pred: Any) -> Any:
    return ops.square(y_true - y_pred)


@keras.saving.register_keras_serializable(package="stethoscope")
class MaskedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy on probabilities (a sigmoid head); NaN labels are masked."""

    def __init__(self, name: str = "masked_binary_crossentropy", dtype: Any = None) -> None:
        super().__init__(name=name, reduction="sum", dtype=dtype)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return _masked_mean(y_true, y_pred, _binary_crossentropy)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}


@keras.saving.register_keras_serializable(package="stethoscope")
class MaskedMeanSquaredError(keras.losses.Loss):
    """Squared error (a linear head); NaN targets are masked."""

    def __init__(self, name: str = "masked_mean_squared_error", dtype: Any = None) -> None:
        super().__init__(name=name, reduction="sum", dtype=dtype)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return _masked_mean(y_true, y_pred, _squared_error)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}
