"""`stethoscope analyze`: the prediction analysis alone, on predictions from any model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from prefect import flow

from stethoscope.flows.nightly_audit import RunOutcome
from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.analyze.task import analyze_task
from stethoscope.tasks.report.task import report_task
from stethoscope.tasks.shared.policy import stage_options


@flow(name="analyze-predictions", log_prints=True)
def analyze_flow(predictions_file: Path, run_dir: Path,
                 config: AnalyzeConfig | None = None) -> RunOutcome:
    """Analyse `predictions_file` into `run_dir`: summary.json and report.html."""
    started_at = datetime.now(UTC)
    run = RunPaths(Path(run_dir))
    config = config or AnalyzeConfig()
    analysis = analyze_task.with_options(**stage_options(1800, outputs=("out_dir",)))(
        Path(predictions_file), run.analysis, config)
    summary = report_task.with_options(**stage_options(600, outputs=("run_dir",)))(
        run.root, {"predictions_file": str(predictions_file), "analyze": config.model_dump(mode="json")},
        started_at, [analysis])
    return RunOutcome(run_id=run.run_id, status=summary.status, summary=run.summary, report=run.report)
