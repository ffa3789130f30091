"""The report stage's Prefect task."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task

from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import (
    Summary,
)
from stethoscope.tasks.report.artifacts import publish
from stethoscope.tasks.report.events import model_of
from stethoscope.tasks.report.history import plot_trend, record_run
from stethoscope.tasks.report.html import render_report
from stethoscope.tasks.report.outcomes import outcome_of
from stethoscope.tasks.report.summary import build_summary, write_summary


@task(name="report")
def report_task(run_dir: Path, config: dict[str, Any], started_at: datetime,
                results: list[Any]) -> Summary:
    """Prefect shell: summary.json, the history row, report.html and the run's artifacts."""
    from prefect.runtime import flow_run

    run = RunPaths(run_dir)
    outcomes = [outcome_of(r) for r in results]
    summary = build_summary(run, config, started_at, outcomes)
    write_summary(summary, run.summary)
    trend = record_run(summary, run.root.parent, flow=flow_run.flow_name or "")
    trend_plot = plot_trend(trend, run.root / "trend.png")
    if trend_plot:
        outcomes.append(StageOutcome(stage="trend", figures=[
            Figure("trend", "Trend over recent runs", trend_plot, "this run is the last point")]))
    render_report(summary, outcomes, run.report, trend)
    publish(summary, run, outcomes, trend, model_of(config, results))
    return summary
