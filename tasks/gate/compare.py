"""The gate's core: profile this run's data, find its reference, compare, write what was found.

Everything read of the reference run is small and was written for this purpose: its
summary.json (the model's measures), its `gate/profile.json` (the data's statistics) and its
`analysis/baseline_scores.parquet` (the scored user-weeks). Raw logs are never re-read, and a
reference whose run directory lacks one of them is compared on what it has.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from stethoscope.schemas.atomic import write_json_atomic
from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import StageOutcome, last_section
from stethoscope.schemas.summary import (
    ActivationsSection,
    ComparisonSection,
    DriftEntry,
    GradientsSection,
    PredictionsSection,
)
from stethoscope.tasks.gate import findings as gate_findings
from stethoscope.tasks.gate import plots
from stethoscope.tasks.gate.config import COMPARISON_FILE, PROFILE_FILE, GateConfig, GateResult
from stethoscope.tasks.gate.drift import DriftThresholds, compare_profiles
from stethoscope.tasks.gate.profile import DataProfile, profile_run, read_profile, write_profile
from stethoscope.tasks.gate.reference import Reference, find_reference
from stethoscope.tasks.gate.regressions import ModelFacts, model_changes, score_changes
from stethoscope.tasks.shared.score_deltas import PAIRED_METHOD, SCORE_COLUMNS, UNPAIRED_METHOD

log = logging.getLogger("stethoscope.gate")


def facts_of_outcomes(outcomes: list[StageOutcome]) -> ModelFacts:
    predictions = last_section(outcomes, "predictions", PredictionsSection())
    return ModelFacts(activations=last_section(outcomes, "activations", ActivationsSection()),
                      gradients=last_section(outcomes, "gradients", GradientsSection()),
                      synthetic=last_section(outcomes, "synthetic", []),
                      strata=list(predictions.strata))


def gate_run(run_dir: Path, outcomes: list[StageOutcome], config: GateConfig,
             flow: str | None, started_at: datetime, pinned: Path | None = None) -> GateResult:
    """Profile the run at `run_dir`, compare it with its reference, write `gate/` files."""
    run = RunPaths(Path(run_dir))
    profile = _profile(run)
    profile_file = write_profile(profile, run.gate / PROFILE_FILE) if profile else None
    if not config.enabled:
        return GateResult(comparison=ComparisonSection(note="the gate is disabled (gate.enabled)"),
                          profile=profile_file)
    reference = find_reference(run.root, flow, started_at, pinned)
    if reference is None:
        why = (f"no earlier run of {flow or 'this flow'} in {run.root.parent} that did not "
               "fail: nothing to compare with yet")
        return GateResult(comparison=ComparisonSection(note=why),
                          findings=[gate_findings.no_reference(why)], profile=profile_file)
    log.info("comparing with the reference run %s (%s)", reference.record.run_id,
             reference.record.chosen)
    notes: list[str] = []
    ref_facts = ModelFacts(reference.summary.activations, reference.summary.gradients,
                           list(reference.summary.synthetic), list(reference.summary.predictions.strata))
    changes = model_changes(ref_facts, facts_of_outcomes(outcomes), config)
    scores = _scores(reference, run, notes)
    score_results = score_changes(*scores, config) if scores else []
    changes = score_results + changes
    drift = []
    ref_profile = _reference_profile(reference, notes)
    if profile is not None and ref_profile is not None:
        drift = compare_profiles(ref_profile, profile, _thresholds(config))
    elif profile is not None:
        notes.append(f"the reference run {reference.record.run_id} has no data profile "
                     "(gate/profile.json): the data are not compared")
    methods = sorted({PAIRED_METHOD if c.paired else UNPAIRED_METHOD
                      for c in score_results if c.paired is not None})
    comparison = ComparisonSection(
        reference=reference.record, changes=changes, drift=[DriftEntry(**asdict(d)) for d in drift],
        interval_method="; ".join(methods) or None)
    findings = (gate_findings.regression_findings(changes, reference.record)
                + gate_findings.drift_findings(comparison.drift, reference.record))
    notes += gate_findings.cannot_tell(changes)
    figures = plots.plot_comparison(comparison, ref_profile, profile, run.gate)
    comparison_file = write_json_atomic(comparison.model_dump(mode="json"),
                                        run.gate / COMPARISON_FILE)
    return GateResult(comparison=comparison, findings=findings, figures=figures, notes=notes,
                      profile=profile_file, comparison_file=comparison_file)


def _profile(run: RunPaths) -> DataProfile | None:
    if not run.user_weeks.is_file():
        return None
    report = run.validation_report if run.validation_report.is_file() else None
    return profile_run(run.user_weeks, report)


def _reference_profile(reference: Reference, notes: list[str]) -> DataProfile | None:
    path = reference.run.gate / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        return read_profile(path)
    except (OSError, ValueError) as exc:
        notes.append(f"the reference's data profile {path} cannot be read ({exc}): the data "
                     "are not compared")
        return None


def _scores(reference: Reference, run: RunPaths,
            notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    files = (reference.run.scored_rows, run.scored_rows)
    if not run.scored_rows.is_file():
        return None
    if not reference.run.scored_rows.is_file():
        notes.append(f"the reference run {reference.record.run_id} has no scored rows "
                     f"({reference.run.scored_rows}): AUROC and AUPRC are not compared")
        return None
    frames = []
    for file in files:
        columns = [c for c in SCORE_COLUMNS if c in pq.read_schema(file).names]
        frames.append(pq.read_table(file, columns=columns).to_pandas())
    return frames[0], frames[1]


def _thresholds(config: GateConfig) -> DriftThresholds:
    return DriftThresholds(alpha=config.alpha, wasserstein=config.drift_wasserstein,
                           psi=config.drift_psi, device_mix_tvd=config.drift_device_mix,
                           quarantine_rate=config.drift_quarantine_rate,
                           min_n=config.drift_min_n)
