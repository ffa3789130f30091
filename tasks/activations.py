"""The activation audit: per-unit statistics of every convolutional, recurrent, dense and
activation layer over a sample of validation user-weeks, heatmaps, and the findings
DEAD_UNITS, CONSTANT_UNITS and SATURATED_UNITS (DESIGN section 1.2).

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
`tasks/_activation_stats.py`, the heatmaps and the dead-units-by-epoch plot in
`tasks/_activation_plots.py`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
import tensorflow as tf
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from model.callbacks import (
    activation_layers,
    build_probe,
    compile_probe,
    first_output,
    layer_kind,
    output_bound,
)
from schemas.config import StageConfig
from schemas.summary import Finding, LayerActivations
from tasks._activation_plots import plot_dead_history, plot_heatmaps, save_png
from tasks._activation_stats import UnitSums, layer_record, reduce_batch
from tasks._batches import (
    Batch,
    iter_model_inputs,
    iter_store_batches,
    load_audit_model,
    store_stats,
)
from tasks.io import write_parquet_atomic

__all__ = [  # the stage's interface; the names from private modules are re-exported here
    "DEFAULT_CONFIG", "HEATMAP_KINDS", "STAGE", "UNITS_FILE", "UNITS_SCHEMA", "ActivationAudit",
    "ActivationsConfig", "ActivationsResult", "activation_findings", "activations_task",
    "audit_activations", "plot_dead_history", "plot_heatmaps",
]

matplotlib.use("Agg")
log = logging.getLogger("stethoscope.activations")
STAGE = "activations"
UNITS_FILE = "units.parquet"
HEATMAP_KINDS = ("convolutional", "recurrent", "activation")

UNITS_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.string(), nullable=False),
        pa.field("unit", pa.int32(), nullable=False),
        pa.field("zero_share", pa.float64(), nullable=False),
        pa.field("temporal_std_mean", pa.float64()),  # null: the layer has no time axis
        pa.field("constant_share", pa.float64()),  # null: one user-week of a layer without time
        pa.field("saturated_share", pa.float64()),  # null: the output is unbounded
        pa.field("dead", pa.bool_(), nullable=False),
        pa.field("constant", pa.bool_(), nullable=False),
        pa.field("saturated", pa.bool_(), nullable=False),
    ]
)


class ActivationsConfig(StageConfig):
    """Sample, thresholds and heatmaps of the activation audit."""

    split: str = "val"
    max_user_weeks: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    layers: tuple[str, ...] | None = Field(None, description="None: every inspectable layer")
    dead_threshold: float = Field(0.99, gt=0, le=1, description="dead: exactly 0 on at least "
                                  "this share of (user-week, time) positions")
    constant_threshold: float = Field(0.99, gt=0, le=1, description="constant: flat over time "
                                      "on at least this share of user-weeks")
    constant_rtol: float = Field(1e-6, ge=0, description="flat: max - min <= atol + rtol max|a|")
    constant_atol: float = Field(1e-7, ge=0)
    saturation_margin: float = Field(0.01, gt=0, lt=0.5, description="saturated: within this "
                                     "of a tanh/sigmoid bound")
    saturated_threshold: float = Field(0.9, gt=0, le=1, description="saturated unit: on at "
                                       "least this share of positions")
    error_fraction: float = Field(0.5, gt=0, le=1, description="dead/constant share of a layer's "
                                  "units from which the finding is an error, not a warning")
    heatmap_user_weeks: int = Field(3, ge=0)
    night_hours: tuple[float, float] = Field((0.0, 6.0), description="local [start, end) hours")


DEFAULT_CONFIG = ActivationsConfig()


@dataclass(frozen=True)
class ActivationAudit:
    """What the audit computed: per-layer records, the tidy per-unit table (UNITS_SCHEMA) and
    the first user-weeks' activations [n, T_l, units] of every heatmap layer."""

    layers: list[LayerActivations]
    units: pd.DataFrame
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    num_user_weeks: int = 0


class ActivationsResult(BaseModel):
    """The task's small record: summary.json entries, findings and the files written."""

    model_config = ConfigDict(frozen=True)

    layers: list[LayerActivations]
    findings: list[Finding]
    num_user_weeks: int
    units_file: Path
    heatmap_files: list[Path]
    dead_history_file: Path | None = None  # DeadUnitMonitor's rows, when training wrote them
    dead_history_plot: Path | None = None  # dead share per layer per epoch


def audit_activations(
    model: keras.Model, batches: Iterable[Batch], config: ActivationsConfig = DEFAULT_CONFIG
) -> ActivationAudit:
    """Stream `batches` (see tasks._batches.model_inputs) through one probe of `model` and
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


def activation_findings(
    layers: Sequence[LayerActivations],
    config: ActivationsConfig = DEFAULT_CONFIG,
    dead_history: Sequence[dict] | None = None,
) -> list[Finding]:
    """DEAD_UNITS, CONSTANT_UNITS and SATURATED_UNITS, one finding per code naming every
    affected layer; `dead_history` (DeadUnitMonitor rows) adds when the units died."""
    findings = []
    dead = [layer for layer in layers if layer.dead_units]
    if dead:
        parts = [f"{_share(layer, layer.dead_units)}{_died_when(layer.name, dead_history)}"
                 for layer in dead]
        findings.append(_finding(
            "DEAD_UNITS", max(layer.dead_fraction for layer in dead), config,
            f"Dead units (exactly zero on >= {config.dead_threshold:.0%} of positions): "
            + "; ".join(parts) + ".",
            "Use Leaky ReLU (or ELU) instead of ReLU; lower the learning rate or clip gradients "
            "(units die after large updates); use He initialisation and standardised inputs. "
            "Units dead from epoch 0 point at initialisation or input scaling.",
        ))
    constant = [layer for layer in layers if layer.constant_units]
    if constant:
        findings.append(_finding(
            "CONSTANT_UNITS",
            max(len(layer.constant_units) / layer.units for layer in constant), config,
            f"Units whose output does not change over time on >= {config.constant_threshold:.0%} of "
            "user-weeks (bias only): " + "; ".join(
                _share(layer, layer.constant_units) for layer in constant) + ".",
            "These units see no varying input: fix the dead units in the layer before them "
            "(Leaky ReLU, lower learning rate); otherwise look for an input channel that is "
            "constant (e.g. a missing signal filled with zeros).",
        ))
    saturated = [layer for layer in layers if layer.saturated_fraction > 0]
    if saturated:
        findings.append(Finding(
            stage=STAGE, severity="warning", code="SATURATED_UNITS",
            message=f"Saturated tanh/sigmoid units (within {config.saturation_margin} of their "
            f"bounds on >= {config.saturated_threshold:.0%} of positions): " + "; ".join(
                f"{layer.name} {layer.saturated_fraction:.0%} of {layer.units} units"
                for layer in saturated) + ".",
            recommendation="Saturated units pass almost no gradient: standardise the inputs, "
            "use Glorot initialisation, lower the learning rate, add LayerNormalization before "
            "the layer, or clip gradients.",
        ))
    return findings


# --- private helpers -------------------------------------------------------------------------


def _finding(code: str, worst: float, config: ActivationsConfig, message: str,
             recommendation: str) -> Finding:
    severity = "error" if worst >= config.error_fraction else "warning"
    return Finding(stage=STAGE, severity=severity, code=code, message=message,
                   recommendation=recommendation)


def _share(layer: LayerActivations, units: list[int]) -> str:
    shown = ", ".join(map(str, units[:10])) + (", ..." if len(units) > 10 else "")
    return f"{layer.name} {len(units)}/{layer.units} units [{shown}]"


def _died_when(layer: str, history: Sequence[dict] | None) -> str:
    rows = sorted((r for r in history or [] if r["layer"] == layer), key=lambda r: r["epoch"])
    first = next((r for r in rows if r["dead_fraction"] > 0), None)
    if first is None:
        return ""
    if first["epoch"] == 0:
        return " (dead already at initialisation)"
    return (f" (first dead after epoch {first['epoch']} of {rows[-1]['epoch']}, "
            f"{rows[-1]['dead_fraction']:.0%} dead at the end of training)")


def _publish(layers: list[LayerActivations]) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:  # called outside a Prefect run (tests, notebooks)
        return
    create_table_artifact(
        key="activations-layers",
        table=[{"layer": x.name, "units": x.units, "dead": len(x.dead_units),
                "dead_fraction": round(x.dead_fraction, 4), "constant": len(x.constant_units),
                "saturated_fraction": round(x.saturated_fraction, 4)} for x in layers],
        description="Dead, constant and saturated units per layer",
    )


@task(name="activations", task_run_name="activations {model_path.name}")
def activations_task(
    model_path: Path,
    store_dir: Path,
    out_dir: Path,
    config: ActivationsConfig = DEFAULT_CONFIG,
    dead_history_file: Path | None = None,
) -> ActivationsResult:
    """Prefect shell: audit the model on the store's sample, write the per-unit table and the
    heatmaps under `out_dir`, publish a table artifact, return the record."""
    model = load_audit_model(model_path, output_layer=None)
    stats = store_stats(store_dir, model)
    batches = iter_store_batches(store_dir, config.split, config.max_user_weeks, config.batch_size)
    audit = audit_activations(model, batches, config)
    out_dir = Path(out_dir)
    history, history_plot = None, None
    if dead_history_file is not None and Path(dead_history_file).exists():
        history = json.loads(Path(dead_history_file).read_text())
        history_plot = save_png(plot_dead_history(history), out_dir / "dead_units_by_epoch.png")
    findings = activation_findings(audit.layers, config, history)
    units_file = write_parquet_atomic(
        pa.Table.from_pandas(audit.units, schema=UNITS_SCHEMA, preserve_index=False),
        out_dir / UNITS_FILE)
    # Store bins start at local Monday 00:00 (DESIGN 3): step t starts t x bin_seconds later
    # (an hour off on the days after a DST change).
    hours = (np.arange(stats.num_steps) * stats.bin_seconds / 3600.0) % 24.0 if stats else None
    heatmaps = [save_png(plot_heatmaps(name, sample, hours, config.night_hours),
                          out_dir / f"heatmap_{name}.png")
                for name, sample in audit.samples.items()]
    _publish(audit.layers)
    return ActivationsResult(layers=audit.layers, findings=findings,
                             num_user_weeks=audit.num_user_weeks, units_file=units_file,
                             heatmap_files=heatmaps, dead_history_file=dead_history_file,
                             dead_history_plot=history_plot)
