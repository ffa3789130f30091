"""The run in the Prefect UI: verdict, links, key plots, tables."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import (
    Summary,
)
from stethoscope.tasks.report.events import emit_failure_event
from stethoscope.tasks.report.history import Trend
from stethoscope.tasks.report.html import _data_uri
from stethoscope.tasks.report.links import report_link

_KEY_PLOTS = ("training", "synthetic", "activations", "gradients", "predictions", "trend")
_MAX_IMAGE_BYTES = 2_000_000


def publish(summary: Summary, run: RunPaths, outcomes: list[StageOutcome] | None = None,
            trend: Trend | None = None, model: str | None = None) -> None:
    """Prefect artifacts of the run — the verdict table (new findings marked), links to
    report.html and summary.json, the trend table, the key plots as images — and, when the run
    failed, the event `stethoscope.audit.failed` that an automation turns into an alert. The
    per-layer and per-stratum tables are published by the activation and analysis stages."""
    from prefect.artifacts import (
        create_image_artifact,
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )

    previous = trend.previous if trend else None
    columns = ["severity", "stage", "code", "finding", "recommendation"] + (["new"] if previous else [])
    rows = [[f.severity, f.stage, f"`{f.code}`", _md(f.message), _md(f.recommendation)]
            + (["**new**" if trend.is_new(f) else ""] if previous else []) for f in summary.findings]
    since = (f"Compared with the previous run `{previous.run_id}` ({previous.status}).\n\n"
             if previous else "")
    create_markdown_artifact(
        key="verdict", description=f"stethoscope run {summary.run_id}: {summary.status}",
        markdown=f"## stethoscope run `{summary.run_id}`: **{summary.status.upper()}**\n\n{since}"
                 + _md_table(columns, rows or [["—", "—", "—", "no findings", "—"]
                                                + ([""] if previous else [])]))
    create_link_artifact(key="report", link=report_link(run.report),
                         link_text=f"report.html of {summary.run_id}",
                         description=f"The human report: {run.report.resolve()}")
    create_link_artifact(key="summary", link=report_link(run.summary),
                         link_text=f"summary.json of {summary.run_id}",
                         description=f"The machine contract: {run.summary.resolve()}")
    if previous:
        create_table_artifact(key="history", table=trend_table(trend),
                              description="This run (last row) against earlier runs of the flow")
    for figure in key_figures(outcomes or []):
        create_image_artifact(image_url=_data_uri(figure.path), key=f"plot-{figure.section}",
                              description=f"{figure.title}. {figure.caption}".strip())
    if summary.status == "fail":
        emit_failure_event(summary, run, model)


def key_figures(outcomes: list[StageOutcome]) -> list[Figure]:
    """One plot per report section (a forest plot for predictions when there is one)."""
    chosen: dict[str, Figure] = {}
    for outcome in outcomes:
        for figure in outcome.figures:
            if (figure.section not in _KEY_PLOTS or not Path(figure.path).exists()
                    or Path(figure.path).stat().st_size > _MAX_IMAGE_BYTES):
                continue
            current = chosen.get(figure.section)
            if current is None or (figure.title.startswith("forest")
                                   and not current.title.startswith("forest")):
                chosen[figure.section] = figure
    return [chosen[section] for section in _KEY_PLOTS if section in chosen]


def trend_table(trend: Trend) -> list[dict[str, Any]]:
    return [{"finished_at": f"{r.finished_at:%Y-%m-%d %H:%M}", "run_id": r.run_id,
             "status": r.status, "users": r.users, "user_weeks": r.user_weeks,
             "largest_dead_share": round(r.worst_dead[1], 4) if r.worst_dead else None,
             "horizon_hours": r.horizon_hours,
             **{f"auroc_{t}": r.auroc.get(t) for t in trend.tasks},
             "flagged_strata": ", ".join(r.flagged_strata)} for r in trend.rows]


def _md_table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _md(text: str) -> str:
    """Data text inside a markdown table cell: no HTML, no cell breaks."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")
