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

import random
from collections.abc import Sequence

import keras
from keras import layers, ops

from stethoscope.model.config import _NUM_STATES, ModelConfig, TaskSpec
from stethoscope.model.losses import MaskedBinaryCrossentropy, MaskedMeanSquaredError


def build_model(config: ModelConfig, tasks: Sequence[TaskSpec], seed: int | None = None
                ) -> keras.Model:
    """The functional DeepHeart model: inputs [`sequence`, `metadata` (when M > 0)], outputs a
    dict {`head_<task>`: [batch, 1]} in the order of `tasks`. With `seed`, the initial weights
    are a function of it alone (see `_Seeds`); without, Keras draws them."""
    _check_tasks(tasks)
    seeds = _Seeds(seed)
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
            kernel_initializer=seeds.glorot(),
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
            _NUM_STATES[config.recurrence] * width, activation="tanh",
            kernel_initializer=seeds.glorot(), name="initial_state"
        )(metadata)  # [batch, states * width]
        states = list(ops.split(initial, _NUM_STATES[config.recurrence], axis=-1))

    x = _sequence_layer(config, x, states, seeds)  # [batch, T', features]
    raw = layers.Dense(len(tasks), kernel_initializer=seeds.glorot(),
                       name=config.raw_output_layer)(x)  # [batch, T', tasks]
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


class _Seeds:
    """Seeded initializers for one build. Keras draws the seed of an unseeded initializer from
    Python's process-wide `random` when the layer is made; other threads draw from it too (a
    model loading in a parallel audit, the websocket of Prefect's event client), so a build
    under `keras.utils.set_random_seed` alone got other weights depending on what ran beside
    it (a resumed run's training, whose data stages came from the cache). With a seed, every
    initializer gets its own from a private generator; without, Keras' defaults as before."""

    def __init__(self, seed: int | None) -> None:
        self.rng = None if seed is None else random.Random(seed)

    def _next(self) -> int | None:
        return None if self.rng is None else self.rng.randrange(1, 2**31)

    def glorot(self) -> keras.initializers.Initializer | str:  # Keras' default kernel init
        seed = self._next()
        return "glorot_uniform" if seed is None else keras.initializers.GlorotUniform(seed)

    def recurrent(self) -> dict[str, object]:
        """A recurrent layer's random parts (kernel, recurrent kernel, its dropout seed)."""
        if self.rng is None:
            return {}
        return {"kernel_initializer": self.glorot(),
                "recurrent_initializer": keras.initializers.Orthogonal(seed=self._next()),
                "seed": self._next()}


def _sequence_layer(
    config: ModelConfig, x: keras.KerasTensor, states: list[keras.KerasTensor], seeds: _Seeds
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
        # seeded, the backward layer is given: a copy of the forward one would share its seeds
        kind = cell.__name__.lower()
        backward = (cell(config.units, return_sequences=True, go_backwards=True,
                         name=f"backward_{kind}", **seeds.recurrent())
                    if seeds.rng is not None else None)
        rnn = layers.Bidirectional(
            cell(config.units, return_sequences=True, name=kind, **seeds.recurrent()),
            backward_layer=backward, name=config.recurrence
        )
    else:
        rnn = cell(config.units, return_sequences=True, name=config.recurrence,
                   **seeds.recurrent())
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
