"""The nightly model audit: validate -> labels -> sequences -> train -> audits, analyze -> gate ->
report.

Wiring only. Each stage is a task of tasks/ with the one retry and cache policy; tasks pass
paths and small records. The audits of the trained model and the prediction analysis run in
parallel. Parameters are one pydantic model composed of the stages' configs, so the Prefect UI
renders a single form.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow

from stethoscope.flows.data_stages import run_data_stages
from stethoscope.flows.execution import run_on
from stethoscope.flows.parameters import AuditParameters, RunOutcome
from stethoscope.flows.roots import check_cohort
from stethoscope.flows.run_lock import writes_run
from stethoscope.schemas.layout import CohortPaths
from stethoscope.schemas.outcome import Reportable
from stethoscope.tasks.analyze.task import analyze_task
from stethoscope.tasks.audits.activations.task import activations_task
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.audits.synthetic.task import synthetic_task
from stethoscope.tasks.gate.task import gate_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.shared.policy import stage_options
from stethoscope.tasks.train.config import DEAD_UNITS_FILE
from stethoscope.tasks.train.task import train_task

MINUTE = 60


@flow(name="nightly-model-audit", log_prints=True, validate_parameters=True)
@writes_run(lambda args: args["params"].run_paths().root)
def nightly_audit(params: AuditParameters) -> RunOutcome:
    """Audit a cohort and the model trained on it; write summary.json and report.html. With
    `execution.executor: dask`, the stages run as a subflow on a Dask task runner."""
    # the run id is this flow run's, also when a subflow on Dask does the work
    params = params.model_copy(update={"run_id": params.run_paths().run_id})
    return run_on(params.execution, _nightly_audit_on_dask, _audit, params)


@flow(name="nightly-model-audit-on-dask", log_prints=True)
def _nightly_audit_on_dask(params: AuditParameters) -> RunOutcome:
    """The same stages on the Dask task runner of `params.execution` (see flows/execution.py)."""
    return run_on(params.execution, _nightly_audit_on_dask, _audit, params)


def _audit(params: AuditParameters) -> RunOutcome:
    started_at = datetime.now(UTC)
    cohort = CohortPaths(check_cohort(params.data_dir))
    run = params.run_paths()
    data = run_data_stages(cohort, run, params.validation, params.labels, params.sequences)
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
        run.sequences, run.audits / "synthetic", params.synthetic, params.model,
        trained.pretrain_record)
    analysis = analyze_task.with_options(**audit).submit(
        trained.predictions_path, run.analysis, params.analyze, run.clean, cohort.users)

    results: list[Reportable] = [*data.records(), trained,
               activations.result(), gradients.result(), synthetic.result(), analysis.result()]
    gate = gate_task.with_options(**stage_options(10 * MINUTE))(
        run.root, results, params.gate, started_at,
        Path(params.baseline) if params.baseline else None)
    summary = report_task.with_options(**stage_options(10 * MINUTE, outputs=("run_dir",)))(
        run.root, params.model_dump(mode="json"), started_at, [*results, gate])
    print(f"{summary.status.upper()}: report {run.report} · summary {run.summary}")
    return RunOutcome(run_id=run.run_id, status=summary.status, summary=run.summary, report=run.report)
