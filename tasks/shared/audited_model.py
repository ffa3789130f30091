"""What the model audits (activations, gradients) take in: the audited model, loaded in safe
mode and checked against the contract of docs/architecture.md §4.8 (models the audits accept),
the per-step output the gradient audit differentiates, and the model's inputs, batch by batch.

The contract, every breach listed at once in one DataContractError:
- a graph model: functional (a functional subclass too), Sequential, or models nesting them.
  A subclassed model whose `call` is Python code exposes no layer outputs;
- exactly one time-series input [batch, T, C], at any position among the inputs; C = the
  store's channels when they are given; T may be None (any length);
- every other input of known shape. It is fed the store's metadata vector when its shape is
  [batch, M] with M the metadata width, else zeros (`input_feeds`; the inspect stage reports
  which);
- for the gradient audit, a per-step output [batch, T', units] that depends on the sequence:
  the layer named `output_layer` when set, else `raw_output` when the model has one (the
  default network), else the last layer whose output keeps a time axis (`per_step_output`).

The audits see only a Keras model and an iterable of batches, so they do not depend on the
store format; tasks/shared/store.py `iter_store_batches` reads the batches from a store.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np

from stethoscope.model.probes import LayerCall, ModelGraph, graph_of
from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.sequence_store import CHANNELS, METADATA_FEATURES, OPTIONAL_CHANNELS

Batch = Any  # (sequence, metadata) | sequence | ((sequence, metadata), y) | {input name: array}
DEFAULT_OUTPUT_LAYER = "raw_output"  # the default network's per-step output (§4.8)
Feed = Literal["sequence", "metadata", "zeros"]


@dataclass(frozen=True)
class InputFeed:
    """What one model input is fed: its name, shape without the batch axis, and source."""

    name: str
    shape: tuple[int | None, ...]
    source: Feed


def load_audit_model(
    path: Path, output_layer: str | None = DEFAULT_OUTPUT_LAYER,
    num_channels: int | None = len(CHANNELS),
) -> keras.Model:
    """Load a saved Keras model in safe mode (no Lambda layers, no arbitrary code) and check that
    the audits can use it (`check_audit_model`)."""
    _refuse_broken_archive(Path(path))
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


def _refuse_broken_archive(path: Path) -> None:
    """A .keras file is a zip archive. One cut short (a copy interrupted, a full disk) makes
    Keras report "File not found" or Lambda layers; say what it is instead."""
    if path.suffix == ".keras" and path.is_file() and not zipfile.is_zipfile(path):
        raise DataContractError(
            f"audits: model file {path} is truncated or not a Keras archive",
            [Problem(rule="model_truncated", file=str(path),
                     message=f"model file {path} is truncated or not a Keras archive: "
                     f"{path.stat().st_size:,} bytes without a zip directory.",
                     fix="Copy or save the model again (model.save('model.keras')); for a "
                         "model trained by a run, delete <run>/model/model.keras and re-run "
                         "the same run id to retrain it.")])


def check_audit_model(
    model: keras.Model,
    output_layer: str | None = DEFAULT_OUTPUT_LAYER,
    num_channels: int | None = None,
    source: str | None = None,
) -> ModelGraph:
    """The model's graph; DataContractError listing every way `model` breaks the contract (see
    the module docstring). `output_layer` None: not checked (found later, or not needed)."""
    problems: list[Problem] = []

    def problem(rule: str, message: str, fix: str) -> None:
        problems.append(Problem(rule=rule, message=message, fix=fix, file=source))

    graph = _graph_or_problem(model, problem)
    inputs = list(graph.inputs) if graph is not None else []
    series = [x for x in inputs if len(x.shape) == 3]
    if graph is not None and len(series) != 1:
        problem("sequence_input", f"the model has {len(series)} time-series inputs [batch, T, "
                f"C] among its inputs {_shapes(inputs)}; the audits need exactly one.",
                "Give the model one input keras.Input((T, C)) for the sequence; other inputs "
                "[batch, M] get the metadata vector or zeros.")
    elif graph is not None and num_channels is not None and series[0].shape[-1] != num_channels:
        problem("sequence_channels", f"the time-series input {_input_name(series[0])!r} has "
                f"{series[0].shape[-1]} channels; the store has {num_channels} "
                f"({_channel_names(num_channels)}).", _channels_fix(series[0].shape[-1]))
    unknown = [x for x in inputs if len(x.shape) != 3 and None in tuple(x.shape)[1:]]
    if unknown:
        problem("input_shape", f"inputs {[_input_name(x) for x in unknown]} have an axis of "
                f"unknown size {_shapes(unknown)}: they cannot be fed zeros.",
                "Give every input other than the sequence a fixed shape, e.g. keras.Input((M,)).")
    if graph is not None and output_layer is not None:
        try:
            per_step_output(graph, output_layer, source)
        except DataContractError as error:
            problems += error.problems
    if problems:
        where = f" {source}" if source else f" {model.name!r}"
        raise DataContractError(f"audits: model{where} does not fit the audit contract", problems)
    assert graph is not None  # a model without a graph is a problem above
    return graph


def sequence_index(model: keras.Model) -> int:
    """Position of the time-series input [batch, T, C] among the model's inputs."""
    ranks = [len(x.shape) for x in getattr(model, "inputs", None) or []]
    return ranks.index(3) if 3 in ranks else 0


def per_step_output(
    graph: ModelGraph, output_layer: str | None = None, source: str | None = None
) -> LayerCall | None:
    """The per-step output the gradient audit differentiates: `output_layer` when given (a
    DataContractError when the model has no such layer, or it has no time axis), else
    `raw_output` when the model has one, else the last layer, in the model's order, whose output
    [batch, T', units] keeps a time axis and depends on the sequence; None when there is none."""
    sequence = sequence_index(graph.model)

    def per_step(call: LayerCall) -> bool:
        return len(call.output.shape) == 3 and sequence in call.inputs and not call.shared

    if output_layer is None:
        default = graph.find(DEFAULT_OUTPUT_LAYER)
        if default is not None and per_step(default):
            return default
        return next((c for c in reversed(graph.calls) if per_step(c) and not c.container), None)
    call = graph.find(output_layer)
    if call is None:
        names = [layer.name for layer in graph.model.layers] + [
            c.name for c in graph.calls if "/" in c.name]
        raise DataContractError(f"audits: the model has no layer {output_layer!r}", [Problem(
            rule="output_layer", file=source, message=f"the model has no layer "
            f"{output_layer!r}; its layers are {names}.", fix="Name the per-step output layer "
            "(gradients.output_layer, --output-layer) as one of these, or leave it unset: the "
            "audit then takes raw_output, else the last layer whose output keeps a time axis.")])
    if not per_step(call):
        reason = ("it is called more than once" if call.shared else
                  "it does not depend on the time-series input"
                  if sequence not in call.inputs else "expected [batch, T', units]")
        raise DataContractError(f"audits: layer {call.name!r} is not a per-step output", [Problem(
            rule="output_layer_shape", file=source, message=f"layer {call.name!r} has output "
            f"shape {tuple(call.output.shape)}; {reason}.", fix="Name a per-step layer "
            f"whose output keeps the time axis: {_per_step_names(graph, per_step)}.")])
    return call


def input_feeds(model: keras.Model, metadata_width: int | None = len(METADATA_FEATURES)
                ) -> list[InputFeed]:
    """What every model input is fed: the sequence, the metadata vector (shape [batch, M] with M
    = `metadata_width`; None: no metadata at hand) or zeros."""
    sequence = sequence_index(model)
    feeds = []
    for i, x in enumerate(model.inputs):
        shape = tuple(x.shape)[1:]
        source: Feed = ("sequence" if i == sequence else
                        "metadata" if metadata_width is not None and shape == (metadata_width,)
                        else "zeros")
        feeds.append(InputFeed(name=_input_name(x), shape=shape, source=source))
    return feeds


def model_inputs(batch: Batch, model: keras.Model, feeds: Sequence[InputFeed] | None = None
                 ) -> list[np.ndarray]:
    """The arrays that feed `model`'s inputs for one batch, in the model's input order: the
    batch's sequence and metadata where `feeds` (default: `input_feeds` for the batch's
    metadata width) says so, zeros for any other input; labels and the rest are dropped."""
    if isinstance(batch, Mapping):
        return [np.asarray(batch[_input_name(x)], dtype=_dtype(x)) for x in model.inputs]
    if isinstance(batch, list | tuple) and isinstance(batch[0], list | tuple | Mapping):
        return model_inputs(batch[0], model, feeds)  # ((sequence, metadata), y)
    parts = list(batch) if isinstance(batch, list | tuple) else [batch]
    sequence, metadata = parts[0], parts[1] if len(parts) > 1 else None
    feeds = feeds or input_feeds(model, _metadata_width(batch))
    arrays = []
    for feed, x in zip(feeds, model.inputs, strict=True):
        if feed.source == "metadata" and metadata is None:
            raise DataContractError("audits: a batch has no metadata for the model", [Problem(
                rule="batch_inputs", message=f"input {feed.name!r} takes the metadata vector "
                f"{list(feed.shape)}; the batch holds a sequence only.",
                fix="Yield (sequence, metadata) batches.")])
        part = {"sequence": sequence, "metadata": metadata}.get(feed.source)
        shape = (len(sequence), *(int(d or 0) for d in feed.shape))  # known: checked
        arrays.append(np.zeros(shape, dtype=_dtype(x)) if part is None
                      else np.asarray(part, dtype=_dtype(x)))
    return arrays


def iter_model_inputs(batches: Iterable[Batch], model: keras.Model) -> Iterator[list[np.ndarray]]:
    """`model_inputs` of every batch, lazily: one batch in memory at a time; what feeds which
    input is decided on the first batch."""
    feeds: list[InputFeed] | None = None
    for batch in batches:
        feeds = feeds or input_feeds(model, _metadata_width(batch))
        yield model_inputs(batch, model, feeds)


def describe_feeds(feeds: Sequence[InputFeed], num_steps: int | None = None) -> str:
    """One sentence naming every input and what it is fed, for the report."""
    words = {"sequence": "the user-week sequences",
             "metadata": f"the metadata vector ({', '.join(METADATA_FEATURES)})",
             "zeros": "zeros (not the sequence, and not [M] = "
                      f"[{len(METADATA_FEATURES)}] like the metadata vector)"}
    parts = [f"{f.name!r} {list(f.shape)} <- {words[f.source]}" for f in feeds]
    steps = f" at the model's T = {num_steps}" if num_steps else ""
    return f"Model inputs{steps}: " + "; ".join(parts) + "."


def _metadata_width(batch: Batch) -> int | None:
    """M of a (sequence, metadata) batch (also inside ((sequence, metadata), y)); None without
    metadata."""
    if isinstance(batch, list | tuple) and isinstance(batch[0], list | tuple | Mapping):
        batch = batch[0]
    if isinstance(batch, list | tuple) and len(batch) > 1:
        return int(np.shape(batch[1])[-1])
    return None


def _graph_or_problem(model: keras.Model, problem) -> ModelGraph | None:
    if graph_of(model) is None:
        problem("functional_model", f"model {model.name!r} ({type(model).__name__}) is a "
                "subclassed model (or an unbuilt Sequential one): Keras cannot expose the "
                "outputs of its layers.", "Build the model with the functional API "
                "(keras.Input -> layers -> keras.Model) or as a keras.Sequential with a "
                "keras.Input first; a subclass must call super().__init__(inputs, outputs).")
        return None
    try:
        return ModelGraph(model)
    except Exception as exc:  # an exotic graph the walk does not understand
        problem("model_graph", f"the layer graph of model {model.name!r} cannot be walked: "
                f"{type(exc).__name__}: {exc}.", "Rebuild the model from built-in layers with "
                "the functional API.")
        return None


def _per_step_names(graph: ModelGraph, per_step) -> str:
    names = [c.name for c in graph.calls if per_step(c)]
    return ", ".join(names) if names else "the model has none"


def _input_name(x: Any) -> str:
    return str(x.name)


def _dtype(x: Any) -> str:
    return str(x.dtype)


def _shapes(tensors: Sequence[Any]) -> list[tuple]:
    return [tuple(x.shape) for x in tensors]


def _channel_names(num_channels: int) -> str:
    known = (*CHANNELS, *OPTIONAL_CHANNELS)
    return ", ".join(known[:num_channels]) if num_channels <= len(known) else "unnamed"


def _channels_fix(model_channels: int | None) -> str:
    if model_channels == len(CHANNELS) + len(OPTIONAL_CHANNELS):
        return ("The model takes the local time-of-day channels as well: build the sequences "
                "with them (sequences.time_of_day: true).")
    if model_channels == len(CHANNELS):
        return "The model takes no time-of-day channels: set sequences.time_of_day: false."
    return (f"Audit a model trained on the store's channels, in order ({len(CHANNELS)}: "
            f"{', '.join(CHANNELS)}; {len(CHANNELS) + len(OPTIONAL_CHANNELS)} with "
            "sequences.time_of_day).")
