"""The activation audit's Prefect task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
from prefect import task

from stethoscope.schemas.atomic import write_parquet_atomic
from stethoscope.schemas.summary import LayerActivations
from stethoscope.tasks.audits.activations.audit import audit_activations
from stethoscope.tasks.audits.activations.config import (
    DEFAULT_CONFIG,
    NO_LAYERS_NOTE,
    SEMANTIC_FILE,
    SEMANTIC_SCHEMA,
    UNITS_FILE,
    UNITS_SCHEMA,
    ActivationsConfig,
    ActivationsResult,
    InputScale,
)
from stethoscope.tasks.audits.activations.findings import activation_findings
from stethoscope.tasks.audits.activations.plots import (
    plot_dead_history,
    plot_heatmaps,
    semantic_labels,
)
from stethoscope.tasks.shared.artifacts import publish_table
from stethoscope.tasks.shared.audited_model import load_audit_model
from stethoscope.tasks.shared.figures import save_png
from stethoscope.tasks.shared.store import audit_sample, store_stats


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
    model = load_audit_model(model_path, output_layer=None, num_channels=None)
    stats = store_stats(store_dir, model)
    batches = audit_sample(store_dir, config.split, config.max_user_weeks, config.batch_size,
                           "activations")
    scale = InputScale.of(stats) if stats is not None else None
    audit = audit_activations(model, batches, config, scale)
    out_dir = Path(out_dir)
    history, history_plot = None, None
    if dead_history_file is not None and Path(dead_history_file).exists():
        history = json.loads(Path(dead_history_file).read_text())
        history_plot = save_png(plot_dead_history(history), out_dir / "dead_units_by_epoch.png")
    findings = activation_findings(audit.layers, config, history)
    units_file = write_parquet_atomic(
        pa.Table.from_pandas(audit.units, schema=UNITS_SCHEMA, preserve_index=False),
        out_dir / UNITS_FILE)
    # Store bins start at local Monday 00:00 (docs/architecture.md §4.4): step t starts t x bin_seconds later
    # (an hour off on the days after a DST change).
    hours = (np.arange(stats.num_steps) * stats.bin_seconds / 3600.0) % 24.0 if stats else None
    heatmaps = [save_png(plot_heatmaps(name, sample, hours, config.night_hours,
                                       semantic_labels(audit.semantic, name)),
                          out_dir / f"heatmap_{name.replace('/', '.')}.png")
                for name, sample in audit.samples.items()]
    semantic_file = None if audit.semantic_table is None else write_parquet_atomic(
        pa.Table.from_pandas(audit.semantic_table, schema=SEMANTIC_SCHEMA, preserve_index=False),
        out_dir / SEMANTIC_FILE)
    publish_table("activations-layers", [
        {"layer": x.name, "units": x.units, "dead": len(x.dead_units),
         "dead_fraction": round(x.dead_fraction, 4), "constant": len(x.constant_units),
         "saturated_fraction": round(x.saturated_fraction, 4)} for x in audit.layers],
        "Dead, constant and saturated units per layer")
    return ActivationsResult(layers=audit.layers, findings=findings,
                             num_user_weeks=audit.num_user_weeks, units_file=units_file,
                             heatmap_files=heatmaps, dead_history_file=dead_history_file,
                             notes=_notes(audit.layers, config, scale),
                             dead_history_plot=history_plot, semantic=audit.semantic,
                             semantic_file=semantic_file)


def _notes(layers: list[LayerActivations], config: ActivationsConfig, scale: InputScale | None) -> list[str]:
    if not layers:
        return [NO_LAYERS_NOTE]
    if config.semantic and scale is None:
        return ["Semantic units not computed: the store has no stats.json, or channels other "
                "than heart_rate, steps, heart_rate_missing (+ time of day), so the states "
                "cannot be read from the input."]
    return []
