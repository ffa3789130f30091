"""DeepHeart: the sequence network that stethoscope trains and audits (docs/architecture.md §4.8).

    sequence [batch, T, C]
      -> conv_1 .. conv_n         Conv1D, 'same' padding, stride 1, activation configurable
                                  (default leaky_relu); dilation 2**(i-1) when `dilated`;
                                  MaxPooling1D `pool_i` after each block only when pool_size > 1
      -> bilstm | lstm | bigru | gru     return_sequences; initial states from `initial_state`
         | metadata_bias (recurrence "none": the metadata Dense is added as a bias instead)
      -> raw_output               Dense per timestep, linear: [batch, T', tasks]
      -> pooled                   GlobalAveragePooling1D over time: [batch, tasks]
      -> head_<task>              sigmoid (classification) or affine rescale (regression): [batch, 1]
    metadata [batch, M] -> initial_state (Dense, tanh) -> split into the recurrent layer's states

T' == T by default (stride 1, 'same' padding, pool_size 1), so raw_output[:, t] depends on the
input around t and d raw_output[:, t_mid] / d input is the dependency profile the gradient audit
wants. With pool_size > 1 the convolutions downsample: T' = T // pool_size**len(conv_filters),
and raw_output timestep t covers input steps [t * f, (t + 1) * f) with f = T / T'.

Only built-in Keras layers and ops are used (the per-task slice of `pooled` and the split of the
initial state are Keras ops, not Lambda layers), so a saved model loads with
`keras.saving.load_model(path, safe_mode=True)` without importing stethoscope.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import keras
from keras import layers, ops
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stethoscope.model.losses import MaskedBinaryCrossentropy, MaskedMeanSquaredError
from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.sequence_store import CHANNELS, METADATA_FEATURES

Recurrence = Literal["bilstm", "lstm", "bigru", "gru", "none"]

# states per recurrence: (bi)LSTM has h and c per direction, (bi)GRU h per direction
_NUM_STATES: dict[str, int] = {"bilstm": 4, "lstm": 2, "bigru": 2, "gru": 1, "none": 1}


class ModelConfig(StageConfig):
    """Architecture of the network. Defaults: the documented model at T = 4096, cheap on a CPU."""

    num_steps: int = Field(4096, ge=8, description="T: time bins per user-week")
    num_channels: int = Field(len(CHANNELS), ge=1, description="C: input channels")
    num_metadata: int = Field(
        len(METADATA_FEATURES), ge=0, description="M: metadata features; 0 = no metadata input"
    )
    conv_filters: tuple[int, ...] = Field((32, 32), min_length=1, description="one per block")
    kernel_size: int = Field(5, ge=1)
    pool_size: int = Field(1, ge=1, description="1 keeps T' == T; >1 downsamples after each block")
    dilated: bool = Field(False, description="dilation 2**(i-1) in block i (receptive field grows)")
    activation: Literal["leaky_relu", "relu", "elu", "gelu", "tanh"] = "leaky_relu"
    recurrence: Recurrence = "bilstm"
    units: int = Field(32, ge=1, description="recurrent units per direction")
    raw_output_layer: str = Field("raw_output", min_length=1)

    @model_validator(mode="after")
    def _downsampled_length_is_positive(self) -> ModelConfig:
        if self.num_steps // self.pool_size ** len(self.conv_filters) < 1:
            raise ValueError(
                f"pool_size={self.pool_size} over {len(self.conv_filters)} blocks shrinks "
                f"num_steps={self.num_steps} to nothing; lower pool_size or use fewer blocks"
            )
        return self

    @property
    def output_steps(self) -> int:
        """T': timesteps of raw_output."""
        return self.num_steps // self.pool_size ** len(self.conv_filters)

    @property
    def recurrent_layer(self) -> str | None:
        """Name of the recurrent layer (`bilstm`, `lstm`, `bigru`, `gru`), None without one."""
        return None if self.recurrence == "none" else self.recurrence


class TaskSpec(BaseModel):
    """One output of the network: a condition (sigmoid) or a synthetic target (linear).

    A regression head emits `offset + scale * mean_t raw_output[:, t, task]`, so raw_output works
    in standardised units while the head speaks the target's own units.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["classification", "regression"]
    offset: float = 0.0
    scale: float = Field(1.0, gt=0)

    @property
    def head(self) -> str:
        return head_name(self.name)


def head_name(task: str) -> str:
    """Layer (and output) name of a task's head, e.g. `head_diabetes`."""
    return f"head_{task}"


def inspected_layer_names(config: ModelConfig) -> list[str]:
    """Layers whose activations an audit looks at, input side first."""
    names = [f"conv_{i}" for i in range(1, len(config.conv_filters) + 1)]
    if config.num_metadata:
        names.append("initial_state")
    if config.recurrent_layer:
        names.append(config.recurrent_layer)
    elif config.num_metadata:
        names.append("metadata_bias")
    return [*names, config.raw_output_layer]


def build_model(config: ModelConfig, tasks: Sequence[TaskSpec]) -> keras.Model:
    """The functional DeepHeart model: inputs [`sequence`, `metadata` (when M > 0)], outputs a
    dict {`head_<task>`: [batch, 1]} in the order of `tasks`."""
    _check_tasks(tasks)
    sequence = keras.Input((config.num_steps, config.num_channels), name="sequence")
    inputs = [sequence]
    x = sequence  # [batch, T, C]
    for i, filters in enumerate(config.conv_filters, start=1):
        x = layers.Conv1D(
            filters,
            config.kernel_size,
            padding="same",
            dilation_rate=2 ** (i - 1) if config.dilated else 1,
            activation=config.activation,
            name=f"conv_{i}",
        )(x)  # [batch, T_i, filters]
        if config.pool_size > 1:
            x = layers.MaxPooling1D(config.pool_size, name=f"pool_{i}")(x)

    states: list[keras.KerasTensor] = []
    if config.num_metadata:
        metadata = keras.Input((config.num_metadata,), name="metadata")
        inputs.append(metadata)
        width = config.conv_filters[-1] if config.recurrence == "none" else config.units
        initial = layers.Dense(
            _NUM_STATES[config.recurrence] * width, activation="tanh", name="initial_state"
        )(metadata)  # [batch, states * width]
        states = list(ops.split(initial, _NUM_STATES[config.recurrence], axis=-1))

    x = _sequence_layer(config, x, states)  # [batch, T', features]
    raw = layers.Dense(len(tasks), name=config.raw_output_layer)(x)  # [batch, T', tasks]
    pooled = layers.GlobalAveragePooling1D(name="pooled")(raw)  # [batch, tasks]
    # a dict, so that labels, losses and predictions are keyed by head name for any task count
    outputs = {task.head: _head(task, pooled[:, i : i + 1]) for i, task in enumerate(tasks)}
    return keras.Model(inputs, outputs, name="deepheart")


def transfer_weights(source: keras.Model, target: keras.Model) -> list[str]:
    """Copy the weights of every layer that `target` shares with `source` by name and shape
    (pre-training -> fine-tuning: all but the task-specific raw_output); return their names."""
    copied = []
    for layer in target.layers:
        try:
            donor = source.get_layer(layer.name)
        except ValueError:
            continue
        weights = donor.get_weights()
        shapes_match = [w.shape for w in weights] == [tuple(v.shape) for v in layer.weights]
        if weights and shapes_match:
            layer.set_weights(weights)
            copied.append(layer.name)
    return copied


def _sequence_layer(
    config: ModelConfig, x: keras.KerasTensor, states: list[keras.KerasTensor]
) -> keras.KerasTensor:
    """The time-mixing stage: a recurrent layer started from the metadata states, or (no
    recurrence) the metadata Dense added to every timestep as a bias."""
    if config.recurrence == "none":
        if not states:
            return x
        bias = layers.Reshape((1, config.conv_filters[-1]), name="metadata_bias_shape")(states[0])
        return layers.Add(name="metadata_bias")([x, bias])  # broadcast over time
    cell = layers.GRU if config.recurrence.endswith("gru") else layers.LSTM
    if config.recurrence.startswith("bi"):
        rnn = layers.Bidirectional(
            cell(config.units, return_sequences=True), name=config.recurrence
        )
    else:
        rnn = cell(config.units, return_sequences=True, name=config.recurrence)
    return rnn(x, initial_state=states) if states else rnn(x)


def _head(task: TaskSpec, pooled_task: keras.KerasTensor) -> keras.KerasTensor:
    if task.kind == "classification":
        return layers.Activation("sigmoid", name=task.head)(pooled_task)
    return layers.Rescaling(task.scale, offset=task.offset, name=task.head)(pooled_task)


def _check_tasks(tasks: Sequence[TaskSpec]) -> None:
    names = [task.name for task in tasks]
    if not names:
        raise ValueError("build_model needs at least one task; got none. Pass a TaskSpec list.")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"task names must be unique (they name the heads); duplicated: {duplicates}. "
            "Rename the condition or synthetic target."
        )


def compile_model(model: keras.Model, tasks: Sequence[TaskSpec], learning_rate: float) -> None:
    """Adam; masked losses; a regression loss weighted 1/scale**2, i.e. in standardised units."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss={t.head: MaskedBinaryCrossentropy() if t.kind == "classification"
              else MaskedMeanSquaredError() for t in tasks},
        loss_weights={t.head: 1.0 / t.scale**2 for t in tasks},
    )
