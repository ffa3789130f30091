"""The input-gradient profile of the gradient audit: what one backward pass per batch measures.

`gradient_profile` probes the model at `output_layer` and, for every batch, differentiates
target = sum over user-weeks of output[u, timestep, task] w.r.t. the sequence input and the
weights of the layers on the sequence path, in ONE compiled tape (`_gradient_sums_fn`, traced
once for any batch size). The sums are reduced over the batch in-graph and accumulated over the
sample, so memory is O(T x C + model size) whatever the number of user-weeks. The result,
`GradientProfile`, holds mean |g| and mean g [T, C], t_mid in input steps and the per-layer
weight-gradient norms (WEIGHT_GRADIENTS_SCHEMA). `forward_recurrence_only` tells a model whose
recurrent layers all run forward in time, which the stage treats as causal.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import tensorflow as tf

from stethoscope.tasks.audits.gradients.config import GradientProfile
from stethoscope.tasks.shared.audited_model import Batch, check_audit_model, iter_model_inputs

WEIGHT_GRADIENTS_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.string(), nullable=False),
        pa.field("num_weights", pa.int64(), nullable=False),
        pa.field("grad_norm", pa.float64(), nullable=False),
        pa.field("grad_rms", pa.float64(), nullable=False),
    ]
)


def gradient_profile(
    model: keras.Model,
    batches: Iterable[Batch],
    output_layer: str = "raw_output",
    task_index: int = 0,
    timestep: int | None = None,
) -> GradientProfile:
    """Average d output_layer[:, timestep, task_index] / d sequence (and / d weights) over the
    user-weeks of `batches`, one backward pass per batch."""
    check_audit_model(model, output_layer)
    probe = keras.Model(model.inputs, model.get_layer(output_layer).output)
    out_steps, num_tasks = probe.outputs[0].shape[1], probe.outputs[0].shape[2]
    if task_index >= num_tasks:
        raise ValueError(f"task_index {task_index} is out of range: {output_layer!r} has "
                         f"{num_tasks} task(s); use 0..{num_tasks - 1}")
    layers = [layer for layer in _sequence_path(model, output_layer) if layer.trainable_weights]
    sums: list[np.ndarray] | None = None  # [sum |g|, sum g, sum dL/dw per variable...]
    num_user_weeks, gradient_sums = 0, None
    for inputs in iter_model_inputs(batches, model):
        steps = inputs[0].shape[1]
        out_steps = out_steps or steps
        if gradient_sums is None:
            timestep = out_steps // 2 if timestep is None else timestep
            if not 0 <= timestep < out_steps:
                raise ValueError(f"timestep {timestep} is outside {output_layer!r}'s "
                                 f"0..{out_steps - 1}")
            gradient_sums = _gradient_sums_fn(probe, timestep, task_index, layers)
        batch_sums = [x.numpy().astype(np.float64) for x in gradient_sums(inputs)]
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums,
                                                                      strict=True)]
        num_user_weeks += len(inputs[0])
    if sums is None:
        raise ValueError("gradient_profile got no batches; give it at least one user-week")
    assert timestep is not None  # set on the first batch, and there was one
    center = int(round((timestep + 0.5) * steps / out_steps - 0.5))
    abs_sum, signed_sum, *weight_sums = sums
    return GradientProfile(abs_sum / num_user_weeks, signed_sum / num_user_weeks, timestep,
                           center, num_user_weeks,
                           _weight_norms(layers, [w / num_user_weeks for w in weight_sums]))


def forward_recurrence_only(model: keras.Model) -> bool:
    """True when the model has recurrent layers and every one runs forward in time only."""
    recurrent = [layer for layer in model.layers
                 if isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional)]
    return bool(recurrent) and all(
        isinstance(layer, keras.layers.RNN) and not layer.go_backwards for layer in recurrent)


def _gradient_sums_fn(
    probe: keras.Model, timestep: int, task_index: int, layers: list[keras.layers.Layer]
):
    """Compiled (one trace): model inputs -> [sum_u |g|, sum_u g] ([T, C] each) and the sum over
    user-weeks of d target / d w for every trainable weight of `layers`, from ONE backward
    pass of target = sum_u raw_output[u, timestep, task_index]."""
    variables = [v for layer in layers for v in layer.trainable_weights]

    @tf.function(input_signature=[_input_signature(probe)])
    def gradient_sums(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        sequence = inputs[0]
        with tf.GradientTape() as tape:
            tape.watch(sequence)
            output = probe([sequence, *inputs[1:]], training=False)  # [b, T', tasks]
            target = tf.reduce_sum(output[:, timestep, task_index])
        grad, *weight_grads = tape.gradient(target, [sequence, *variables])  # grad: [b, T, C]
        if grad is None:  # the output does not depend on the sequence at all
            grad = tf.zeros_like(sequence)
        weight_grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                        for v, g in zip(variables, weight_grads, strict=True)]
        return [tf.reduce_sum(tf.abs(grad), axis=0), tf.reduce_sum(grad, axis=0), *weight_grads]

    return gradient_sums


def _weight_norms(layers: list[keras.layers.Layer], grads: list[np.ndarray]) -> pd.DataFrame:
    rows, per_variable = [], iter(grads)
    for layer in layers:
        total = sum(float(np.square(next(per_variable)).sum()) for _ in layer.trainable_weights)
        size = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
        rows.append({"layer": layer.name, "num_weights": size, "grad_norm": total ** 0.5,
                     "grad_rms": (total / size) ** 0.5})
    return pd.DataFrame(rows, columns=WEIGHT_GRADIENTS_SCHEMA.names)


def _input_signature(model: keras.Model) -> list[tf.TensorSpec]:
    """Any batch size, the model's own T (or any T) and features: one trace per audit."""
    return [tf.TensorSpec((None, *t.shape[1:]), tf.float32) for t in model.inputs]


def _sequence_path(model: keras.Model, output_layer: str) -> list[keras.layers.Layer]:
    """Layers downstream of the sequence input, up to and including `output_layer`, in the
    model's (topological) order; the metadata branch is left out."""
    reached = {id(model.inputs[0]._keras_history.operation)}
    path = []
    for operation in model.operations:
        if not operation._inbound_nodes:
            continue
        parents = operation._inbound_nodes[0].input_tensors
        if any(id(t._keras_history.operation) in reached for t in parents):
            reached.add(id(operation))
            if isinstance(operation, keras.layers.Layer):
                path.append(operation)
        if operation.name == output_layer:
            break
    return path
