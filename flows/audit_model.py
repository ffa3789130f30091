"""`stethoscope audit-model`: the activation and gradient audits of an existing model.

Any Keras 3 graph model (functional, Sequential, nested) with one time-series input: the
inspect stage reads T and C, checks C against the cohort's channels and the gradient audit's
`gradients.output_layer` / `gradients.task_index` (CLI --output-layer / --output-index; unset,
the audit finds the per-step output itself) before anything is written. The cohort is then
validated and turned into sequences of the model's own length T; the two audits run in parallel
and the report, which says what fed each model input, is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow

from stethoscope.flows.data_stages import run_data_stages
from stethoscope.flows.execution import run_on
from stethoscope.flows.parameters import AuditModelParameters, RunOutcome
from stethoscope.flows.roots import check_cohort
from stethoscope.flows.run_lock import writes_run
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.outcome import Reportable
from stethoscope.tasks.audits.activations.task import activations_task
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.gate.task import gate_task
from stethoscope.tasks.inspect.task import inspect_model_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.shared.policy import stage_options

MINUTE = 60


@flow(name="audit-model", log_prints=True, validate_parameters=True)
@writes_run(lambda args: Path(args["params"].runs_dir) / args["params"].run_id)
def audit_model_flow(params: AuditModelParameters) -> RunOutcome:
    """The audits of `params.model_file`; with `execution.executor: dask`, as a subflow on a
    Dask task runner."""
    return run_on(params.execution, _audit_model_on_dask, _audit_model, params)


@flow(name="audit-model-on-dask", log_prints=True)
def _audit_model_on_dask(params: AuditModelParameters) -> RunOutcome:
    return run_on(params.execution, _audit_model_on_dask, _audit_model, params)


def _audit_model(params: AuditModelParameters) -> RunOutcome:
    started_at = datetime.now(UTC)
    run = RunPaths(Path(params.runs_dir) / params.run_id)
    cohort = CohortPaths(check_cohort(params.data_dir))
    model_file = Path(params.model_file)
    shape = inspect_model_task(model_file, params.sequences.num_steps, params.sequences.time_of_day,
                               params.gradients.output_layer, params.gradients.task_index)
    labels_config = params.labels.model_copy(update={"num_bins": shape.num_steps})
    sequences_config = params.sequences.model_copy(update={"num_steps": shape.num_steps})

    data = run_data_stages(cohort, run, params.validation, labels_config, sequences_config)
    audit = stage_options(30 * MINUTE, outputs=("out_dir",))
    activations = activations_task.with_options(**audit).submit(
        model_file, run.sequences, run.audits / "activations", params.activations)
    gradients = gradients_task.with_options(**audit).submit(
        model_file, run.sequences, run.audits / "gradients", params.gradients)
    results: list[Reportable] = [*data.records(), shape, activations.result(), gradients.result()]
    gate = gate_task.with_options(**stage_options(10 * MINUTE))(
        run.root, results, params.gate, started_at,
        Path(params.baseline) if params.baseline else None)
    summary = report_task.with_options(**stage_options(10 * MINUTE, outputs=("run_dir",)))(
        run.root, params.model_dump(mode="json"), started_at, [*results, gate])
    print(f"{summary.status.upper()}: report {run.report} · summary {run.summary}")
    return RunOutcome(run_id=run.run_id, status=summary.status, summary=run.summary, report=run.report)
