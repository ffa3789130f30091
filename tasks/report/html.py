"""report.html, for people: the summary, each stage's notes and figures, and the trend.

Analysis is separate from rendering: every stage hands over records (findings, summary
sections) and figures (PNG paths); this module only renders them with the Jinja template
templates/report.html.j2. report.html is one self-contained file — figures embedded as data
URIs, styles inline — and every string that comes from data is escaped by Jinja2's
autoescaping. The trend comes from the history next to the runs (report/history.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from stethoscope.schemas.atomic import atomic_path
from stethoscope.schemas.outcome import StageOutcome
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.report.config import Trend


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


_SECTIONS = ("data", "training", "synthetic", "activations", "gradients", "predictions")


def render_report(summary: Summary, outcomes: list[StageOutcome], path: Path,
                  trend: Trend | None = None) -> Path:
    """Write report.html: self-contained, every data string escaped; with a trend against
    earlier runs when `trend` is given (its plot is a figure of section "trend")."""
    env = Environment(loader=PackageLoader("stethoscope.tasks.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals["fmt"] = _fmt
    env.globals["ci"] = lambda v: "" if not v else f"{v[0]:.3f} – {v[1]:.3f}"
    figures = [f for o in outcomes for f in o.figures if Path(f.path).exists()]
    notes = [(o.stage, n) for o in outcomes for n in o.notes]

    def figures_of(section: str):
        from markupsafe import Markup, escape

        html = "".join(
            f'<figure><img alt="{escape(f.title)}" src="{_data_uri(f.path)}">'
            f"<figcaption><b>{escape(f.title)}</b> {escape(f.caption)}</figcaption></figure>"
            for f in figures if f.section == section)
        return Markup(html)

    def notes_of(section: str):
        from markupsafe import Markup, escape

        return Markup("".join(f'<p class="muted">{escape(n)}</p>' for s, n in notes if s == section))

    env.globals["figures"] = figures_of
    env.globals["notes"] = notes_of
    html = env.get_template("report.html.j2").render(
        s=summary, trend=trend, config_json=json.dumps(summary.config, indent=2, default=str))
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)
