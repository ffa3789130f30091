"""The input-gradient profile of the gradient audit: what one backward pass per batch measures.

`gradient_profile` finds the per-step output (`tasks/shared/audited_model.py`
`per_step_output`: `output_layer` when given, else raw_output, else the last layer whose output
keeps a time axis) in the model's graph (`model/probes.py`: functional, Sequential and nested
models alike) and, for every batch, differentiates target = sum over user-weeks of
output[u, timestep, task] w.r.t. the time-series input and the weights of the layers on the
sequence path, in ONE compiled tape (`_gradient_sums_fn`, traced once for any batch size). The
sums are reduced over the batch in-graph and accumulated over the sample, so memory is
O(T x C + model size) whatever the number of user-weeks. The result, `GradientProfile`, holds
mean |g| and mean g [T, C], t_mid in output and in input steps and the per-layer
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

from stethoscope.model.probes import LayerCall, ModelGraph, input_signature
from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.tasks.audits.gradients.config import GradientProfile
from stethoscope.tasks.shared.audited_model import (
    Batch,
    check_audit_model,
    iter_model_inputs,
    per_step_output,
    sequence_index,
)

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
    output_layer: str | None = None,
    task_index: int = 0,
    timestep: int | None = None,
) -> GradientProfile:
    """Average d output[:, timestep, task_index] / d sequence (and / d weights) over the
    user-weeks of `batches`, one backward pass per batch; `output_layer` None: the per-step
    output the model has (see `per_step_output`)."""
    graph = check_audit_model(model, output_layer)
    output = per_step_output(graph, output_layer)
    if output is None:
        raise DataContractError("audits: the model has no per-step output", [
            no_per_step_output(model)])
    out_steps, num_tasks = output.output.shape[1], output.output.shape[2]
    if task_index >= num_tasks:
        raise ValueError(f"task_index {task_index} is out of range: {output.name!r} has "
                         f"{num_tasks} task(s); use 0..{num_tasks - 1}")
    sequence = sequence_index(model)
    layers = _weighted(sequence_path(graph, output, sequence))
    sums: list[np.ndarray] | None = None  # [sum |g|, sum g, sum dL/dw per variable...]
    num_user_weeks, gradient_sums = 0, None
    for inputs in iter_model_inputs(batches, model):
        steps = inputs[sequence].shape[1]
        out_steps = out_steps or steps
        if gradient_sums is None:
            timestep = out_steps // 2 if timestep is None else timestep
            if not 0 <= timestep < out_steps:
                raise ValueError(f"timestep {timestep} is outside {output.name!r}'s "
                                 f"0..{out_steps - 1}")
            gradient_sums = _gradient_sums_fn(graph, output, sequence, timestep, task_index,
                                              layers)
        batch_sums = [x.numpy().astype(np.float64) for x in gradient_sums(inputs)]
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums,
                                                                      strict=True)]
        num_user_weeks += len(inputs[sequence])
    if sums is None:
        raise ValueError("gradient_profile got no batches; give it at least one user-week")
    assert timestep is not None  # set on the first batch, and there was one
    center = int(round((timestep + 0.5) * steps / out_steps - 0.5))
    abs_sum, signed_sum, *weight_sums = sums
    return GradientProfile(abs_sum / num_user_weeks, signed_sum / num_user_weeks, timestep,
                           center, num_user_weeks,
                           _weight_norms(layers, [w / num_user_weeks for w in weight_sums]),
                           output_layer=output.name, output_steps=out_steps)


def probed_output(model: keras.Model, output_layer: str | None = None) -> LayerCall | None:
    """The per-step output `gradient_profile` differentiates (None: the model has none)."""
    return per_step_output(ModelGraph(model), output_layer)


def sequence_path(graph: ModelGraph, output: LayerCall, sequence: int) -> list[LayerCall]:
    """The layer calls between the time-series input and `output`, `output` included, in the
    model's order: upstream of the output and downstream of the sequence (the metadata branch
    is left out). Nested models count through their own layers."""
    return [c for i, c in enumerate(graph.calls)
            if i in output.upstream and sequence in c.inputs and not c.container]


def forward_recurrence_only(model: keras.Model, output_layer: str | None = None) -> bool:
    """True when the layers up to the per-step output include recurrent ones and every one runs
    forward in time only."""
    graph = ModelGraph(model)
    output = per_step_output(graph, output_layer)
    if output is None:
        return False
    recurrent = [c.layer for c in sequence_path(graph, output, sequence_index(model))
                 if isinstance(c.layer, keras.layers.RNN | keras.layers.Bidirectional)]
    return bool(recurrent) and all(
        isinstance(layer, keras.layers.RNN) and not layer.go_backwards for layer in recurrent)


def no_per_step_output(model: keras.Model) -> Problem:
    """Why the gradient audit cannot run on a model without a per-step output."""
    graph = ModelGraph(model)
    shapes = ", ".join(f"{c.name} {tuple(c.output.shape)}" for c in graph.calls
                       if not c.container) or "none"
    return Problem(
        rule="per_step_output", message="no layer's output keeps the time axis of the "
        f"time-series input (layer outputs: {shapes}), so there is no step t_mid to "
        "differentiate.", fix="Audit a model with a per-timestep layer [batch, T', units] "
        "(e.g. return_sequences=True before pooling), or name one with "
        "gradients.output_layer (--output-layer).")


def _gradient_sums_fn(
    graph: ModelGraph, output: LayerCall, sequence: int, timestep: int, task_index: int,
    layers: list[LayerCall],
):
    """Compiled (one trace): model inputs -> [sum_u |g|, sum_u g] ([T, C] each) and the sum over
    user-weeks of d target / d w for every trainable weight of `layers`, from ONE backward
    pass of target = sum_u output[u, timestep, task_index]."""
    variables = [v for call in layers for v in call.layer.trainable_weights]

    @tf.function(input_signature=[input_signature(graph)])
    def gradient_sums(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        inputs = list(inputs)
        with tf.GradientTape() as tape:
            tape.watch(inputs[sequence])
            (values,) = graph.forward(inputs, [output])  # [b, T', units]
            target = tf.reduce_sum(values[:, timestep, task_index])
        grad, *weight_grads = tape.gradient(target, [inputs[sequence], *variables])  # [b, T, C]
        if grad is None:  # the output does not depend on the sequence at all
            grad = tf.zeros_like(inputs[sequence])
        weight_grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                        for v, g in zip(variables, weight_grads, strict=True)]
        return [tf.reduce_sum(tf.abs(grad), axis=0), tf.reduce_sum(grad, axis=0), *weight_grads]

    return gradient_sums


def _weighted(calls: list[LayerCall]) -> list[LayerCall]:
    """The calls with trainable weights, each layer once (a shared layer at its first call)."""
    seen: set[int] = set()
    out = []
    for call in calls:
        if call.layer.trainable_weights and id(call.layer) not in seen:
            seen.add(id(call.layer))
            out.append(call)
    return out


def _weight_norms(calls: list[LayerCall], grads: list[np.ndarray]) -> pd.DataFrame:
    rows, per_variable = [], iter(grads)
    for call in calls:
        weights = call.layer.trainable_weights
        total = sum(float(np.square(next(per_variable)).sum()) for _ in weights)
        size = sum(int(np.prod(v.shape)) for v in weights)
        rows.append({"layer": call.name, "num_weights": size, "grad_norm": total ** 0.5,
                     "grad_rms": (total / size) ** 0.5})
    return pd.DataFrame(rows, columns=WEIGHT_GRADIENTS_SCHEMA.names)
