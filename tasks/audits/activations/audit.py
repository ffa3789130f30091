"""The activation audit: per-unit statistics of every convolutional, recurrent, dense and
activation layer over a sample of validation user-weeks, heatmaps, and the findings
DEAD_UNITS, CONSTANT_UNITS and SATURATED_UNITS (docs/architecture.md §1.1).

Any graph model: functional, Sequential, nested (a layer `conv_1` inside the nested model
`encoder` is `encoder/conv_1`). The layers come from the model's graph (model/probes.py
`ModelGraph`), not from `layer.output`, which a loaded Sequential model or a nested one does not
tie to the model's inputs. One compiled forward pass exposes every inspected layer; each batch
goes through it once and its outputs are reduced at once to per-unit counts and sums, so memory
depends on the batch size and the model, never on the number of user-weeks. A layer's
positions are its (user-week, time) pairs: [batch, T_l, units] (a layer with several spatial
axes has them flattened; a layer without a time axis has one position per user-week).

Definitions (thresholds are ActivationsConfig fields):
- zero_share: share of positions where the unit's output is exactly 0.0.
- dead: zero_share >= dead_threshold (0.99).
- constant on a user-week: max_t a - min_t a <= constant_atol + constant_rtol * max_t |a|
  (the range, not the standard deviation, so that a unit emitting only its bias counts exactly,
  free of float32 round-off). For a layer without a time axis (e.g. the metadata Dense that
  starts the LSTM): constant across user-weeks (needs >= 2 of them, and some unit of the layer
  that does vary: when all are flat, the layer's input was constant over the sample).
- constant_share: share of user-weeks on which the unit is constant; constant unit: not dead,
  and constant_share >= constant_threshold (0.99) -- the bias-only units behind a dead layer.
- saturated position (units whose output is bounded only): |a| > 1 - margin for tanh-bounded
  outputs (tanh, softsign, LSTM/GRU), a < margin or a > 1 - margin for sigmoid; margin = 0.01.
  Saturated unit: saturated_share >= saturated_threshold (0.9). A layer's saturated_fraction is
  its share of saturated units (0.0 for unbounded activations).
- temporal_std_mean: the unit's standard deviation over time, averaged over user-weeks.
- semantic units (when `config.semantic` and the input's scale is known): Pearson r over time of
  every unit of a layer [batch, T_l, units] with the states night, activity, hr_missing,
  elevated_hr and after_activity derived from the batch's input; the units of largest |r| >=
  semantic_threshold per layer and state (definitions in semantic.py).

The parts live in private modules: the streaming per-unit statistics in
`tasks/audits/activations/stats.py`, the semantic units in `tasks/audits/activations/semantic.py`,
the heatmaps and the dead-units-by-epoch plot in `tasks/audits/activations/plots.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import matplotlib
import numpy as np
import pandas as pd
import tensorflow as tf

from stethoscope.model.callbacks import layer_kind, output_bound
from stethoscope.model.probes import compile_forward, inspected_calls
from stethoscope.tasks.audits.activations.config import (
    DEFAULT_CONFIG,
    HEATMAP_KINDS,
    UNITS_SCHEMA,
    ActivationAudit,
    ActivationsConfig,
    InputScale,
)
from stethoscope.tasks.audits.activations.semantic import (
    StateCorrelations,
    input_states,
    semantic_units,
    states_at_steps,
)
from stethoscope.tasks.audits.activations.stats import UnitSums, layer_record, reduce_batch
from stethoscope.tasks.shared.audited_model import (
    Batch,
    check_audit_model,
    iter_model_inputs,
    sequence_index,
)

matplotlib.use("Agg")


def audit_activations(
    model: keras.Model, batches: Iterable[Batch], config: ActivationsConfig = DEFAULT_CONFIG,
    scale: InputScale | None = None,
) -> ActivationAudit:
    """Stream `batches` (see tasks.shared.audited_model.model_inputs) through one compiled
    forward pass of `model` and return per-unit statistics of every inspected layer (none, and
    no batch read, when the model has no convolutional, recurrent, dense or activation layer).
    With `scale` (how to read the store's channels back) and `config.semantic`, also the
    semantic units of every layer with a time axis."""
    graph = check_audit_model(model, output_layer=None)
    calls = inspected_calls(graph, config.layers)
    if not calls:
        return ActivationAudit(layers=[], units=pd.DataFrame(columns=UNITS_SCHEMA.names))
    bounds = [output_bound(call.layer) for call in calls]
    heatmap = [call.has_time and layer_kind(call.layer) in HEATMAP_KINDS for call in calls]
    forward = compile_forward(graph, calls)
    sums = [UnitSums(int(call.output.shape[-1]), call.has_time) for call in calls]
    samples: dict[str, list[np.ndarray]] = {
        call.name: [] for call, wanted in zip(calls, heatmap, strict=True) if wanted}
    semantic = {call.name: StateCorrelations(int(call.output.shape[-1])) for call in calls
                if config.semantic and scale is not None and len(call.output.shape) == 3}
    sequence, num_user_weeks = sequence_index(model), 0
    for inputs in iter_model_inputs(batches, model):
        needed = config.heatmap_user_weeks - num_user_weeks  # heatmaps: the first user-weeks
        states = (input_states(inputs[sequence], scale, config.night_hours,
                               config.active_steps_per_minute)
                  if semantic and scale is not None else None)  # [b, T, states]
        for call, acc, bound, a in zip(calls, sums, bounds, forward(inputs), strict=True):
            a = tf.reshape(a, [a.shape[0], -1, a.shape[-1]])  # [b, T_l, units]
            acc.add(reduce_batch(a, bound, config.saturation_margin), config)
            if states is not None and call.name in semantic:
                semantic[call.name].add(a, states_at_steps(states, a.shape[1]))
            if needed > 0 and call.name in samples:
                samples[call.name].append(a[:needed].numpy())
        num_user_weeks += len(inputs[sequence])
    if num_user_weeks == 0:
        raise ValueError("audit_activations got no batches; give it at least one user-week")
    tables = [acc.table(call.name, bound, config)
              for call, acc, bound in zip(calls, sums, bounds, strict=True)]
    entries, semantic_table = semantic_units(
        [semantic[call.name].table(call.name, (table["dead"] | table["constant"]).to_numpy(),
                                   config)
         for call, table in zip(calls, tables, strict=True) if call.name in semantic], config)
    return ActivationAudit(
        layers=[layer_record(table, call.name) for table, call in zip(tables, calls,
                                                                        strict=True)],
        units=pd.concat(tables, ignore_index=True),
        samples={name: np.concatenate(parts) for name, parts in samples.items() if parts},
        num_user_weeks=num_user_weeks,
        semantic=entries,
        semantic_table=semantic_table if semantic else None,
    )
