"""report.html, for people: the verdict first, a table of contents, then one collapsible section
per stage with its tables, figures, notes and files; and the gallery beside it.

Analysis is separate from rendering: every stage hands over records (findings, summary
sections) and figures (PNG paths); this module only arranges them and renders the Jinja
templates templates/report.html.j2 and templates/gallery.html.j2. Both files are
self-contained — figures embedded as data URIs, styles inline, no script — and every string
that comes from data is escaped by Jinja2's autoescaping. report.html embeds a handful of
week plots and stays under 2 MB (report/figures.py); `report_gallery.html` holds every week
plot. A section opens by itself when it has an error or a warning. The trend comes from the
history next to the runs (report/history.py).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from stethoscope.schemas.atomic import atomic_path
from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import Finding, Summary
from stethoscope.tasks.report.config import Trend
from stethoscope.tasks.report.figures import (
    FigurePlan,
    data_uri,
    inline_budget,
    plan_figures,
    task_of,
    week_plot,
)
from stethoscope.tasks.report.links import RunFile, run_files

# Report sections in their order, with their headings. "comparison" comes first: whether the
# model got worse or the data moved since the reference run; then the trend over recent runs.
_SECTIONS = {
    "comparison": "Since the reference run",
    "trend": "Trend",
    "data": "Data",
    "training": "Training",
    "synthetic": "Can the architecture learn the prerequisites? (synthetic targets)",
    "activations": "Activations",
    "gradients": "Gradients: how far back (and ahead) can the model look?",
    "predictions": "Predictions",
}
_WIDE_PIXELS = 760  # a figure at least this wide takes a row of its own


@dataclass(frozen=True)
class Shown:
    """A figure as the templates show it."""

    title: str
    caption: str
    uri: str
    wide: bool


@dataclass(frozen=True)
class FigureGroup:
    """Figures under one heading (a task, or none), and the group's week plots."""

    heading: str | None
    figures: list[Shown]
    weeks: list[Shown] = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    """One collapsible section of report.html."""

    key: str
    title: str
    fact: str  # one line: the section's key numbers, shown even when it is closed
    findings: list[Finding]
    groups: list[FigureGroup]
    notes: list[str]
    files: list[RunFile]

    @property
    def counts(self) -> dict[str, int]:
        return {severity: sum(f.severity == severity for f in self.findings)
                for severity in ("error", "warning", "info")}

    @property
    def open(self) -> bool:
        return any(f.severity != "info" for f in self.findings)


def render_report(summary: Summary, outcomes: list[StageOutcome], path: Path,
                  trend: Trend | None = None) -> Path:
    """Write report.html at `path` (the root of its run directory) and, when a figure is left
    out of it (week plots beyond a handful, figures over the byte budget), the gallery beside
    it: both self-contained, every data string escaped. With a trend against earlier runs when
    `trend` is given (its plot is a figure of section "trend")."""
    run = RunPaths(Path(path).parent)
    tasks = [t.task for t in summary.predictions.tasks]
    figures = [f for o in outcomes for f in o.figures if Path(f.path).is_file()]  # "" is "."
    env = _environment()
    files = run_files(run) if run.root.is_dir() else []

    def report(plan: FigurePlan) -> str:
        return env.get_template("report.html.j2").render(
            s=summary, trend=trend, sections=_sections(summary, outcomes, plan, trend, files),
            plan=plan, gallery=run.report_gallery.name if plan.gallery else None,
            run_dir=str(run.root.resolve()),
            config_json=json.dumps(summary.config, indent=2, default=str))

    # the text first, without figures: what it leaves of the report's bytes goes to figures
    text_bytes = len(report(plan_figures(figures, tasks, budget=0)).encode())
    plan = plan_figures(figures, tasks, inline_budget(text_bytes))
    if plan.gallery:
        _write(run.report_gallery, env.get_template("gallery.html.j2").render(
            s=summary, report=Path(path).name, groups=_gallery_groups(plan, tasks),
            num_weeks=len(plan.weeks)))
    elif run.report_gallery.exists():
        run.report_gallery.unlink()  # re-rendered without one: no stale gallery beside it
    _write(Path(path), report(plan))
    return Path(path)


# --- arranging ----------------------------------------------------------------------------


def _sections(summary: Summary, outcomes: Sequence[StageOutcome], plan: FigurePlan,
              trend: Trend | None, files: list[RunFile]) -> list[Section]:
    section_of = {f.stage: o.stage for o in outcomes for f in o.findings}
    alias = {"validate": "data", "analyze": "predictions", "train": "training",
             "gate": "comparison"}
    inline = set(plan.inline)
    tasks = [t.task for t in summary.predictions.tasks]
    sections = []
    for key, title in _SECTIONS.items():
        findings = [f for f in summary.findings
                    if section_of.get(f.stage, alias.get(f.stage, f.stage)) == key]
        figures = [f for o in outcomes for f in o.figures if f.section == key and f in inline]
        notes = [n for o in outcomes if o.stage == key for n in o.notes]
        groups = (_task_groups(figures, tasks) if key == "predictions"
                  else [FigureGroup(None, [_shown(f) for f in figures])])
        sections.append(Section(key, title, _fact(key, summary, trend, notes), findings,
                                groups, notes, [f for f in files if f.section == key]))
    return sections


def _task_groups(figures: list[Figure], tasks: list[str]) -> list[FigureGroup]:
    """Prediction figures by task (in the summary's order), then those of no single task;
    in each group the other figures first, then its week plots."""
    by_task: dict[str | None, list[Figure]] = {}
    for figure in figures:
        by_task.setdefault(task_of(figure, tasks), []).append(figure)
    order = [t for t in tasks if t in by_task] + [t for t in by_task if t not in tasks]
    return [FigureGroup(task,
                        [_shown(f) for f in by_task[task] if week_plot(f) is None],
                        [_shown(f) for f in by_task[task] if week_plot(f) is not None])
            for task in order]


def _gallery_groups(plan: FigurePlan, tasks: list[str]) -> list[FigureGroup]:
    """All week plots by task and kind, then the figures the report's budget left out."""
    groups: dict[str, list[Figure]] = {}
    for week in plan.weeks:
        task = task_of(week.figure, tasks) or week.task
        groups.setdefault(f"{task}: {_KIND_NAMES.get(week.kind, week.kind)}", []).append(
            week.figure)
    if plan.left_out:
        groups["Figures the report leaves out to stay small"] = plan.left_out
    return [FigureGroup(heading, [_shown(f) for f in figures])
            for heading, figures in groups.items()]


_KIND_NAMES = {"FN": "false negatives", "FP": "false positives", "TP": "true positives",
               "TN": "true negatives"}


def _fact(key: str, s: Summary, trend: Trend | None, notes: list[str]) -> str:
    """The one line a section shows in the contents and when it is closed."""
    if key == "comparison":
        c = s.comparison
        if c.reference is None:
            return c.note or "not compared"
        worse = sum(ch.verdict in ("regression", "regression_point") for ch in c.changes)
        moved = sum(d.drifted for d in c.drift)
        return (f"against {c.reference.run_id} ({c.reference.chosen.replace('_', ' ')}): "
                f"{worse} regression{'s' if worse != 1 else ''}, {moved} drifted "
                f"distribution{'s' if moved != 1 else ''} of {len(c.drift)} compared")
    if key == "trend":
        if trend is None or trend.previous is None:
            return "first run of this flow here: nothing to compare with yet"
        new = sorted(trend.new_findings) + sorted(trend.new_strata)
        return (f"against {trend.previous.run_id} ({trend.previous.status}): "
                + (f"new: {', '.join(new)}" if new else "nothing new"))
    if key == "data":
        d = s.data
        return (f"{d.users:,} users, {d.user_weeks:,} user-weeks, {d.rows_clean:,} clean rows, "
                f"{d.rows_quarantined:,} quarantined")
    if key == "training":
        return notes[0] if notes else "not run"
    if key == "synthetic":
        learned = sum(r.learned for r in s.synthetic)
        return f"{learned} of {len(s.synthetic)} targets learned" if s.synthetic else "not run"
    if key == "activations":
        layers = s.activations.layers
        if not layers:
            return "not run"
        worst = max(layers, key=lambda layer: layer.dead_fraction)
        constant = sum(len(layer.constant_units) for layer in layers)
        return ((f"largest dead share {worst.dead_fraction:.0%} ({worst.name})"
                 if worst.dead_fraction else "no dead units")
                + f", {constant} constant units in {len(layers)} layers")
    if key == "gradients":
        g = s.gradients
        if g.horizon_hours is None:
            return "not evaluated"
        return (f"horizon {g.horizon_steps_back} steps back, {g.horizon_steps_forward} forward "
                f"= {g.horizon_hours:.1f} h (output {g.output_layer}, task {g.task})")
    if key == "predictions":
        p = s.predictions
        if not p.tasks:
            return "no labelled predictions"
        aurocs = ", ".join(f"{t.task} {_fmt(t.auroc)}" for t in p.tasks)
        flagged = sum(r.flagged for r in p.strata)
        return f"AUROC {aurocs}; {flagged} flagged strata"
    return ""


def _shown(figure: Figure) -> Shown:
    return Shown(figure.title, figure.caption, data_uri(figure.path),
                 _png_width(figure.path) >= _WIDE_PIXELS)


def _png_width(path: Path) -> int:
    """The width in pixels a PNG's header states; 0 when it is no PNG."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    return struct.unpack(">I", header[16:20])[0] if header[:8] == b"\x89PNG\r\n\x1a\n" else 0


# --- rendering ----------------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("stethoscope.tasks.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals["fmt"] = _fmt
    env.globals["ci"] = lambda v: "" if not v else f"{v[0]:.3f} – {v[1]:.3f}"
    return env


def _write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)
