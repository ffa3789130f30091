"""The report stage without a Prefect server: escaping in report.html, the run history and its
trend, the artifacts `publish` creates, the failure event, and form-path confinement."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from stethoscope.flows.nightly_audit import AuditParameters
from stethoscope.flows.parameters import AuditModelParameters
from stethoscope.flows.roots import FORM_PATH_PATTERN, ROOTS_ENV, WORKER_RUN_ENV, confine
from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import (
    ActivationsSection,
    DataSection,
    Finding,
    GradientsSection,
    LayerActivations,
    PredictionsSection,
    SemanticUnit,
    StratumMetrics,
    Summary,
    TaskMetrics,
    TopLoss,
)
from stethoscope.tasks.report import artifacts as report_artifacts
from stethoscope.tasks.report import events as report_events
from stethoscope.tasks.report import html as report_html
from stethoscope.tasks.report import links as report_links
from stethoscope.tasks.report import task as report_stage
from stethoscope.tasks.report.config import HISTORY
from stethoscope.tasks.report.history import history_file, read_history, record_run

EVIL = "<script>alert('x')</script>"
EVIL_DEVICE = '<img src=x onerror="alert(1)">'
EVIL_COLUMN = "<b>col&umn</b>"
T0 = datetime(2024, 6, 3, 2, 0, tzinfo=UTC)
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")


def summary(run_id: str = "r1", *, finished: datetime = T0, dead: float = 0.0,
            findings: tuple[Finding, ...] = (), flagged: bool = False) -> Summary:
    errors = any(f.severity == "error" for f in findings)
    return Summary(
        run_id=run_id, status="fail" if errors else "pass", started_at=finished - timedelta(minutes=5),
        finished_at=finished, config={"data_dir": "cohorts/x", "note": EVIL},
        data=DataSection(rows_in=100, rows_clean=98, rows_quarantined=2, users=12, user_weeks=12),
        findings=list(findings),
        activations=ActivationsSection(layers=[LayerActivations(
            name="conv_1", units=4, dead_units=[0] if dead else [], dead_fraction=dead,
            constant_units=[], saturated_fraction=0.0)]),
        gradients=GradientsSection(output_layer="raw_output", task="diabetes", timestep=128,
                                   horizon_steps_back=10, horizon_steps_forward=8, horizon_hours=6.5),
        predictions=PredictionsSection(
            tasks=[TaskMetrics(task="diabetes", n=12, auroc=0.7, auroc_ci=(0.5, 0.9),
                               baseline_auroc=0.6, corr_with_baseline=0.1)],
            strata=[StratumMetrics(column=EVIL_COLUMN, value=EVIL_DEVICE, task="diabetes", n=6,
                                   auroc=0.5, auroc_ci=(0.3, 0.7), delta_vs_rest=-0.2,
                                   p_value=0.01, flagged=flagged)],
            top_losses=[TopLoss(user_id=EVIL, week_start=date(2024, 3, 4), task="diabetes",
                                y_true=1, y_score=0.1, kind="FN")]),
    )


DEAD = Finding(stage="activations", severity="error", code="DEAD_UNITS",
               message=f"conv_1 1/4 units dead on device {EVIL_DEVICE}", recommendation="leaky_relu")


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs


def test_data_strings_with_html_come_out_escaped(tmp_path: Path) -> None:
    figure = tmp_path / "plot.png"
    figure.write_bytes(PNG)
    outcomes = [StageOutcome(stage="predictions", notes=[f"device {EVIL_DEVICE} unknown"],
                             figures=[Figure("predictions", f"forest {EVIL}", figure, EVIL_COLUMN)])]
    path = report_html.render_report(summary(findings=(DEAD,)), outcomes, tmp_path / "report.html")
    html = path.read_text()

    for raw in (EVIL, EVIL_DEVICE, EVIL_COLUMN):
        assert raw not in html
    assert "&lt;script&gt;alert(" in html  # the user id, the config and the figure title
    assert "&lt;img src=x onerror=" in html  # the device in a stratum, a finding and a note
    assert "&lt;b&gt;col&amp;umn&lt;/b&gt;" in html  # the column name
    elements = _Elements()
    elements.feed(html)
    assert "script" not in elements.tags
    assert not [name for name, _ in elements.attributes if name.startswith("on")]
    # self-contained: the figure is embedded, nothing is fetched from elsewhere; links stay
    # inside the page or go to files beside it
    sources = [value for name, value in elements.attributes if name == "src"]
    assert sources and all(v.startswith("data:image/png;base64,") for v in sources)
    links = [value or "" for name, value in elements.attributes if name == "href"]
    assert links and all(v.startswith("#") or not re.match(r"^[a-z]+:|/", v) for v in links)


def _png(path: Path, size: int = len(PNG)) -> Path:
    """A PNG file of about `size` bytes (the 1x1 image, padded)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG + b"\0" * max(0, size - len(PNG)))
    return path


def _week_plots(directory: Path, tasks: list[str], per_kind: int, size: int) -> list[Figure]:
    """Week plots as analyze names them: `<task>_<kind>_<rank>.png`."""
    return [Figure("predictions", f"{task} {kind} {rank:02d}",
                   _png(directory / f"{task}_{kind}_{rank:02d}.png", size), f"week of {task}")
            for task in tasks for kind in ("FP", "FN", "TP", "TN")
            for rank in range(1, per_kind + 1)]


def test_a_report_with_many_week_plots_stays_small_and_links_a_gallery_of_all(
        tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    weeks = _week_plots(run.analysis / "plots" / "weeks", ["diabetes", "sleep_apnea"], 13, 60_000)
    assert len(weeks) == 104
    weeks.append(Figure("predictions", f"diabetes FN 99 {EVIL}", _png(
        run.analysis / "plots" / "weeks" / "diabetes_FN_99.png", 60_000), EVIL_DEVICE))
    forest = Figure("predictions", "forest diabetes",
                    _png(run.analysis / "plots" / "forest_diabetes.png", 50_000))
    profile = Figure("gradients", "profile", _png(run.audits / "gradients" / "profile.png", 70_000))
    outcomes = [StageOutcome(stage="gradients", figures=[profile]),
                StageOutcome(stage="predictions", figures=[forest, *weeks])]
    html = report_html.render_report(summary(findings=(DEAD,)), outcomes, run.report).read_text()

    assert len(html.encode()) < 2_000_000  # was 105 embedded week plots: 8.4 MB
    embedded = html.count("data:image/png;base64,")
    assert embedded == 2 + 2 * 4  # profile, forest, two week plots of each kind
    # the verdict first, then the contents, then the sections (open where a warning is)
    assert html.index('id="verdict"') < html.index('id="contents"') < html.index("<details class=")
    assert '<details class="section" id="activations" open>' in html  # DEAD_UNITS
    assert '<details class="section" id="gradients">' in html
    assert '<a href="report_gallery.html">all 105 in the gallery</a>' in html
    # the gallery beside the report: every week plot, data strings escaped
    gallery = run.report_gallery.read_text()
    assert gallery.count("data:image/png;base64,") == 105
    assert EVIL not in gallery and EVIL_DEVICE not in gallery and "&lt;script&gt;" in gallery
    elements = _Elements()
    elements.feed(gallery)
    assert "script" not in elements.tags
    assert 'href="report.html"' in gallery
    # a report re-rendered without week plots removes its stale gallery
    report_html.render_report(summary(), outcomes[:1], run.report)
    assert not run.report_gallery.exists()


def test_a_figure_that_is_no_file_is_left_out(tmp_path: Path) -> None:
    outcomes = [StageOutcome(stage="predictions", figures=[
        Figure("predictions", "no path", Path("")), Figure("predictions", "a dir", tmp_path),
        Figure("predictions", "gone", tmp_path / "gone.png")])]
    html = report_html.render_report(summary(), outcomes, tmp_path / "report.html").read_text()
    assert "data:image/png" not in html and not (tmp_path / "report_gallery.html").exists()
    assert report_artifacts.plot_artifacts(outcomes, ["diabetes"]) == []


def test_semantic_units_get_a_short_table_in_the_activations_section(tmp_path: Path) -> None:
    base = summary()
    section = ActivationsSection(layers=base.activations.layers, semantic=[
        SemanticUnit(layer="bilstm", unit=3, state="activity", r=0.912, r_ci=(0.87, 0.94), n=48),
        SemanticUnit(layer="conv_1", unit=0, state="night", r=-0.61, r_ci=None, n=2)])
    html = report_html.render_report(base.model_copy(update={"activations": section}), [],
                                     tmp_path / "report.html").read_text()
    table = html[html.index("Units that track a state"):]
    assert "<td>bilstm</td><td class=\"num\">3</td><td>activity</td>" in table
    assert "0.91" in table and "0.870 – 0.940" in table and "-0.61" in table
    assert "Units that track a state" not in report_html.render_report(
        base, [], tmp_path / "plain.html").read_text()


def test_the_byte_budget_leaves_figures_to_the_gallery(tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    heatmaps = [Figure("activations", f"heatmap {i}", _png(run.audits / f"heatmap_{i}.png", 300_000))
                for i in range(10)]
    html = report_html.render_report(summary(), [StageOutcome(stage="activations",
                                                              figures=heatmaps)],
                                     run.report).read_text()
    assert len(html.encode()) < 2_000_000
    embedded = html.count("data:image/png;base64,")
    assert 0 < embedded < 10
    assert f"{10 - embedded} figure(s) are left out of this page" in html
    assert run.report_gallery.read_text().count("data:image/png;base64,") == 10 - embedded

    # the more text (here 2,000 strata), the fewer figures: still under 2 MB
    wordy = summary()
    stratum = wordy.predictions.strata[0]
    wordy = wordy.model_copy(update={"predictions": wordy.predictions.model_copy(update={
        "strata": [stratum.model_copy(update={"value": f"v{i}"}) for i in range(2000)]})})
    html = report_html.render_report(wordy, [StageOutcome(stage="activations", figures=heatmaps)],
                                     run.report).read_text()
    assert 1_000_000 < len(html.encode()) < 2_000_000
    assert 0 < html.count("data:image/png;base64,") < embedded


def test_the_report_links_what_it_summarises(tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "my run")
    (run.data_docs / "index.html").parent.mkdir(parents=True)
    (run.data_docs / "index.html").write_text("docs")
    run.validation_report.write_text("{}")
    for phase in ("pretrain", "finetune"):
        for split in ("train", "validation"):
            (run.model_dir / "tensorboard" / phase / split).mkdir(parents=True)
            (run.model_dir / "tensorboard" / phase / split / "events.out.tfevents.1.v2").touch()
    (run.audits / "gradients").mkdir(parents=True)
    (run.audits / "gradients" / "profile.parquet").touch()
    run.analysis.mkdir()
    (run.analysis / "strata.parquet").touch()
    html = report_html.render_report(summary(), [], run.report).read_text()

    assert '<a href="validation/data_docs/index.html">great-expectations Data Docs</a>' in html
    assert '<a href="validation/report.json">report.json</a>' in html
    logdir = (run.model_dir / "tensorboard").resolve()
    assert f"<code>tensorboard --logdir &#39;{logdir}&#39;</code>" in html
    gradients = html.split('id="gradients"')[1].split("</details>")[0]
    assert '<a href="audits/gradients/profile.parquet">profile.parquet</a>' in gradients
    assert '<a href="analysis/strata.parquet">strata.parquet</a>' in html


def test_one_plot_artifact_per_task_without_week_plots(tmp_path: Path) -> None:
    tasks = ["diabetes", "sleep_apnea", "apnea"]
    figures = [Figure("predictions", f"{kind} {task}".replace("_", " "),
                      _png(tmp_path / f"{kind}_{task}.png"), f"caption {EVIL}")
               for task in tasks for kind in ("scatter", "roc", "forest")]
    figures += _week_plots(tmp_path / "weeks", tasks, 2, 100)
    figures.append(Figure("training", f"loss {EVIL}", _png(tmp_path / "history.png")))
    plots = report_artifacts.plot_artifacts(
        [StageOutcome(stage="predictions", figures=figures)], tasks, "http://r/report.html")

    assert [p.key for p in plots] == ["plot-training", "plot-predictions-diabetes",
                                      "plot-predictions-sleep-apnea", "plot-predictions-apnea"]
    by_key = {p.key: p for p in plots}
    apnea = by_key["plot-predictions-apnea"]
    assert apnea.markdown.count("](data:image/png;base64,") == 3  # forest, scatter, roc
    assert apnea.description.startswith("forest apnea") and "sleep" not in apnea.description
    assert "weeks" not in apnea.markdown and "FN" not in apnea.markdown
    assert apnea.markdown.rstrip().endswith("[Open the full report](http://r/report.html)")
    for plot in plots:
        assert EVIL not in plot.markdown and "&lt;script&gt;alert\\(" in plot.markdown
    # one task: the key stays plot-predictions
    one = report_artifacts.plot_artifacts(
        [StageOutcome(stage="predictions", figures=figures[:3])], tasks[:1])
    assert [p.key for p in one] == ["plot-predictions"]


def test_history_appends_one_row_per_run_and_marks_what_is_new(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = record_run(summary("r1"), runs, flow="nightly-model-audit")
    assert first.previous is None and len(first.rows) == 1
    record_run(summary("other", finished=T0 + timedelta(hours=1), findings=(DEAD,)), runs,
               flow="audit-model")  # another flow: not the comparison for the nightly run
    second = summary("r2", finished=T0 + timedelta(days=1), dead=0.25, findings=(DEAD,),
                     flagged=True)
    trend = record_run(second, runs, flow="nightly-model-audit")

    assert trend.previous is not None and trend.previous.run_id == "r1"
    assert [r.run_id for r in trend.rows] == ["r1", "r2"]
    assert trend.new_findings == {"activations:DEAD_UNITS"}
    assert trend.new_strata == {f"{EVIL_COLUMN}={EVIL_DEVICE} · diabetes"}
    table = pq.read_table(history_file(runs))
    assert table.schema.equals(HISTORY) and table.num_rows == 3
    row = read_history(history_file(runs))[-1]
    assert (row.run_id, row.status, row.users, row.horizon_hours) == ("r2", "fail", 12, 6.5)
    assert row.dead_share == {"conv_1": 0.25} and row.auroc == {"diabetes": 0.7}

    # the same run reported again (a retry) replaces its row
    record_run(second, runs, flow="nightly-model-audit")
    assert [r.run_id for r in read_history(history_file(runs))] == ["r1", "other", "r2"]

    run = RunPaths(runs / "r2")
    html = report_html.render_report(second, [], run.report, trend).read_text()
    trend_section = html.split("<h2>Trend</h2>")[1].split("<h2>")[0]
    assert "r1" in trend_section and "(this run)" in trend_section and "25% conv_1" in trend_section
    verdict = html.split('<section id="verdict">')[1].split("</section>")[0]
    assert re.search(r"DEAD_UNITS</code> <span class=\"new\">new</span>", verdict)


def test_first_run_has_no_trend_and_nothing_new(tmp_path: Path) -> None:
    trend = record_run(summary("r1", findings=(DEAD,)), tmp_path, flow="f")
    html = report_html.render_report(summary("r1", findings=(DEAD,)), [], tmp_path / "r1" / "report.html",
                                trend).read_text()
    assert "nothing to compare with yet" in html and 'class="new"' not in html


def test_an_unreadable_history_is_moved_aside(tmp_path: Path) -> None:
    history_file(tmp_path).write_bytes(b"not parquet")
    trend = record_run(summary("r1"), tmp_path, flow="f")
    assert trend.previous is None
    assert len(list(tmp_path.glob("history.parquet.unreadable-*"))) == 1
    assert [r.run_id for r in read_history(history_file(tmp_path))] == ["r1"]


@pytest.fixture
def artifacts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """Record the artifacts `publish` creates instead of sending them to a server."""
    import prefect.artifacts

    created: list[tuple[str, dict]] = []
    for kind in ("markdown", "link", "table", "image"):
        name = f"create_{kind}_artifact"
        monkeypatch.setattr(prefect.artifacts, name,
                            lambda *a, _kind=kind, **kw: created.append((_kind, kw)))
    return created


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch):
    """Events go to Prefect's asserting client. The API URL names a closed loopback port: with
    no run context the events worker opens a client but never calls it, and no temporary
    server is started."""
    from prefect.events.clients import AssertingEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    AssertingEventsClient.reset()
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        worker = EventsWorker.instance(AssertingEventsClient)
        monkeypatch.setattr(EventsWorker, "instance", lambda *_: worker)

        def emitted() -> list:
            worker.drain()
            return [e for client in AssertingEventsClient.all for e in client.events]

        yield emitted
        worker.drain()
    AssertingEventsClient.reset()


def test_a_failed_run_emits_the_event_with_the_model_and_the_run(
        tmp_path: Path, artifacts: list, events, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(report_links.REPORTS_URL_ENV, "http://127.0.0.1:4299/files")
    run = RunPaths(tmp_path / "runs" / "r2")
    model = str(tmp_path / "runs" / "r2" / "model" / "model.keras")
    report_stage.publish(summary("r2", findings=(DEAD,)), run, [], None, model)

    [event] = [e for e in events() if e.event == report_events.FAILED_EVENT]
    assert event.resource.id == f"stethoscope.model.{model}"
    assert event.resource["stethoscope.run-id"] == "r2"
    assert event.resource["stethoscope.run-dir"] == str(run.root.resolve())
    assert [r.id for r in event.related] == ["stethoscope.run.r2"]
    assert event.payload["codes"] == ["DEAD_UNITS"]
    assert event.payload["report"] == f"http://127.0.0.1:4299/files{run.report.resolve()}"
    links = {kw["key"]: kw["link"] for kind, kw in artifacts if kind == "link"}
    assert links["summary"] == f"http://127.0.0.1:4299/files{run.summary.resolve()}"


def test_a_passing_run_emits_no_event_and_publishes_its_artifacts(
        tmp_path: Path, artifacts: list, events, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(report_links.REPORTS_URL_ENV, raising=False)
    plots = []
    for name in ("scatter_diabetes", "forest_diabetes", "profile", "huge"):
        plots.append(tmp_path / f"{name}.png")
        plots[-1].write_bytes(PNG if name != "huge" else PNG + b"\0" * report_artifacts._MAX_IMAGE_BYTES)
    outcomes = [StageOutcome(stage="predictions", figures=[
                    Figure("predictions", plots[0].stem, plots[0]),
                    Figure("predictions", plots[1].stem.replace("_", " "), plots[1])]),
                StageOutcome(stage="gradients", figures=[
                    Figure("gradients", "huge", plots[3]), Figure("gradients", "profile", plots[2])])]
    runs = tmp_path / "runs"
    record_run(summary("r1", flagged=False), runs, flow="f")
    current = summary("r2", finished=T0 + timedelta(days=1))
    trend = record_run(current, runs, flow="f")
    run = RunPaths(runs / "r2")
    report_stage.publish(current, run, outcomes, trend, None)

    assert not [e for e in events() if e.event == report_events.FAILED_EVENT]
    kinds = {kw.get("key"): kind for kind, kw in artifacts}
    assert kinds == {"verdict": "markdown", "report": "link", "summary": "link", "history": "table",
                     "plot-gradients": "markdown", "plot-predictions": "markdown"}
    # plots are markdown that embeds them: no "Image URL" printing the data URI in the UI
    plots = {kw["key"]: kw for kind, kw in artifacts if kw["key"].startswith("plot-")}
    assert plots["plot-predictions"]["description"].startswith("forest diabetes")
    assert all("](data:image/png;base64," in kw["markdown"] for kw in plots.values())
    assert plots["plot-gradients"]["markdown"].count("data:image") == 1  # "huge" is left out
    assert f"[Open the full report]({run.report.resolve().as_uri()})" in plots["plot-gradients"]["markdown"]
    links = {kw["key"]: kw["link"] for kind, kw in artifacts if kind == "link"}
    assert links["report"] == run.report.resolve().as_uri()
    history = next(kw["table"] for kind, kw in artifacts if kind == "table")
    assert [r["run_id"] for r in history] == ["r1", "r2"] and history[1]["auroc_diabetes"] == 0.7


def test_verdict_markdown_escapes_data_and_marks_new_findings(tmp_path: Path, artifacts: list) -> None:
    runs = tmp_path / "runs"
    record_run(summary("r1"), runs, flow="f")
    weird = Finding(stage="validate", severity="warning", code="UNKNOWN_DEVICES",
                    message=f"devices not in the catalog: {EVIL_DEVICE} | x", recommendation="add")
    current = summary("r2", finished=T0 + timedelta(days=1), findings=(weird,))
    trend = record_run(current, runs, flow="f")
    report_stage.publish(current, RunPaths(runs / "r2"), [], trend, None)
    markdown = next(kw["markdown"] for kind, kw in artifacts if kind == "markdown")
    assert EVIL_DEVICE not in markdown and "&lt;img src=x" in markdown and "\\| x" in markdown
    # a list, not a table: the Prefect UI does not wrap table cells
    assert "\n- WARNING `UNKNOWN_DEVICES` in validate **new**\n  - devices not in" in markdown
    assert "Compared with the previous run `r1` (pass): 1 new." in markdown
    assert "|---|" not in markdown


def test_a_first_run_marks_nothing_new(tmp_path: Path, artifacts: list, events) -> None:
    info = Finding(stage="analyze", severity="info", code="UNDERPOWERED_STRATUM",
                   message="3 strata too small", recommendation="collect more")
    current = summary("r1", findings=(DEAD, info))
    trend = record_run(current, tmp_path, flow="f")
    report_stage.publish(current, RunPaths(tmp_path / "r1"), [], trend, None)
    markdown = next(kw["markdown"] for kind, kw in artifacts if kind == "markdown")
    assert markdown.startswith("## stethoscope run `r1`: **FAIL**\n\n"
                               "1 error(s), 0 warning(s), 1 informational.\n")
    assert "- ERROR `DEAD_UNITS` in activations\n  - conv\\_1 1/4 units dead" in markdown
    assert "  - Recommendation: leaky\\_relu\n" in markdown
    assert "Informational:\n\n- `UNDERPOWERED_STRATUM` in analyze: 3 strata too small" in markdown
    assert "new" not in markdown.lower() and "Compared with" not in markdown
    assert "history" not in {kw.get("key") for _, kw in artifacts}


def test_model_of_prefers_the_trained_model(tmp_path: Path) -> None:
    class Trained:
        model_path = tmp_path / "m.keras"

    assert report_events.model_of({"model_file": "x.keras"}, [object(), Trained()]) == str(tmp_path / "m.keras")
    assert report_events.model_of({"model_file": str(tmp_path / "x.keras")}, []) == str(tmp_path / "x.keras")
    assert report_events.model_of({}, []) is None


# --- paths from the run form ------------------------------------------------------------


@pytest.mark.parametrize("value", ["..", "../etc", "cohorts/../../etc", "a/..", "/srv/../etc"])
def test_the_form_schema_rejects_parent_segments(value: str) -> None:
    assert not re.search(FORM_PATH_PATTERN, value)
    schema = AuditParameters.model_json_schema()["properties"]
    assert schema["data_dir"]["pattern"] == schema["runs_dir"]["pattern"] == FORM_PATH_PATTERN


@pytest.mark.parametrize("value", ["cohorts/demo", "/srv/data/cohort", "a..b", "runs"])
def test_the_form_schema_accepts_ordinary_paths(value: str) -> None:
    assert re.search(FORM_PATH_PATTERN, value)


def test_deployed_runs_confine_paths_to_the_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "cohort").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "escape").symlink_to(elsewhere)
    monkeypatch.setenv(ROOTS_ENV, str(root))

    # the command line (no worker) is not confined
    monkeypatch.delenv(WORKER_RUN_ENV, raising=False)
    assert AuditParameters(data_dir=str(elsewhere), runs_dir="../runs").runs_dir == "../runs"

    monkeypatch.setenv(WORKER_RUN_ENV, "0b4f0c4e-0000-0000-0000-000000000000")
    monkeypatch.chdir(root)  # a deployment's working directory: relative paths become absolute
    params = AuditParameters(data_dir="cohort", runs_dir=str(root / "runs"))
    assert params.data_dir == str(root / "cohort") and params.runs_dir == str(root / "runs")
    for field, value in [("data_dir", str(elsewhere)), ("data_dir", str(root / "escape")),
                         ("runs_dir", str(root / ".." / "elsewhere")), ("data_dir", "/etc")]:
        with pytest.raises(ValidationError) as error:
            AuditParameters(**{"data_dir": str(root / "cohort"), field: value})
        assert error.value.errors()[0]["loc"] == (field,)
        assert ROOTS_ENV in str(error.value) or "'..'" in str(error.value)
    with pytest.raises(ValidationError, match="model_file"):
        AuditModelParameters(model_file="/etc/passwd", data_dir=str(root / "cohort"), run_id="x")


def test_relative_paths_resolve_against_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert confine("cohorts/demo") == "cohorts/demo"
    with pytest.raises(ValueError, match="outside the allowed roots"):
        confine(str(tmp_path.parent))
