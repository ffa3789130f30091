"""The activation audit: per-unit statistics of every convolutional, recurrent, dense and
activation layer over a sample of validation user-weeks, heatmaps, and the findings
DEAD_UNITS, CONSTANT_UNITS and SATURATED_UNITS (docs/architecture.md §1.1).

One probe model exposes every inspected layer; each batch goes through it once (compiled) and
its outputs are reduced at once to per-unit counts and sums, so memory depends on the batch size
and the model, never on the number of user-weeks. A layer's positions are its (user-week, time) pairs: [batch, T_l, units]
(a layer with several spatial axes has them flattened; a layer without a time axis has one
position per user-week).

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

The parts live in private modules: the streaming per-unit statistics in
`tasks/audits/activations/stats.py`, the heatmaps and the dead-units-by-epoch plot in
`tasks/audits/activations/plots.py`.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import matplotlib
import numpy as np
import pandas as pd
import tensorflow as tf

from stethoscope.model.callbacks import (
    activation_layers,
    build_probe,
    compile_probe,
    first_output,
    layer_kind,
    output_bound,
)
from stethoscope.tasks.audits.activations.config import (
    DEFAULT_CONFIG,
    HEATMAP_KINDS,
    ActivationAudit,
    ActivationsConfig,
)
from stethoscope.tasks.audits.activations.stats import UnitSums, layer_record, reduce_batch
from stethoscope.tasks.shared.audited_model import Batch, iter_model_inputs

matplotlib.use("Agg")


def audit_activations(
    model: keras.Model, batches: Iterable[Batch], config: ActivationsConfig = DEFAULT_CONFIG
) -> ActivationAudit:
    """Stream `batches` (see tasks.shared.audited_model.model_inputs) through one probe of `model` and
    return per-unit statistics of every inspected layer."""
    layers = activation_layers(model, config.layers)
    bounds = [output_bound(layer) for layer in layers]
    has_time = [len(first_output(layer).shape) >= 3 for layer in layers]
    heatmap = [t and layer_kind(layer) in HEATMAP_KINDS for layer, t in zip(layers, has_time,
                                                                          strict=True)]
    forward = compile_probe(build_probe(model, layers))
    sums = [UnitSums(int(first_output(layer).shape[-1]), t)
            for layer, t in zip(layers, has_time, strict=True)]
    samples: dict[str, list[np.ndarray]] = {
        layer.name: [] for layer, wanted in zip(layers, heatmap, strict=True) if wanted}
    num_user_weeks = 0
    for inputs in iter_model_inputs(batches, model):
        needed = config.heatmap_user_weeks - num_user_weeks  # heatmaps: the first user-weeks
        for layer, acc, bound, a in zip(layers, sums, bounds, forward(inputs), strict=True):
            a = tf.reshape(a, [a.shape[0], -1, a.shape[-1]])  # [b, T_l, units]
            acc.add(reduce_batch(a, bound, config.saturation_margin), config)
            if needed > 0 and layer.name in samples:
                samples[layer.name].append(a[:needed].numpy())
        num_user_weeks += len(inputs[0])
    if num_user_weeks == 0:
        raise ValueError("audit_activations got no batches; give it at least one user-week")
    tables = [acc.table(layer.name, bound, config)
              for layer, acc, bound in zip(layers, sums, bounds, strict=True)]
    units = pd.concat(tables, ignore_index=True)
    return ActivationAudit(
        layers=[layer_record(table, layer.name) for table, layer in zip(tables, layers,
                                                                          strict=True)],
        units=units,
        samples={name: np.concatenate(parts) for name, parts in samples.items() if parts},
        num_user_weeks=num_user_weeks,
    )
