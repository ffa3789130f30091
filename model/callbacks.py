"""Which layers the activation audit inspects (`layer_kind`, `output_bound`), the probe that
exposes them on a model being trained, and the Keras callback that records the share of dead
units per layer after every epoch.

The probe helpers live here (not in tasks/) because both the training-time callback and the
activation audit use them, and imports run one way: tasks -> model. `activation_layers` and
`build_probe` read `layer.output`, which is right for the network being trained (built once,
each layer called once); the audits of a saved model of any shape (a loaded Sequential, nested
models) walk the model's graph instead: model/probes.py.

Dead unit (same definition as tasks/audits/activations/audit.py): exactly zero on >= `dead_threshold`
(0.99) of the (user-week, time) positions of the sample.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from stethoscope.schemas.atomic import write_json_atomic

LayerKind = Literal["convolutional", "recurrent", "dense", "activation"]
Bound = Literal["tanh", "sigmoid"]

_KINDS: tuple[tuple[LayerKind, tuple[type, ...]], ...] = (
    (
        "convolutional",
        (
            keras.layers.Conv1D,
            keras.layers.Conv2D,
            keras.layers.Conv3D,
            keras.layers.SeparableConv1D,
            keras.layers.SeparableConv2D,
            keras.layers.DepthwiseConv1D,
            keras.layers.DepthwiseConv2D,
            keras.layers.Conv1DTranspose,
            keras.layers.Conv2DTranspose,
        ),
    ),
    ("recurrent", (keras.layers.RNN, keras.layers.Bidirectional)),
    ("dense", (keras.layers.Dense, keras.layers.EinsumDense)),
    (
        "activation",
        (
            keras.layers.Activation,
            keras.layers.ReLU,
            keras.layers.LeakyReLU,
            keras.layers.PReLU,
            keras.layers.ELU,
        ),
    ),
)
_TANH_LIKE = {"tanh", "softsign"}
_SIGMOID_LIKE = {"sigmoid", "hard_sigmoid"}


def layer_kind(layer: keras.layers.Layer) -> LayerKind | None:
    """The audit's category of `layer` (TimeDistributed counts as what it wraps), or None."""
    if isinstance(layer, keras.layers.TimeDistributed):
        return layer_kind(layer.layer)
    for kind, classes in _KINDS:
        if isinstance(layer, classes):
            return kind
    return None


def output_bound(layer: keras.layers.Layer) -> Bound | None:
    """`tanh` when the layer's output lies in (-1, 1), `sigmoid` when in (0, 1), else None.

    LSTM/GRU outputs are o * tanh(c) and (1 - z) * tanh(.) + z * h: tanh-bounded whenever the
    cell's activation is."""
    if isinstance(layer, keras.layers.TimeDistributed):
        return output_bound(layer.layer)
    if isinstance(layer, keras.layers.Bidirectional):
        return output_bound(layer.forward_layer)
    activation = getattr(layer, "activation", None)
    if isinstance(layer, keras.layers.RNN):
        activation = getattr(layer.cell, "activation", None)
    name = getattr(activation, "__name__", None)
    if name in _TANH_LIKE:
        return "tanh"
    if name in _SIGMOID_LIKE:
        return "sigmoid"
    return None


def activation_layers(
    model: keras.Model, names: Sequence[str] | None = None
) -> list[keras.layers.Layer]:
    """The top-level layers of `model` that the audit inspects (convolutional, recurrent, dense,
    activation layers), in the model's order; `names` restricts them. Layers called more than
    once (shared) have no single output and are skipped."""
    wanted = set(names) if names is not None else None
    layers = []
    for layer in model.layers:
        if wanted is not None and layer.name not in wanted:
            continue
        if layer_kind(layer) is None or len(layer._inbound_nodes) != 1:
            continue
        layers.append(layer)
    if wanted is not None and len(layers) != len(wanted):
        missing = sorted(wanted - {layer.name for layer in layers})
        raise ValueError(
            f"layers {missing} are not inspectable layers of model {model.name!r}; "
            f"inspectable: {[layer.name for layer in activation_layers(model)]}"
        )
    return layers


def first_output(layer: keras.layers.Layer) -> keras.KerasTensor:
    """The layer's output tensor; for recurrent layers with return_state, the sequence output."""
    output = layer.output
    return output[0] if isinstance(output, list | tuple) else output


def build_probe(model: keras.Model, layers: Sequence[keras.layers.Layer]) -> keras.Model:
    """ONE model from the audited model's inputs to every inspected layer's output, so a single
    forward pass yields all activations of a batch."""
    return keras.Model(model.inputs, [first_output(layer) for layer in layers], name="probe")


def compile_probe(probe: keras.Model):
    """The probe's forward pass as a tf.function traced once for any batch size: inputs (a list
    of arrays) -> list of layer outputs. Eager recurrent layers step through time in Python, so
    compiling matters; the per-unit reductions stay outside the graph (tracing and optimising
    them costs more than running them on a whole sample)."""
    signature = [tf.TensorSpec((None, *t.shape[1:]), tf.float32) for t in probe.inputs]

    @tf.function(input_signature=[signature])
    def forward(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        outputs = probe(list(inputs), training=False)
        return list(outputs) if isinstance(outputs, list | tuple) else [outputs]

    return forward


def units_view(activations: np.ndarray) -> np.ndarray:
    """[batch, ..., units] -> [batch, positions, units]; a layer without a time axis gets one."""
    return activations.reshape(activations.shape[0], -1, activations.shape[-1])


class DeadUnitMonitor(keras.callbacks.Callback):
    """Record the share of dead units per inspected layer before training and after every epoch.

    Values go into `logs` as `dead_fraction/<layer>` (so they reach History and, when this
    callback comes *before* keras.callbacks.TensorBoard in the list, TensorBoard), and, when
    `path` is given, into a JSON file rewritten atomically after each epoch: a list of rows
    `{epoch, layer, units, dead_units, dead_fraction}`, epoch 0 = before the first update, epoch
    n = after n epochs, as Keras numbers them: a later fit (fine-tuning, a resumed run) passes
    `initial_epoch` and continues the file, replacing rows of the epochs it runs again.
    `sample` is a small fixed set of model inputs (an array, or a list [sequence, metadata]); it
    is probed in batches of `batch_size`.
    """

    def __init__(
        self,
        sample: np.ndarray | Sequence[np.ndarray],
        path: Path | None = None,
        layer_names: Sequence[str] | None = None,
        dead_threshold: float = 0.99,
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        parts = sample if isinstance(sample, list | tuple) else [sample]
        self.sample = [np.asarray(x, dtype=np.float32) for x in parts]
        self.path = Path(path) if path is not None else None
        self.layer_names = layer_names
        self.dead_threshold = dead_threshold
        self.batch_size = batch_size
        # Rows of an earlier attempt (a training task resumed from its checkpoint) are kept.
        self.rows: list[dict[str, Any]] = (
            json.loads(self.path.read_text()) if self.path is not None and self.path.exists() else [])
        # compiled probe, built on the first use
        self._probe: Callable[[list[np.ndarray]], list[tf.Tensor]] | None = None
        self._num_inputs = 0
        self._layers: list[keras.layers.Layer] = []

    def dead_units(self) -> dict[str, list[int]]:
        """Indices of the dead units of every inspected layer, on the current weights."""
        if self._probe is None:
            self._layers = activation_layers(self.model, self.layer_names)
            probe = build_probe(self.model, self._layers)
            self._probe, self._num_inputs = compile_probe(probe), len(probe.inputs)
        zeros = [0] * len(self._layers)
        positions = [0] * len(self._layers)
        for start in range(0, len(self.sample[0]), self.batch_size):
            batch = [x[start : start + self.batch_size] for x in self.sample[: self._num_inputs]]
            for i, output in enumerate(self._probe(batch)):
                view = units_view(output.numpy())  # [B, L, U]
                zeros[i] = zeros[i] + np.count_nonzero(view == 0, axis=(0, 1))
                positions[i] += view.shape[0] * view.shape[1]
        return {
            layer.name: np.flatnonzero(
                np.asarray(count) >= self.dead_threshold * max(1, total)
            ).tolist()
            for layer, count, total in zip(self._layers, zeros, positions, strict=True)
        }

    def _record(self, epoch: int, logs: dict | None) -> None:
        dead_by_layer = self.dead_units()
        for layer in self._layers:
            dead = dead_by_layer[layer.name]
            units = int(first_output(layer).shape[-1])
            fraction = len(dead) / units
            self.rows.append(
                {
                    "epoch": epoch,
                    "layer": layer.name,
                    "units": units,
                    "dead_units": dead,
                    "dead_fraction": fraction,
                }
            )
            if logs is not None:
                logs[f"dead_fraction/{layer.name}"] = fraction
        if self.path is not None:
            write_json_atomic(self.rows, self.path)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._probe = None  # a new fit may bring a new model (pre-training, then fine-tuning)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:  # a run from scratch: rows of an earlier run in this file are not its
            self.rows = []
            self._record(0, None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # Keras counts epochs across fits from `initial_epoch` (training passes the epochs the
        # run completed), so n = after the n-th epoch of the whole run. Rows of an earlier
        # attempt from n on are of epochs it ran past its last checkpoint (it died before
        # that epoch's checkpoint was saved): this attempt runs them again and replaces them.
        self.rows = [row for row in self.rows if int(row["epoch"]) <= epoch]
        self._record(epoch + 1, logs)

