"""`stethoscope compare`: variants of an architecture side by side (docs/architecture.md §7.5).

Wiring only. The data stages (validate, labels, sequences) run once into `<out>/data`; every
variant (and seed) gets a run directory `<out>/<variant>[-seed<k>]` whose `sequences` links to
that store, and then the stages a nightly run has after the data: train, the three audits, the
prediction analysis and its own report. The variants run one after the other: their training
seeds Keras' global random state, so two fits in one process at once would make either's
initial weights a race. Last, the comparison: comparison.json and comparison.html in `<out>`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel

from stethoscope.flows.parameters import CompareParameters
from stethoscope.flows.roots import check_cohort
from stethoscope.flows.run_lock import writes_run
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.outcome import Reportable
from stethoscope.tasks.analyze.task import analyze_task
from stethoscope.tasks.audits.activations.task import activations_task
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.audits.synthetic.task import synthetic_task
from stethoscope.tasks.labels.task import labels_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.sequences.task import sequences_task
from stethoscope.tasks.shared.policy import stage_options
from stethoscope.tasks.train.config import DEAD_UNITS_FILE
from stethoscope.tasks.train.task import train_task
from stethoscope.tasks.validate.task import validate_task
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
    """Train and audit every variant on the same data; write comparison.json and .html."""
    from datetime import UTC, datetime

    started_at = datetime.now(UTC)
    cohort = CohortPaths(check_cohort(params.data_dir))
    runs = params.runs()
    first = runs[0][2]
    data = RunPaths(Path(params.out_dir) / DATA_RUN)
    labels_file = cohort.labels if cohort.labels.exists() else None

    validation = validate_task.with_options(**stage_options(30 * MINUTE, outputs=("run_dir",)))(
        cohort.root, data.root, first.validation)
    user_weeks = labels_task.with_options(**stage_options(30 * MINUTE, outputs=("out_file",)))(
        data.clean, cohort.users, data.user_weeks, first.labels)
    sequences = sequences_task.with_options(**stage_options(60 * MINUTE, outputs=("out_dir",)))(
        data.clean, cohort.users, data.user_weeks, labels_file, data.sequences, first.sequences)

    finished: list[VariantRun] = []
    statuses = {}
    audit = stage_options(30 * MINUTE, outputs=("out_dir",))
    for variant, seed, p in runs:
        run = p.run_paths()
        share_store_task(run.root, data.root)
        trained = train_task.with_options(**stage_options(
            6 * 60 * MINUTE, inputs_within={"run_dir": ("sequences",)}))(run.root, p.train, p.model)
        activations = activations_task.with_options(**audit).submit(
            trained.model_path, run.sequences, run.audits / "activations", p.activations,
            run.model_dir / DEAD_UNITS_FILE)
        gradients = gradients_task.with_options(**audit).submit(
            trained.model_path, run.sequences, run.audits / "gradients", p.gradients,
            list(trained.tasks))
        synthetic = synthetic_task.with_options(**stage_options(
            2 * 60 * MINUTE, outputs=("out_dir",))).submit(
            run.sequences, run.audits / "synthetic", p.synthetic, p.model)
        analysis = analyze_task.with_options(**audit).submit(
            trained.predictions_path, run.analysis, p.analyze, data.clean, cohort.users)
        results: list[Reportable] = [validation, user_weeks, sequences, trained,
                                     activations.result(), gradients.result(),
                                     synthetic.result(), analysis.result()]
        summary = report_task.with_options(**stage_options(10 * MINUTE, outputs=("run_dir",)))(
            run.root, {**p.model_dump(mode="json"), "variant": variant.name, "seed": seed},
            started_at, results)
        statuses[run.run_id] = summary.status
        finished.append(VariantRun(name=variant.name, seed=seed, run_dir=run.root,
                                   config=variant.overrides))
        print(f"{variant.name} (seed {seed}): {summary.status.upper()}, report {run.report}")

    comparison = compare_variants_task(Path(params.out_dir), finished, params.comparison,
                                       first.model.num_steps)
    print(f"comparison: {comparison.comparison_html}")
    return CompareOutcome(comparison_html=comparison.comparison_html,
                          comparison_json=comparison.comparison_json, statuses=statuses)
