"""The run in the Prefect UI: verdict, links, key plots, tables."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.report.config import Trend
from stethoscope.tasks.report.html import _data_uri

_KEY_PLOTS = ("training", "synthetic", "activations", "gradients", "predictions", "trend")
_MAX_IMAGE_BYTES = 2_000_000


def verdict_markdown(summary: Summary, trend: Trend | None = None) -> str:
    """The verdict artifact: every finding with severity, code, message and recommendation;
    findings new since the previous run are marked. Every data string is escaped for markdown."""
    previous = trend.previous if trend else None
    columns = ["severity", "stage", "code", "finding", "recommendation"] + (["new"] if previous else [])
    rows = [[f.severity, f.stage, f"`{f.code}`", _md(f.message), _md(f.recommendation)]
            + (["**new**" if trend is not None and trend.is_new(f) else ""] if previous else [])
            for f in summary.findings]
    since = (f"Compared with the previous run `{previous.run_id}` ({previous.status}).\n\n"
             if previous else "")
    return (f"## stethoscope run `{summary.run_id}`: **{summary.status.upper()}**\n\n{since}"
            + _md_table(columns, rows or [["—", "—", "—", "no findings", "—"]
                                           + ([""] if previous else [])]))


def image_uri(figure: Figure) -> str:
    """A figure as a data URI, the form a Prefect image artifact renders."""
    return _data_uri(figure.path)


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
