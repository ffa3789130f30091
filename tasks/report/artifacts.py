"""The run in the Prefect UI: the verdict, the key plots, the trend table.

The verdict leads with the status, the counts and a link to the report, then the findings as
a list (the UI does not wrap table cells: a table of findings runs off the pane). Each plot is a markdown artifact that
embeds its PNG (an image artifact prints its whole data URI as "Image URL" across the page);
the prediction figures of several tasks make one artifact per task. Every data string is
literal text (`md_text`): no HTML, no markdown link, image, emphasis or cell break."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.report.config import Trend
from stethoscope.tasks.report.figures import data_uri, task_of, week_plot
from stethoscope.tasks.shared.artifacts import md_text

_KEY_PLOTS = ("comparison", "training", "synthetic", "activations", "gradients", "predictions", "trend")
_MAX_IMAGE_BYTES = 2_000_000  # a larger PNG is not embedded in an artifact
_MAX_ARTIFACT_BYTES = 2_000_000  # PNG bytes of one plot artifact


@dataclass(frozen=True)
class PlotArtifact:
    """A markdown artifact embedding the key plot(s) of a report section (or of one task)."""

    key: str
    markdown: str
    description: str


def verdict_markdown(summary: Summary, trend: Trend | None = None, report_url: str = "") -> str:
    """The verdict artifact: the status and counts, a link to the report, then every error and
    warning as a list item (severity, code, stage, **new** since the previous run; message and
    recommendation below) and every informational finding on one line. A list, not a table:
    the Prefect UI does not wrap table cells, so a table of findings runs off the pane. Every
    data string is literal text (`md_text`)."""
    previous = trend.previous if trend else None
    major = [f for f in summary.findings if f.severity != "info"]
    minor = [f for f in summary.findings if f.severity == "info"]
    errors = sum(f.severity == "error" for f in major)
    new = sum(trend.is_new(f) for f in major) if trend is not None and previous else 0
    lines = [f"## stethoscope run {_code(summary.run_id)}: **{summary.status.upper()}**", "",
             f"{errors} error(s), {len(major) - errors} warning(s), {len(minor)} informational."
             + (f" Compared with the previous run {_code(previous.run_id)} ({previous.status}): "
                f"{new} new." if previous else "")]
    if report_url:
        lines += ["", f"[Open the full report]({report_url})"]
    lines += ["", "Errors and warnings:" if major else "No errors or warnings.", ""]
    for f in major:
        mark = " **new**" if previous and trend is not None and trend.is_new(f) else ""
        lines += [f"- {f.severity.upper()} {_code(f.code)} in {md_text(f.stage)}{mark}",
                  f"  - {md_text(f.message)}", f"  - Recommendation: {md_text(f.recommendation)}"]
    if minor:
        lines += ["", "Informational:", ""]
        lines += [f"- {_code(f.code)} in {md_text(f.stage)}: {md_text(f.message)}" for f in minor]
    return "\n".join(lines) + "\n"


def plot_artifacts(outcomes: list[StageOutcome], tasks: list[str] | None = None,
                   report_url: str = "") -> list[PlotArtifact]:
    """One artifact per report section with its key plot (`plot-<section>`); the prediction
    figures of several tasks make one artifact per task (`plot-predictions-<task>`), each
    with every figure of that task but its week plots, the forest plot first."""
    chosen: dict[str, list[Figure]] = {}
    for outcome in outcomes:
        for figure in outcome.figures:
            if (figure.section in _KEY_PLOTS and week_plot(figure) is None
                    and Path(figure.path).is_file()
                    and Path(figure.path).stat().st_size <= _MAX_IMAGE_BYTES):
                chosen.setdefault(figure.section, []).append(figure)
    artifacts = []
    for section in _KEY_PLOTS:
        figures = chosen.get(section, [])
        if not figures:
            continue
        if section != "predictions":
            artifacts.append(_artifact(f"plot-{section}", figures[:1], report_url))
            continue
        by_task: dict[str | None, list[Figure]] = {}
        for figure in sorted(figures, key=lambda f: not Path(f.path).stem.startswith("forest")):
            by_task.setdefault(task_of(figure, tasks or []), []).append(figure)
        for task, of_task in by_task.items():
            key = ("plot-predictions" if len(by_task) == 1 or task is None
                   else f"plot-predictions-{_key_part(task)}")
            artifacts.append(_artifact(key, of_task, report_url,
                                       f"Predictions of {task}" if task else "Predictions"))
    return artifacts


def trend_table(trend: Trend) -> list[dict[str, Any]]:
    return [{"finished_at": f"{r.finished_at:%Y-%m-%d %H:%M}", "run_id": r.run_id,
             "status": r.status, "users": r.users, "user_weeks": r.user_weeks,
             "largest_dead_share": round(r.worst_dead[1], 4) if r.worst_dead else None,
             "horizon_hours": r.horizon_hours,
             **{f"auroc_{t}": r.auroc.get(t) for t in trend.tasks},
             "flagged_strata": ", ".join(r.flagged_strata)} for r in trend.rows]


# --- private helpers --------------------------------------------------------------------


def _artifact(key: str, figures: list[Figure], report_url: str, heading: str = "") -> PlotArtifact:
    """Markdown embedding `figures` (while their bytes fit), each with its title and caption."""
    parts, used = [f"### {md_text(heading)}", ""] if heading else [], 0
    for figure in figures:
        size = Path(figure.path).stat().st_size
        if used and used + size > _MAX_ARTIFACT_BYTES:
            break
        used += size
        if len(figures) > 1:  # one figure: its title and caption are the description
            parts += [f"**{md_text(figure.title)}** {md_text(figure.caption)}".rstrip(), ""]
        parts += [f"![{md_text(figure.title)}]({data_uri(figure.path)})", ""]
    if report_url:
        parts.append(f"[Open the full report]({report_url})")
    description = " · ".join(f.title for f in figures)
    if len(figures) == 1 and figures[0].caption:
        description += f". {figures[0].caption}"
    return PlotArtifact(key, "\n".join(parts).rstrip() + "\n", description)


def _key_part(text: str) -> str:
    """A task name as part of an artifact key: lowercase letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "task"


def _code(text: str) -> str:
    """Data text as a markdown code span (no backtick can close it early)."""
    return f"`{text.replace('`', chr(39))}`"
