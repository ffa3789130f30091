"""`stethoscope analyze`: the prediction analysis alone, on a predictions table from any model.

Wiring only: the analyze stage, then the report. What the table must hold and how the strata
default is the stage's business (tasks/analyze/inputs.py, docs/architecture.md §4.7).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow

from stethoscope.flows.parameters import RunOutcome
from stethoscope.flows.run_lock import writes_run
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.analyze.task import analyze_task
from stethoscope.tasks.gate.config import GateConfig
from stethoscope.tasks.gate.task import gate_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.shared.policy import stage_options


@flow(name="analyze-predictions", log_prints=True)
@writes_run(lambda args: Path(args["run_dir"]))
def analyze_flow(predictions_file: Path, run_dir: Path, config: AnalyzeConfig | None = None,
                 strata: list[str] | None = None, data_dir: Path | None = None,
                 gate: GateConfig | None = None, baseline: Path | None = None) -> RunOutcome:
    """Analyse `predictions_file` into `run_dir`: summary.json and report.html.

    `config`: the `analyze` section (default AnalyzeConfig()); `strata`: column names that
    replace its strata_columns (None keeps them; [] analyses no strata); `data_dir`: a cohort
    directory whose sensor_logs/ and users.parquet the weeks of the top rows are drawn from
    (None: no week plots); `gate`: the `gate` section (default GateConfig()); `baseline`: the
    run directory to compare with (None: the blessed run, else the last good analyze run in
    run_dir's parent)."""
    started_at = datetime.now(UTC)
    run = RunPaths(Path(run_dir))
    config = config or AnalyzeConfig()
    if strata is not None:
        config = config.with_strata(strata)
    cohort = CohortPaths(Path(data_dir)) if data_dir is not None else None
    # a table handed in must hold predictions (an empty one is bad input, not a pass)
    analysis = analyze_task.with_options(**stage_options(1800, outputs=("out_dir",)))(
        Path(predictions_file), run.analysis, config,
        cohort.sensor_logs if cohort else None, cohort.users if cohort else None,
        require_rows=True)
    gate = gate or GateConfig()
    compared = gate_task.with_options(**stage_options(600))(
        run.root, [analysis], gate, started_at, Path(baseline) if baseline else None)
    parameters = {"predictions_file": str(predictions_file),
                  "data_dir": str(data_dir) if data_dir is not None else None,
                  "analyze": config.model_dump(mode="json"), "gate": gate.model_dump(mode="json"),
                  "baseline": str(baseline) if baseline is not None else None}
    summary = report_task.with_options(**stage_options(600, outputs=("run_dir",)))(
        run.root, parameters, started_at, [analysis, compared])
    return RunOutcome(run_id=run.run_id, status=summary.status, summary=run.summary, report=run.report)
