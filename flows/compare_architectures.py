"""`stethoscope compare`: variants of an architecture side by side (docs/architecture.md §7.5).

Wiring only. The data stages (validate, labels, sequences) run once into `<out>/data`; every
variant (and seed) gets a run directory `<out>/<variant>[-seed<k>]` whose `sequences` links to
that store, and then the stages a nightly run has after the data: train, the three audits, the
prediction analysis and its own report. The variants run one after the other: their training
seeds Keras' global random state, so two fits in one process at once would make either's
initial weights a race. Last, the comparison: comparison.json and comparison.html in `<out>`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from pydantic import BaseModel

from stethoscope.flows.data_stages import run_data_stages
from stethoscope.flows.execution import on_dask, run_on
from stethoscope.flows.parameters import AuditParameters, CompareParameters
from stethoscope.flows.roots import check_cohort
from stethoscope.flows.run_lock import writes_run
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.outcome import Reportable
from stethoscope.tasks.analyze.task import analyze_task
from stethoscope.tasks.audits.activations.task import activations_task
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.audits.synthetic.task import synthetic_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.shared.policy import stage_options
from stethoscope.tasks.train.config import DEAD_UNITS_FILE
from stethoscope.tasks.train.task import train_task
from stethoscope.tasks.variants.config import DATA_RUN, VariantRun
from stethoscope.tasks.variants.task import compare_variants_task, share_store_task

MINUTE = 60


class CompareOutcome(BaseModel):
    """What the flow returns: where the comparison is, and each variant's status."""

    comparison_html: Path
    comparison_json: Path
    statuses: dict[str, str]


@flow(name="compare-architectures", log_prints=True, validate_parameters=True)
@writes_run(lambda args: Path(args["params"].out_dir))
def compare_architectures(params: CompareParameters) -> CompareOutcome:
    """Train and audit every variant on the same data; write comparison.json and .html. With
    `execution.executor: dask`, as a subflow on a Dask task runner, the variants in parallel."""
    return run_on(params.execution, _compare_on_dask, _compare, params)


@flow(name="compare-architectures-on-dask", log_prints=True)
def _compare_on_dask(params: CompareParameters) -> CompareOutcome:
    return run_on(params.execution, _compare_on_dask, _compare, params)


def _compare(params: CompareParameters) -> CompareOutcome:
    started_at = datetime.now(UTC)
    cohort = CohortPaths(check_cohort(params.data_dir))
    runs = params.runs()
    first = runs[0][2]
    data = RunPaths(Path(params.out_dir) / DATA_RUN)
    data_results: list[Reportable] = run_data_stages(
        cohort, data, first.validation, first.labels, first.sequences).records()
    if on_dask():  # each variant a task of its own, in parallel on the workers' processes
        futures = [variant_task.submit(variant.name, variant.overrides, seed, p, data.root,
                                       cohort.root, started_at, data_results)
                   for variant, seed, p in runs]
        done = [future.result() for future in futures]
    else:
        done = [_variant(variant.name, variant.overrides, seed, p, data.root, cohort.root,
                         started_at, data_results, parallel_audits=True)
                for variant, seed, p in runs]
    finished = [run for run, _ in done]
    statuses = {run.run_dir.name: status for run, status in done}

    comparison = compare_variants_task(Path(params.out_dir), finished, params.comparison,
                                       first.model.num_steps)
    print(f"comparison: {comparison.comparison_html}")
    return CompareOutcome(comparison_html=comparison.comparison_html,
                          comparison_json=comparison.comparison_json, statuses=statuses)


@task(name="variant", task_run_name="variant {name} (seed {seed})")
def variant_task(name: str, overrides: dict, seed: int, p: AuditParameters, data_root: Path,
                 cohort_root: Path, started_at: datetime,
                 data_results: list[Reportable]) -> tuple[VariantRun, str]:
    """One variant on a worker of the Dask cluster: its stages run as nested tasks, one after
    another, in the worker's process (a process of its own: no race for Keras' seeds)."""
    return _variant(name, overrides, seed, p, data_root, cohort_root, started_at, data_results,
                    parallel_audits=False)


def _variant(name: str, overrides: dict, seed: int, p: AuditParameters, data_root: Path,
             cohort_root: Path, started_at: datetime, data_results: list[Reportable],
             parallel_audits: bool) -> tuple[VariantRun, str]:
    """Train one variant on the shared store, audit it and write its report."""
    run, data, cohort = p.run_paths(), RunPaths(data_root), CohortPaths(cohort_root)
    share_store_task(run.root, data.root)
    trained = train_task.with_options(**stage_options(
        6 * 60 * MINUTE, inputs_within={"run_dir": ("sequences",)}))(run.root, p.train, p.model)
    audit = stage_options(30 * MINUTE, outputs=("out_dir",))
    calls: list[tuple[Any, tuple[Any, ...]]] = [
        (activations_task.with_options(**audit), (
            trained.model_path, run.sequences, run.audits / "activations", p.activations,
            run.model_dir / DEAD_UNITS_FILE)),
        (gradients_task.with_options(**audit), (
            trained.model_path, run.sequences, run.audits / "gradients", p.gradients,
            list(trained.tasks))),
        (synthetic_task.with_options(**stage_options(2 * 60 * MINUTE, outputs=("out_dir",))), (
            run.sequences, run.audits / "synthetic", p.synthetic, p.model,
            trained.pretrain_record)),
        (analyze_task.with_options(**audit), (
            trained.predictions_path, run.analysis, p.analyze, data.clean, cohort.users)),
    ]
    if parallel_audits:
        futures = [stage.submit(*args) for stage, args in calls]
        audits = [future.result() for future in futures]
    else:
        audits = [stage(*args) for stage, args in calls]
    summary = report_task.with_options(**stage_options(10 * MINUTE, outputs=("run_dir",)))(
        run.root, {**p.model_dump(mode="json"), "variant": name, "seed": seed}, started_at,
        [*data_results, trained, *audits])
    print(f"{name} (seed {seed}): {summary.status.upper()}, report {run.report}")
    return VariantRun(name=name, seed=seed, run_dir=run.root, config=overrides), summary.status
