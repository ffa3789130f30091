"""What each stage hands to the report: its result record turned into a StageOutcome
(summary section, findings, figures, notes). One function per stage result type."""

from __future__ import annotations

import json
from functools import singledispatch
from pathlib import Path

from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import ActivationsSection, DataSection, Finding
from stethoscope.tasks.analyze.config import AnalysisResult
from stethoscope.tasks.audits.activations.config import ActivationsResult
from stethoscope.tasks.audits.gradients.config import GradientsResult
from stethoscope.tasks.audits.synthetic.config import SyntheticAuditResult
from stethoscope.tasks.labels.config import UserWeeksResult
from stethoscope.tasks.sequences.config import SequencesResult
from stethoscope.tasks.train.config import TrainResult
from stethoscope.tasks.validate.config import ValidationResult


@singledispatch
def outcome_of(result: object) -> StageOutcome:
    raise TypeError(f"no report outcome for {type(result).__name__}")


@outcome_of.register
def _(result: ValidationResult) -> StageOutcome:
    findings = []
    if result.files_rejected:
        findings.append(Finding(
            stage="validate", severity="warning", code="FILES_SET_ASIDE",
            message=f"{len(result.files_rejected)} sensor-log file(s) set aside whole: "
                    f"{', '.join(result.files_rejected[:5])}",
            recommendation="read validation/report.json for the column, rule and fix of each"))
    if result.rows_quarantined:
        findings.append(Finding(
            stage="validate", severity="info", code="ROWS_QUARANTINED",
            message=f"{result.rows_quarantined:,} of {result.rows_in:,} rows "
                    f"({result.quarantined_share:.2%}) quarantined",
            recommendation="validation/quarantine/ holds each row with the rule it broke"))
    if result.unknown_devices:
        findings.append(Finding(
            stage="validate", severity="warning", code="UNKNOWN_DEVICES",
            message="devices not in the catalog: " + ", ".join(sorted(result.unknown_devices)),
            recommendation="add them to schemas/devices.py so strata by generation see them"))
    if result.gx_success is False:
        findings.append(Finding(
            stage="validate", severity="warning", code="EXPECTATIONS_FAILED",
            message="great-expectations suite failed on the sample",
            recommendation="open validation/data_docs/index.html"))
    data = DataSection(rows_in=result.rows_in, rows_clean=result.rows_clean,
                       rows_quarantined=result.rows_quarantined, users=result.users)
    return StageOutcome(stage="data", findings=findings, data=data, notes=result.warnings[:10])


@outcome_of.register
def _(result: UserWeeksResult) -> StageOutcome:
    return StageOutcome(stage="data", notes=[result.describe()],
                        data=DataSection(user_weeks=result.num_user_weeks))


@outcome_of.register
def _(result: SequencesResult) -> StageOutcome:
    return StageOutcome(stage="data", notes=[result.describe()])


@outcome_of.register
def _(result: TrainResult) -> StageOutcome:
    figure = _plot_history(result.history_path, result.history_path.with_suffix(".png"))
    notes = [f"trained {', '.join(result.tasks)} ({result.mode}) for {result.epochs_completed} "
             f"epochs; best {result.monitor} {result.best_loss}"
             + (f"; resumed from epoch {result.resumed_from_epoch}" if result.resumed_from_epoch else "")]
    return StageOutcome(stage="training", notes=notes,
                        figures=[Figure("training", "Loss per epoch", figure)] if figure else [])


@outcome_of.register
def _(result: ActivationsResult) -> StageOutcome:
    figures = [Figure("activations", f"Activations of {p.stem}", p,
                      "units x time for a few validation user-weeks; night shaded")
               for p in result.heatmap_files]
    if result.dead_history_plot is not None:
        figures.insert(0, Figure("activations", "Dead units per epoch", result.dead_history_plot,
                                 "share of each layer's units that are dead, after every epoch"))
    return StageOutcome(stage="activations", findings=list(result.findings), figures=figures,
                        activations=ActivationsSection(layers=list(result.layers)))


@outcome_of.register
def _(result: GradientsResult) -> StageOutcome:
    figures = [Figure("gradients", "Input-gradient profile around t_mid", result.plot_file,
                      "mean |d raw_output[t_mid] / d input[t]| on a log scale; horizon marked")]
    return StageOutcome(stage="gradients", findings=list(result.findings), figures=figures,
                        gradients=result.section)


@outcome_of.register
def _(result: SyntheticAuditResult) -> StageOutcome:
    figures = [Figure("synthetic", "Synthetic-target learnability", result.plot_file,
                      "R² per target on validation user-weeks: the network, the memory-less "
                      "reference and the train mean; dashed: the threshold")]
    return StageOutcome(stage="synthetic", findings=list(result.findings), figures=figures,
                        synthetic=list(result.results), notes=[result.note])


@outcome_of.register
def _(result: AnalysisResult) -> StageOutcome:
    figures = [Figure("predictions", p.stem.replace("_", " "), p) for p in result.plots]
    figures += [Figure("predictions", p.stem.replace("_", " "), p) for p in result.week_plots]
    return StageOutcome(stage="predictions", findings=list(result.findings), figures=figures,
                        predictions=result.predictions_section(),
                        notes=[result.week_plots_skipped] if result.week_plots_skipped else [])


def _plot_history(history_file: Path, out: Path) -> Path | None:
    """Loss curves per epoch (train and validation) from history.json."""
    history = json.loads(Path(history_file).read_text()) if Path(history_file).exists() else []
    if not history:
        return None
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(7, 3.2))
    ax = fig.subplots()
    epochs = list(range(1, len(history) + 1))
    for key in ("loss", "val_loss"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, marker="o", label=key)
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out
