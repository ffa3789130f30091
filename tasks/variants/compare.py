"""Variants of one architecture side by side: what each run directory says, measure by measure.

Each variant (and each of its seeds) is a full run directory written by the same stages as a
nightly run, on one shared sequence store. From each the comparison reads `summary.json` (dead
and constant share per layer, the gradient horizon, synthetic-target R², AUROC per task) and
`analysis/baseline_scores.parquet` (the scored user-weeks).

Which differences are beyond noise:
- AUROC per task: every variant against the best one, on the same user-weeks (one store, one
  test split), paired by user-week with a BCa interval over user-level bootstrap resamples
  (tasks/shared/score_deltas.py); beyond noise when the interval excludes zero. With several
  seeds the seeds' scores are compared seed by seed and the widest interval is kept.
- every other measure (and AUROC too) with several seeds: beyond noise when the variant's
  range over seeds and the best variant's range do not overlap. With one seed those measures
  have no noise estimate: `beyond_noise` stays None and the report says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.shared.score_deltas import SCORE_COLUMNS, score_deltas
from stethoscope.tasks.variants.config import (
    LayerShare,
    Measure,
    VariantRun,
    VariantsConfig,
    VariantSummary,
)

log = logging.getLogger("stethoscope.variants")

# measures where lower is better; every other is better higher
_LOWER_IS_BETTER = ("dead share", "constant share")


def read_run(run: VariantRun) -> tuple[Summary, pd.DataFrame | None]:
    paths = RunPaths(Path(run.run_dir))
    summary = Summary.model_validate_json(paths.summary.read_bytes())
    scores = None
    if paths.scored_rows.is_file():
        columns = [c for c in SCORE_COLUMNS if c in pq.read_schema(paths.scored_rows).names]
        scores = pq.read_table(paths.scored_rows, columns=columns).to_pandas()
    return summary, scores


def measures_of(summary: Summary) -> dict[str, float | None]:
    """Every measure of one run, by name."""
    values: dict[str, float | None] = {}
    for task in summary.predictions.tasks:
        values[f"auroc {task.task}"] = task.auroc
    for result in summary.synthetic:
        values[f"synthetic r2 {result.target}"] = result.r2
    values["horizon hours"] = summary.gradients.horizon_hours
    for layer in summary.activations.layers:
        values[f"dead share {layer.name}"] = layer.dead_fraction
        values[f"constant share {layer.name}"] = (len(layer.constant_units) / layer.units
                                                  if layer.units else None)
    return values


def compare_variants(runs: Sequence[VariantRun], config: VariantsConfig) -> list[VariantSummary]:
    """One VariantSummary per variant name (its seeds together), each measure against the
    best variant of that measure."""
    names = list(dict.fromkeys(r.name for r in runs))
    read = {(r.name, r.seed): (r, *read_run(r)) for r in runs}
    per_variant = {name: [read[k] for k in read if k[0] == name] for name in names}
    values = {name: [measures_of(summary) for _, summary, _ in rows]
              for name, rows in per_variant.items()}
    measure_names = [m for m in dict.fromkeys(m for rows in values.values() for v in rows for m in v)
                     if any(v.get(m) is not None for rows in values.values() for v in rows)]
    means = {m: {name: _mean([v.get(m) for v in rows]) for name, rows in values.items()}
             for m in measure_names}
    best = {m: _best(m, means[m]) for m in measure_names}
    rng = np.random.default_rng(config.seed)
    summaries = []
    for name, rows in per_variant.items():
        measures = []
        for m in measure_names:
            seeds = [v.get(m) for v in values[name]]
            value = _mean(seeds)
            winner = best[m]
            alike = len(set(means[m].values())) == 1  # every variant the same: no best
            is_best = (not alike and winner is not None and value is not None
                       and abs(value - (means[m][winner] or 0.0)) <= 1e-12)
            delta = ci = beyond = None
            if winner is not None and value is not None and not alike:
                delta = value - (means[m][winner] or 0.0)
                if not is_best:
                    beyond = _seed_ranges_apart(seeds, [v.get(m) for v in values[winner]])
                    if m.startswith("auroc "):
                        ci = _auroc_interval(m.removeprefix("auroc "), rows,
                                             per_variant[winner], config, rng)
                        if ci is not None:
                            beyond = bool(ci[1] < 0 or ci[0] > 0) or bool(beyond)
            measures.append(Measure(measure=m, value=value, seeds=seeds, best=is_best,
                                    delta_vs_best=delta, delta_ci=ci, beyond_noise=beyond))
        first = rows[0][1]
        summaries.append(VariantSummary(
            name=name, config=rows[0][0].config, run_dirs=[r.run_dir for r, _, _ in rows],
            status=[s.status for _, s, _ in rows],
            layers=[LayerShare(name=layer.name, dead_fraction=_mean(
                [_layer(s, layer.name, "dead") for _, s, _ in rows]) or 0.0,
                constant_fraction=_mean([_layer(s, layer.name, "constant") for _, s, _ in rows])
                or 0.0) for layer in first.activations.layers],
            horizon_hours=_mean([s.gradients.horizon_hours for _, s, _ in rows]),
            synthetic={r.target: _mean([_target(s, r.target) for _, s, _ in rows])
                       for r in first.synthetic},
            auroc={t.task: _mean([_auroc(s, t.task) for _, s, _ in rows])
                   for t in first.predictions.tasks},
            measures=measures))
    return summaries


def _best(measure: str, means: dict[str, float | None]) -> str | None:
    known = {name: v for name, v in means.items() if v is not None and np.isfinite(v)}
    if not known:
        return None
    lower = measure.startswith(_LOWER_IS_BETTER)
    return (min if lower else max)(known, key=lambda name: known[name])


def _auroc_interval(task: str, rows: list, best_rows: list, config: VariantsConfig,
                    rng: np.random.Generator) -> tuple[float, float] | None:
    """Paired interval of AUROC(variant) - AUROC(best), seed by seed; the widest is kept (the
    most cautious), None when any seed's is undefined."""
    intervals = []
    for (_, _, scores), (_, _, best_scores) in zip(rows, best_rows, strict=False):
        if scores is None or best_scores is None:
            return None
        deltas = score_deltas(best_scores[best_scores["task"] == task],
                              scores[scores["task"] == task], config.num_bootstrap,
                              config.alpha, 0.8, rng)
        auroc = next((d for d in deltas if d.measure == "auroc"), None)
        if auroc is None or auroc.ci is None:
            return None
        intervals.append(auroc.ci)
    if not intervals:
        return None
    return min(i[0] for i in intervals), max(i[1] for i in intervals)


def _seed_ranges_apart(seeds: list[float | None], best: list[float | None]) -> bool | None:
    a = [v for v in seeds if v is not None]
    b = [v for v in best if v is not None]
    if len(a) < 2 or len(b) < 2:
        return None
    return max(a) < min(b) or min(a) > max(b)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(known)) if known else None


def _layer(summary: Summary, name: str, kind: str) -> float | None:
    for layer in summary.activations.layers:
        if layer.name == name:
            return (layer.dead_fraction if kind == "dead"
                    else len(layer.constant_units) / layer.units if layer.units else None)
    return None


def _target(summary: Summary, target: str) -> float | None:
    return next((r.r2 for r in summary.synthetic if r.target == target), None)


def _auroc(summary: Summary, task: str) -> float | None:
    return next((t.auroc for t in summary.predictions.tasks if t.task == task), None)
