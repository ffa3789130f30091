"""Report stage: the run's `summary.json` (the machine contract) and `report.html` (for people).

Analysis is separate from rendering: every stage hands over records (findings, summary
sections) and figures (PNG paths); this module only assembles and renders them. report.html is
one self-contained file — figures embedded as data URIs, styles inline — and every string that
comes from data is escaped by Jinja2's autoescaping.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape
from prefect import task

from schemas.layout import RunPaths
from schemas.outcome import StageOutcome
from schemas.summary import (
    ActivationsSection,
    DataSection,
    GradientsSection,
    PredictionsSection,
    Summary,
    status_of,
)
from tasks.io import atomic_path
from tasks.outcomes import outcome_of


def build_summary(run: RunPaths, config: dict[str, Any], started_at: datetime,
                  outcomes: list[StageOutcome]) -> Summary:
    """Merge the stages' outcomes into one Summary; status follows from the findings."""
    findings = [f for o in outcomes for f in o.findings]

    def last(attribute: str, default: Any) -> Any:
        values = [getattr(o, attribute) for o in outcomes if getattr(o, attribute) is not None]
        return values[-1] if values else default

    data: dict[str, int] = {}
    for o in outcomes:  # each stage fills the counts it knows
        if o.data is not None:
            data.update({k: v for k, v in o.data.model_dump().items() if v})
    return Summary(
        run_id=run.run_id, status=status_of(findings), started_at=started_at,
        finished_at=datetime.now(UTC), config=config, data=DataSection(**data),
        findings=findings, activations=last("activations", ActivationsSection()),
        gradients=last("gradients", GradientsSection()), synthetic=last("synthetic", []),
        predictions=last("predictions", PredictionsSection()),
    )


def write_summary(summary: Summary, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(summary.model_dump_json(indent=2) + "\n")
    return path


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
</style></head><body>
<h1>stethoscope run {{ s.run_id }} <span class="badge {{ s.status }}">{{ s.status }}</span></h1>
<p class="muted">started {{ s.started_at }} · finished {{ s.finished_at }} · schema {{ s.schema_version }}</p>

<h2>Verdict</h2>
{% if s.findings %}
<table><tr><th>severity</th><th>stage</th><th>code</th><th>finding</th><th>recommendation</th></tr>
{% for f in s.findings %}<tr><td class="{{ f.severity }}">{{ f.severity }}</td><td>{{ f.stage }}</td>
<td><code>{{ f.code }}</code></td><td>{{ f.message }}</td><td>{{ f.recommendation }}</td></tr>{% endfor %}
</table>{% else %}<p>No findings.</p>{% endif %}

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
<td class="num">{{ fmt(r.p_value) }}</td><td>{{ "FLAGGED" if r.flagged else "" }}</td></tr>{% endfor %}</table>{% endif %}
{% if s.predictions.top_losses %}<h3>Most egregious errors</h3><table><tr><th>kind</th><th>user</th><th>week</th><th>task</th><th>y</th><th>score</th></tr>
{% for r in s.predictions.top_losses %}<tr><td>{{ r.kind }}</td><td>{{ r.user_id }}</td><td>{{ r.week_start }}</td><td>{{ r.task }}</td>
<td class="num">{{ r.y_true }}</td><td class="num">{{ fmt(r.y_score) }}</td></tr>{% endfor %}</table>{% endif %}
{{ figures("predictions") }}{{ notes("predictions") }}

<h2>Configuration</h2><details><summary>config</summary><pre>{{ config_json }}</pre></details>
</body></html>
"""


def render_report(summary: Summary, outcomes: list[StageOutcome], path: Path) -> Path:
    """Write report.html: self-contained, every data string escaped."""
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
        s=summary, config_json=json.dumps(summary.config, indent=2, default=str))
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)


def publish(summary: Summary, run: RunPaths) -> None:
    """Prefect artifacts of the run (a verdict table, a link to the report) and, when the run
    failed, the event `stethoscope.audit.failed` that an automation can turn into an alert."""
    from prefect.artifacts import create_link_artifact, create_markdown_artifact
    from prefect.events import emit_event

    rows = "\n".join(f"| {f.severity} | {f.stage} | `{f.code}` | {_md(f.message)} | {_md(f.recommendation)} |"
                     for f in summary.findings) or "| — | — | — | no findings | — |"
    create_markdown_artifact(
        key="verdict", description=f"stethoscope run {summary.run_id}: {summary.status}",
        markdown=f"## stethoscope run `{summary.run_id}`: **{summary.status.upper()}**\n\n"
                 "| severity | stage | code | finding | recommendation |\n|---|---|---|---|---|\n" + rows)
    create_link_artifact(key="report", link=run.report.resolve().as_uri(),
                         link_text=f"report.html of {summary.run_id}",
                         description=f"summary.json: {run.summary.resolve()}")
    if summary.status == "fail":
        emit_event(event="stethoscope.audit.failed",
                   resource={"prefect.resource.id": f"stethoscope.run.{summary.run_id}",
                             "prefect.resource.name": summary.run_id},
                   payload={"codes": sorted({f.code for f in summary.findings if f.severity == "error"}),
                            "summary": str(run.summary.resolve())})


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@task(name="report")
def report_task(run_dir: Path, config: dict[str, Any], started_at: datetime,
                results: list[Any]) -> Summary:
    """Prefect shell: summary.json, report.html and the run's artifacts from the stages' results."""
    run = RunPaths(run_dir)
    outcomes = [outcome_of(r) for r in results]
    summary = build_summary(run, config, started_at, outcomes)
    write_summary(summary, run.summary)
    render_report(summary, outcomes, run.report)
    publish(summary, run)
    return summary
