"""Report stage: the run's `summary.json` (the machine contract) and `report.html` (for people).

Analysis is separate from rendering: every stage hands over records (findings, summary
sections) and figures (PNG paths); this module only assembles and renders them. report.html is
one self-contained file — figures embedded as data URIs, styles inline — and every string that
comes from data is escaped by Jinja2's autoescaping. Each run also appends its row to the
history next to the runs (tasks/report/history.py); the report shows the trend and marks what is new.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

from stethoscope.schemas.outcome import StageOutcome
from stethoscope.schemas.summary import (
    Summary,
)
from stethoscope.tasks.report.history import Trend
from stethoscope.tasks.shared.io import atomic_path


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


_SECTIONS = ("data", "training", "synthetic", "activations", "gradients", "predictions")

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>stethoscope {{ s.run_id }} — {{ s.status }}</title>
<style>
 body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
 h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
 table{border-collapse:collapse;margin:.5em 0 1em} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
 th{background:#f5f5f5} .num{text-align:right;font-variant-numeric:tabular-nums}
 .badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
 .pass{background:#2e7d32}.warn{background:#ed6c02}.fail{background:#c62828}
 .error{color:#c62828;font-weight:600}.warning{color:#ed6c02;font-weight:600}.info{color:#555}
 figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555}
 .muted{color:#777} pre{background:#f8f8f8;padding:1em;overflow:auto;font-size:12px}
 .new{display:inline-block;padding:0 6px;border-radius:8px;background:#1565c0;color:#fff;font-size:11px;font-weight:600}
</style></head><body>
<h1>stethoscope run {{ s.run_id }} <span class="badge {{ s.status }}">{{ s.status }}</span></h1>
<p class="muted">started {{ s.started_at }} · finished {{ s.finished_at }} · schema {{ s.schema_version }}</p>

<h2>Verdict</h2>
{% set major = s.findings | rejectattr("severity", "equalto", "info") | list %}
{% set minor = s.findings | selectattr("severity", "equalto", "info") | list %}
{% macro rows(items) %}<table><tr><th>severity</th><th>stage</th><th>code</th><th>finding</th><th>recommendation</th></tr>
{% for f in items %}<tr><td class="{{ f.severity }}">{{ f.severity }}</td><td>{{ f.stage }}</td>
<td><code>{{ f.code }}</code>{% if trend and trend.is_new(f) %} <span class="new">new</span>{% endif %}</td><td>{{ f.message }}</td><td>{{ f.recommendation }}</td></tr>{% endfor %}
</table>{% endmacro %}
{% if major %}{{ rows(major) }}{% else %}<p>No errors or warnings.</p>{% endif %}
{% if minor %}<details><summary>{{ minor | length }} informational finding(s)</summary>{{ rows(minor) }}</details>{% endif %}

<h2>Trend</h2>
{% if trend and trend.previous %}<p>Against the previous {{ trend.rows[-1].flow or "run" }} run
<b>{{ trend.previous.run_id }}</b> ({{ trend.previous.finished_at.strftime("%Y-%m-%d %H:%M UTC") }}, {{ trend.previous.status }}):
{% if trend.new_findings or trend.new_strata %}new since then:
{{ (trend.new_findings | sort | list + trend.new_strata | sort | list) | join(", ") }}.{% else %}nothing new since then.{% endif %}</p>
<table><tr><th>finished (UTC)</th><th>run</th><th>status</th><th>users</th><th>user-weeks</th><th>quarantined rows</th>
<th>largest dead share</th><th>horizon (h)</th>{% for t in trend.tasks %}<th>AUROC {{ t }}</th>{% endfor %}<th>flagged strata</th></tr>
{% for r in trend.rows %}<tr><td>{{ r.finished_at.strftime("%Y-%m-%d %H:%M") }}</td><td>{{ r.run_id }}{% if loop.last %} (this run){% endif %}</td>
<td><span class="badge {{ r.status }}">{{ r.status }}</span></td><td class="num">{{ r.users }}</td><td class="num">{{ r.user_weeks }}</td>
<td class="num">{{ r.rows_quarantined }}</td><td>{% if r.worst_dead %}{{ "{:.0%}".format(r.worst_dead[1]) }} {{ r.worst_dead[0] }}{% else %}—{% endif %}</td>
<td class="num">{{ fmt(r.horizon_hours) }}</td>{% for t in trend.tasks %}<td class="num">{{ fmt(r.auroc.get(t)) }}</td>{% endfor %}
<td>{{ r.flagged_strata | join(", ") or "—" }}</td></tr>{% endfor %}</table>
{{ figures("trend") }}
{% else %}<p class="muted">First run of this flow in this runs directory: nothing to compare with yet.</p>{% endif %}

<h2>Data</h2>
<table>{% for k, v in s.data %}<tr><th>{{ k }}</th><td class="num">{{ "{:,}".format(v) }}</td></tr>{% endfor %}</table>
{{ figures("data") }}{{ notes("data") }}

<h2>Training</h2>{{ figures("training") }}{{ notes("training") }}

<h2>Can the architecture learn the prerequisites? (synthetic targets)</h2>
{% if s.synthetic %}<table><tr><th>target</th><th>R²</th><th>baseline R²</th><th>learned</th></tr>
{% for r in s.synthetic %}<tr><td>{{ r.target }}</td><td class="num">{{ fmt(r.r2) }}</td>
<td class="num">{{ fmt(r.baseline_r2) }}</td><td>{{ "yes" if r.learned else "no" }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">Not run.</p>{% endif %}{{ figures("synthetic") }}{{ notes("synthetic") }}

<h2>Activations</h2>
{% if s.activations.layers %}<table><tr><th>layer</th><th>units</th><th>dead</th><th>dead units</th><th>constant units</th><th>saturated</th></tr>
{% for l in s.activations.layers %}<tr><td>{{ l.name }}</td><td class="num">{{ l.units }}</td>
<td class="num">{{ "{:.0%}".format(l.dead_fraction) }}</td><td>{{ l.dead_units | join(", ") }}</td>
<td>{{ l.constant_units | join(", ") }}</td><td class="num">{{ "{:.0%}".format(l.saturated_fraction) }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">Not run.</p>{% endif %}{{ figures("activations") }}{{ notes("activations") }}

<h2>Gradients: how far back (and ahead) can the model look?</h2>
{% if s.gradients.output_layer %}<table>{% for k, v in s.gradients %}<tr><th>{{ k }}</th><td>{{ fmt(v) }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">Not run.</p>{% endif %}{{ figures("gradients") }}{{ notes("gradients") }}

<h2>Predictions</h2>
{% if s.predictions.tasks %}<table><tr><th>task</th><th>n</th><th>AUROC</th><th>95% CI</th><th>metadata baseline AUROC</th><th>corr. with baseline</th></tr>
{% for t in s.predictions.tasks %}<tr><td>{{ t.task }}</td><td class="num">{{ t.n }}</td><td class="num">{{ fmt(t.auroc) }}</td>
<td class="num">{{ ci(t.auroc_ci) }}</td><td class="num">{{ fmt(t.baseline_auroc) }}</td><td class="num">{{ fmt(t.corr_with_baseline) }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No labelled predictions.</p>{% endif %}
{% if s.predictions.strata %}<h3>Strata</h3><table><tr><th>column</th><th>value</th><th>task</th><th>n</th><th>AUROC</th><th>95% CI</th><th>Δ vs rest</th><th>p</th><th>flagged</th></tr>
{% for r in s.predictions.strata %}<tr><td>{{ r.column }}</td><td>{{ r.value }}</td><td>{{ r.task }}</td><td class="num">{{ r.n }}</td>
<td class="num">{{ fmt(r.auroc) }}</td><td class="num">{{ ci(r.auroc_ci) }}</td><td class="num">{{ fmt(r.delta_vs_rest) }}</td>
<td class="num">{{ fmt(r.p_value) }}</td><td>{{ "FLAGGED" if r.flagged else "" }}{% if trend and trend.is_new(r) %} <span class="new">new</span>{% endif %}</td></tr>{% endfor %}</table>{% endif %}
{% if s.predictions.top_losses %}<h3>Most egregious errors</h3><table><tr><th>kind</th><th>user</th><th>week</th><th>task</th><th>y</th><th>score</th></tr>
{% for r in s.predictions.top_losses %}<tr><td>{{ r.kind }}</td><td>{{ r.user_id }}</td><td>{{ r.week_start }}</td><td>{{ r.task }}</td>
<td class="num">{{ r.y_true }}</td><td class="num">{{ fmt(r.y_score) }}</td></tr>{% endfor %}</table>{% endif %}
{{ figures("predictions") }}{{ notes("predictions") }}

<h2>Configuration</h2><details><summary>config</summary><pre>{{ config_json }}</pre></details>
</body></html>
"""


def render_report(summary: Summary, outcomes: list[StageOutcome], path: Path,
                  trend: Trend | None = None) -> Path:
    """Write report.html: self-contained, every data string escaped; with a trend against
    earlier runs when `trend` is given (its plot is a figure of section "trend")."""
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
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
    html = env.from_string(_TEMPLATE).render(
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
