"""`stethoscope audit-model`: the activation and gradient audits of an existing model.

The cohort is validated and turned into sequences of the model's own length T (read from the
model); then the two audits run in parallel and the report is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from stethoscope.flows.nightly_audit import RunOutcome
from stethoscope.flows.roots import FormPath
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.tasks.audits.activations.config import ActivationsConfig
from stethoscope.tasks.audits.activations.task import activations_task
from stethoscope.tasks.audits.gradients.config import GradientsConfig
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.inspect.task import inspect_model_task
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.labels.task import labels_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.sequences.config import SequencesConfig
from stethoscope.tasks.sequences.task import sequences_task
from stethoscope.tasks.shared.policy import stage_options
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.validate.task import validate_task

MINUTE = 60


class AuditModelParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_file: FormPath = Field(description="a .keras file saved by Keras 3 (loaded in safe mode)")
    data_dir: FormPath = Field(description="cohort directory to draw the audit sample from")
    runs_dir: FormPath = Field("runs", description="where run directories are created")
    run_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run directory name")
    validation: ValidateConfig = Field(default_factory=ValidateConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    sequences: SequencesConfig = Field(default_factory=SequencesConfig)
    activations: ActivationsConfig = Field(default_factory=ActivationsConfig)
    gradients: GradientsConfig = Field(default_factory=GradientsConfig)


@flow(name="audit-model", log_prints=True, validate_parameters=True)
def audit_model_flow(params: AuditModelParameters) -> RunOutcome:
    started_at = datetime.now(UTC)
    run = RunPaths(Path(params.runs_dir) / params.run_id)
    cohort = CohortPaths(Path(params.data_dir))
    model_file = Path(params.model_file)
    shape = inspect_model_task(model_file, params.gradients.output_layer)
    labels_config = params.labels.model_copy(update={"num_bins": shape.num_steps})
    sequences_config = params.sequences.model_copy(update={"num_steps": shape.num_steps})

    validation = validate_task.with_options(**stage_options(30 * MINUTE, outputs=("run_dir",)))(
        cohort.root, run.root, params.validation)
    user_weeks = labels_task.with_options(**stage_options(30 * MINUTE, outputs=("out_file",)))(
        run.clean, cohort.users, run.user_weeks, labels_config)
    sequences = sequences_task.with_options(**stage_options(60 * MINUTE, outputs=("out_dir",)))(
        run.clean, cohort.users, run.user_weeks,
        cohort.labels if cohort.labels.exists() else None, run.sequences, sequences_config)
    audit = stage_options(30 * MINUTE, outputs=("out_dir",))
    activations = activations_task.with_options(**audit).submit(
        model_file, run.sequences, run.audits / "activations", params.activations)
    gradients = gradients_task.with_options(**audit).submit(
        model_file, run.sequences, run.audits / "gradients", params.gradients)
    summary = report_task.with_options(**stage_options(10 * MINUTE, outputs=("run_dir",)))(
        run.root, params.model_dump(mode="json"), started_at,
        [validation, user_weeks, sequences, activations.result(), gradients.result()])
    print(f"{summary.status.upper()}: report {run.report} · summary {run.summary}")
    return RunOutcome(run_id=run.run_id, status=summary.status, summary=run.summary, report=run.report)
