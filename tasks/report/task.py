"""The report stage's Prefect task, and the only module of the stage that talks to Prefect: it
writes summary.json, the history row and report.html, then publishes the run's artifacts and,
when the run failed, emits the event that an automation turns into an alert."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from prefect import task

from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import Figure, Reportable, StageOutcome
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.report.artifacts import (
    plot_artifacts,
    trend_table,
    verdict_markdown,
)
from stethoscope.tasks.report.config import Trend
from stethoscope.tasks.report.events import failure_event, model_of
from stethoscope.tasks.report.history import plot_trend, record_run
from stethoscope.tasks.report.html import render_report
from stethoscope.tasks.report.links import report_link
from stethoscope.tasks.report.summary import build_summary, write_summary
from stethoscope.tasks.shared.artifacts import md_text


@task(name="report")
def report_task(run_dir: Path, config: dict[str, Any], started_at: datetime,
                results: list[Reportable]) -> Summary:
    """Prefect shell: summary.json, the history row, report.html and the run's artifacts."""
    from prefect.runtime import flow_run

    run = RunPaths(run_dir)
    outcomes = [r.outcome() for r in results]
    summary = build_summary(run, config, started_at, outcomes, flow=flow_run.flow_name)
    write_summary(summary, run.summary)
    trend = record_run(summary, run.root.parent, flow=flow_run.flow_name or "")
    trend_plot = plot_trend(trend, run.root / "trend.png")
    if trend_plot:
        outcomes.append(StageOutcome(stage="trend", figures=[
            Figure("trend", "Trend over recent runs", trend_plot, "this run is the last point")]))
    render_report(summary, outcomes, run.report, trend)
    publish(summary, run, outcomes, trend, model_of(config, results))
    return summary


def publish(summary: Summary, run: RunPaths, outcomes: list[StageOutcome] | None = None,
            trend: Trend | None = None, model: str | None = None) -> None:
    """Prefect artifacts of the run — the verdict (new findings marked), links to report.html
    and summary.json, the trend table, the key plots as markdown that embeds them (one
    artifact per task for the predictions of several) — and, when the run failed, the event
    `stethoscope.audit.failed`. The per-layer and per-stratum tables are published by the
    audit and analysis stages."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    report_url = report_link(run.report)
    run_id = md_text(summary.run_id)  # descriptions render as markdown too
    create_markdown_artifact(key="verdict", markdown=verdict_markdown(summary, trend, report_url),
                             description=f"stethoscope run {run_id}: {summary.status}")
    create_link_artifact(key="report", link=report_url, link_text=f"report.html of {run_id}",
                         description=f"The human report: {md_text(str(run.report.resolve()))}")
    create_link_artifact(key="summary", link=report_link(run.summary),
                         link_text=f"summary.json of {run_id}",
                         description=f"The machine contract: {md_text(str(run.summary.resolve()))}")
    if trend is not None and trend.previous:
        create_table_artifact(key="history", table=trend_table(trend),
                              description="This run (last row) against earlier runs of the flow")
    tasks = [t.task for t in summary.predictions.tasks]
    for plot in plot_artifacts(outcomes or [], tasks, report_url):
        create_markdown_artifact(key=plot.key, markdown=plot.markdown,
                                 description=md_text(plot.description))
    if summary.status == "fail":
        emit_event(**failure_event(summary, run, model, str(flow_run.id or "")))
