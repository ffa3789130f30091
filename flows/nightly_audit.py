"""The nightly model audit: validate -> labels -> sequences -> train -> audits -> analyze -> report.

Wiring only. Each stage is a task of tasks/ with the one retry and cache policy; tasks pass
paths and small records. The audits of the trained model and the prediction analysis run in
parallel. Parameters are one pydantic model composed of the stages' configs, so the Prefect UI
renders a single form.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field, model_validator

from stethoscope.flows.roots import FormPath
from stethoscope.model.deepheart import ModelConfig
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.outcome import Reportable
from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.analyze.task import analyze_task
from stethoscope.tasks.audits.activations.config import ActivationsConfig
from stethoscope.tasks.audits.activations.task import activations_task
from stethoscope.tasks.audits.gradients.config import GradientsConfig
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.audits.synthetic.config import SyntheticConfig
from stethoscope.tasks.audits.synthetic.task import synthetic_task
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.labels.task import labels_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.sequences.config import SequencesConfig
from stethoscope.tasks.sequences.task import sequences_task
from stethoscope.tasks.shared.policy import stage_options
from stethoscope.tasks.train.config import DEAD_UNITS_FILE, TrainConfig
from stethoscope.tasks.train.task import train_task
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.validate.task import validate_task

MINUTE = 60


class AuditParameters(BaseModel):
    """Everything a run needs; each stage's section has its own defaults."""

    model_config = ConfigDict(extra="forbid")

    data_dir: FormPath = Field(description="cohort directory: sensor_logs/, users.parquet, labels.parquet")
    runs_dir: FormPath = Field("runs", description="where run directories are created")
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                               description="name of the run directory; default: time + random suffix")
    validation: ValidateConfig = Field(default_factory=ValidateConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    sequences: SequencesConfig = Field(default_factory=SequencesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    activations: ActivationsConfig = Field(default_factory=ActivationsConfig)
    gradients: GradientsConfig = Field(default_factory=GradientsConfig)
    analyze: AnalyzeConfig = Field(default_factory=AnalyzeConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @model_validator(mode="after")
    def _one_sequence_length(self) -> AuditParameters:
        lengths = {"labels.num_bins": self.labels.num_bins,
                   "sequences.num_steps": self.sequences.num_steps,
                   "model.num_steps": self.model.num_steps}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"the sequence length T must agree: {lengths}; set all three alike")
        return self

    def run_paths(self) -> RunPaths:
        """The run directory. Without a run_id it is named after the Prefect flow run, so that
        retrying a flow run writes to (and resumes in) the same directory."""
        run_id = self.run_id
        if run_id is None:
            suffix = (flow_run.id or uuid.uuid4().hex)[:8]
            run_id = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{suffix}"
            if flow_run.id and flow_run.scheduled_start_time:
                run_id = f"{flow_run.scheduled_start_time:%Y%m%d-%H%M%S}-{suffix}"
        return RunPaths(Path(self.runs_dir) / run_id)


class RunOutcome(BaseModel):
    """What the flow returns: where to look, and the verdict."""

    run_id: str
    status: str
    summary: Path
    report: Path


@flow(name="nightly-model-audit", log_prints=True, validate_parameters=True)
def nightly_audit(params: AuditParameters) -> RunOutcome:
    """Audit a cohort and the model trained on it; write summary.json and report.html."""
    started_at = datetime.now(UTC)
    run = params.run_paths()
    cohort = CohortPaths(Path(params.data_dir))
    labels_file = cohort.labels if cohort.labels.exists() else None

    validation = validate_task.with_options(**stage_options(30 * MINUTE, outputs=("run_dir",)))(
        cohort.root, run.root, params.validation)
    user_weeks = labels_task.with_options(**stage_options(30 * MINUTE, outputs=("out_file",)))(
        run.clean, cohort.users, run.user_weeks, params.labels)
    sequences = sequences_task.with_options(**stage_options(60 * MINUTE, outputs=("out_dir",)))(
        run.clean, cohort.users, run.user_weeks, labels_file, run.sequences, params.sequences)
    trained = train_task.with_options(**stage_options(
        6 * 60 * MINUTE, inputs_within={"run_dir": ("sequences",)}))(
        run.root, params.train, params.model)

    audit = stage_options(30 * MINUTE, outputs=("out_dir",))
    activations = activations_task.with_options(**audit).submit(
        trained.model_path, run.sequences, run.audits / "activations", params.activations,
        run.model_dir / DEAD_UNITS_FILE)
    gradients = gradients_task.with_options(**audit).submit(
        trained.model_path, run.sequences, run.audits / "gradients", params.gradients,
        list(trained.tasks))
    # needs only the sequences, but starts after training: both seed Keras' global RNGs, and
    # two seeded fits on one process at once would make either's initial weights a race
    synthetic = synthetic_task.with_options(**stage_options(
        2 * 60 * MINUTE, outputs=("out_dir",))).submit(
        run.sequences, run.audits / "synthetic", params.synthetic, params.model)
    analysis = analyze_task.with_options(**audit).submit(
        trained.predictions_path, run.analysis, params.analyze, run.clean, cohort.users)

    results: list[Reportable] = [validation, user_weeks, sequences, trained,
               activations.result(), gradients.result(), synthetic.result(), analysis.result()]
    summary = report_task.with_options(**stage_options(10 * MINUTE, outputs=("run_dir",)))(
        run.root, params.model_dump(mode="json"), started_at, results)
    print(f"{summary.status.upper()}: report {run.report} · summary {run.summary}")
    return RunOutcome(run_id=run.run_id, status=summary.status, summary=run.summary, report=run.report)
