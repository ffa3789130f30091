"""What the model audits (activations, gradients) take in: the audited model, loaded in safe
mode and checked against the contract of docs/architecture.md §4.8 (models the audits accept),
and its inputs, batch by batch.

The audits themselves see only a Keras model and an iterable of batches, so they do not depend
on the store format; tasks/shared/store.py `iter_store_batches` reads the batches from a store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.sequence_store import CHANNELS

Batch = Any  # (sequence, metadata) | sequence | ((sequence, metadata), y) | {input name: array}


def load_audit_model(
    path: Path, output_layer: str | None = "raw_output", num_channels: int | None = len(CHANNELS)
) -> keras.Model:
    """Load a saved Keras model in safe mode (no Lambda layers, no arbitrary code) and check that
    the audits can use it (`check_audit_model`)."""
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # unreadable file, unsafe lambda, unknown custom layer
        raise DataContractError(
            f"audits: cannot load model {path}",
            [Problem(rule="model_loadable", file=str(path), message=f"{type(exc).__name__}: {exc}.",
                     fix="Save the model with model.save('model.keras') (Keras 3 format) without "
                         "Lambda layers; register custom layers with "
                         "keras.saving.register_keras_serializable.")],
        ) from exc
    check_audit_model(model, output_layer, num_channels, source=str(path))
    return model


def check_audit_model(
    model: keras.Model,
    output_layer: str | None = "raw_output",
    num_channels: int | None = None,
    source: str | None = None,
) -> None:
    """Raise DataContractError listing every way `model` breaks the audit contract: functional,
    input 0 a sequence [batch, T, C] (C = `num_channels` when given), an optional input 1 the
    metadata vector [batch, M], and a per-timestep layer `output_layer` [batch, T, tasks]
    (not checked when `output_layer` is None: the activation audit does not need it)."""
    problems: list[Problem] = []

    def problem(rule: str, message: str, fix: str) -> None:
        problems.append(Problem(rule=rule, message=message, fix=fix, file=source))

    inputs = list(getattr(model, "inputs", None) or [])
    if not inputs:
        problem("functional_model", f"model {model.name!r} has no symbolic inputs.",
                "Build the model with the functional API (keras.Input -> layers -> keras.Model).")
    if inputs and len(inputs[0].shape) != 3:
        problem("sequence_input", f"input 0 has shape {tuple(inputs[0].shape)}; expected "
                "[batch, T, C].", "Make the first input the sequence: keras.Input((T, C)).")
    elif inputs and num_channels is not None and inputs[0].shape[-1] != num_channels:
        problem("sequence_channels", f"input 0 has {inputs[0].shape[-1]} channels; the store "
                f"has {num_channels}.", "Train the model on this store's channels, in order.")
    if len(inputs) > 2 or (len(inputs) == 2 and len(inputs[1].shape) != 2):
        problem("metadata_input", f"inputs are {[tuple(t.shape) for t in inputs]}; expected a "
                "sequence and at most one metadata vector [batch, M].",
                "Give the model the inputs (sequence, metadata) only.")
    names = [layer.name for layer in model.layers]
    if output_layer is None:
        pass
    elif output_layer not in names:
        problem("output_layer", f"the model has no layer {output_layer!r}; its layers are "
                f"{names}.", "Name the per-timestep output layer (name='raw_output') or set "
                "the audit's output_layer to one of these names.")
    elif len(model.get_layer(output_layer).output.shape) != 3:
        shape = tuple(model.get_layer(output_layer).output.shape)
        problem("output_layer_shape", f"layer {output_layer!r} has output shape {shape}; "
                "expected [batch, T, tasks].", "Name a per-timestep layer as the output layer.")
    if problems:
        where = f" {source}" if source else f" {model.name!r}"
        raise DataContractError(f"audits: model{where} does not fit the audit contract", problems)


def model_inputs(batch: Batch, model: keras.Model) -> list[np.ndarray]:
    """The arrays of `batch` that feed `model`'s inputs, as float32 numpy (extra parts such as
    labels are dropped; metadata is dropped when the model has no metadata input)."""
    num_inputs = len(model.inputs)
    if isinstance(batch, Mapping):
        parts = [batch[tensor._keras_history.operation.name] for tensor in model.inputs]
    elif isinstance(batch, list | tuple):
        if isinstance(batch[0], list | tuple | Mapping):  # ((sequence, metadata), y)
            return model_inputs(batch[0], model)
        parts = list(batch)
    else:
        parts = [batch]
    if len(parts) < num_inputs:
        raise DataContractError(
            "audits: a batch has fewer arrays than the model has inputs",
            [Problem(rule="batch_inputs", message=f"got {len(parts)} array(s), the model takes "
                     f"{num_inputs}.", fix="Yield (sequence, metadata) batches.")],
        )
    return [np.asarray(part, dtype=np.float32) for part in parts[:num_inputs]]


def iter_model_inputs(batches: Iterable[Batch], model: keras.Model) -> Iterator[list[np.ndarray]]:
    """`model_inputs` of every batch, lazily: one batch in memory at a time."""
    for batch in batches:
        yield model_inputs(batch, model)
