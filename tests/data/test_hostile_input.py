"""Faults and hostile input (issue #17): nothing leaked, nothing half-written, exit 2 (never 1)
on bad input, empty inputs an error. Each case reproduces one report on a tiny seeded input."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stethoscope.flows.cli import EXIT_OK, EXIT_USAGE, main
from stethoscope.schemas.errors import DataContractError, UsageError
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.summary import Finding, Summary
from stethoscope.schemas.tables import PREDICTIONS, QUARANTINE
from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.analyze.inputs import read_predictions
from stethoscope.tasks.report.artifacts import verdict_markdown
from stethoscope.tasks.shared.artifacts import md_text
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.validate.gate import validate_cohort

from .conftest import sensor_table

NOW = datetime(2024, 6, 1, tzinfo=UTC)
FAST = ValidateConfig(great_expectations=False, now=NOW)
SECRET = b"TOP-SECRET hunter2 do-not-copy"


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in-process: (exit code, stdout, stderr); never a traceback."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def first_line(err: str) -> str:
    """The error's first line (log lines of the stage may come before it)."""
    return next(line for line in err.splitlines() if line.startswith("stethoscope "))


def validate_argv(cohort: Path, out: Path) -> list[str]:
    return ["validate", "--data", str(cohort), "--out", str(out), "--no-great-expectations"]


def all_bytes_under(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


# --- sensor logs: only the cohort's own files are read, set-aside copies keep their mode ----


@pytest.mark.parametrize("secret_kind", ["text", "parquet"])
def test_a_symlink_out_of_the_cohort_is_refused_by_name_and_never_copied(
        make_cohort, tmp_path, capsys, secret_kind):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 200)}, users=["u1"])
    secret = tmp_path / "home" / "secret.parquet"
    secret.parent.mkdir()
    if secret_kind == "text":
        secret.write_bytes(SECRET)
    else:  # a valid sensor log of a known user: read, it would end in clean/ and the Data Docs
        pq.write_table(sensor_table("u1", 50, device="SECRET_DEVICE_7f3a", seed=9,
                                    start=datetime(2024, 3, 11, tzinfo=UTC)), secret)
    secret.chmod(0o600)
    (cohort / "sensor_logs" / "link.parquet").symlink_to(secret)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.parquet").write_bytes(SECRET)
    (cohort / "sensor_logs" / "linked_dir").symlink_to(elsewhere, target_is_directory=True)

    run = tmp_path / "run"
    argv = validate_argv(cohort, run)[:-1] if secret_kind == "parquet" else validate_argv(cohort, run)
    code, out, _ = cli(argv, capsys)  # with great-expectations on for the Parquet secret

    assert code == EXIT_OK
    assert "link.parquet refused" in out and "linked_dir refused" in out
    report = json.loads(RunPaths(run).validation_report.read_text())
    files = {f["file"]: f for f in report["files"]}
    assert files["link.parquet"]["status"] == files["linked_dir"]["status"] == "rejected"
    assert [p["rule"] for p in files["link.parquet"]["problems"]] == ["outside_cohort"]
    assert str(secret) not in json.dumps(report)  # where the link points is not the run's business
    assert report["rows_in"] == report["rows_clean"] == 200
    assert not RunPaths(run).rejected_files.exists()
    leaked = [p for p, content in all_bytes_under(run)
              if SECRET in content or b"SECRET_DEVICE_7f3a" in content]
    assert leaked == []
    clean = pa.concat_tables([pq.read_table(f) for f in RunPaths(run).clean.glob("*.parquet")])
    assert set(clean["device"].to_pylist()) == {"apple_watch_series_4"}


def test_files_set_aside_keep_their_permissions(make_cohort, tmp_path):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 300), "private.parquet": b"PAR1 broken",
                          "group.parquet": b"PAR1 also broken"}, users=["u1"])
    (cohort / "sensor_logs" / "private.parquet").chmod(0o600)
    (cohort / "sensor_logs" / "group.parquet").chmod(0o640)
    old_umask = os.umask(0o002)  # a permissive umask must not open the copies up
    try:
        result = validate_cohort(CohortPaths(cohort), RunPaths(tmp_path / "run"), FAST)
    finally:
        os.umask(old_umask)
    assert sorted(result.files_rejected) == ["group.parquet", "private.parquet"]
    rejected = RunPaths(tmp_path / "run").rejected_files
    for name, mode in (("private.parquet", 0o600), ("group.parquet", 0o640)):
        copy = rejected / name
        assert stat.S_IMODE(copy.stat().st_mode) == mode
        assert copy.read_bytes() == (cohort / "sensor_logs" / name).read_bytes()


def _four_files_one_truncated(make_cohort) -> Path:
    """Four files of one user each, alike in size; the last cut in half (unreadable)."""
    users = ["u1", "u2", "u3", "u4"]
    cohort = make_cohort({f"{u}.parquet": sensor_table(u, 2000, seed=i) for i, u in enumerate(users)},
                         users=users)
    cut = cohort / "sensor_logs" / "u4.parquet"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return cohort


def test_rows_of_a_file_that_cannot_be_read_count_toward_the_gate(make_cohort, tmp_path, capsys):
    cohort = _four_files_one_truncated(make_cohort)
    code, _, err = cli(validate_argv(cohort, tmp_path / "run"), capsys)
    assert code == EXIT_USAGE
    assert "above the bound of 5.00%" in first_line(err) and "estimated" in first_line(err)
    assert "file u4.parquet" in err and "unreadable_file" in err
    report = json.loads(RunPaths(tmp_path / "run").validation_report.read_text())
    # half a file of 2,000 rows, at the others' rows per byte
    assert 700 <= report["rows_in_rejected_files_estimated"] <= 1300
    assert report["rows_in"] == 6000  # estimated rows are never counted as read


def test_the_estimate_is_reported_when_the_gate_allows_it(make_cohort, tmp_path):
    cohort = _four_files_one_truncated(make_cohort)
    loose = FAST.model_copy(update={"max_quarantine_share": 0.5})
    result = validate_cohort(CohortPaths(cohort), RunPaths(tmp_path / "run"), loose)
    assert result.files_rejected == ["u4.parquet"]
    assert 700 <= result.rows_in_rejected_files_estimated <= 1300
    assert result.quarantined_share == pytest.approx(
        result.rows_in_rejected_files_estimated / (6000 + result.rows_in_rejected_files_estimated))


# --- the Prefect verdict: data is text, never markdown --------------------------------------

HOSTILE = [
    "![b](http://h/x.png)",
    "[x](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "**bold** _it_ ~~gone~~ `code` # heading | cell",
    "see http://h/beacon and www.evil.example or mail a@b.example",
    "back\\slash [a]: http://ref\nnew line",
    "cell\r[y](javascript:1)\r    indented | row",  # \r ends a table row in markdown
]


class _Rendered(HTMLParser):
    """The tags, the text and the text of each code span of rendered HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text = ""
        self.codes: list[str] = []
        self._in_code = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        if tag == "code":
            self._in_code, self.codes = True, [*self.codes, ""]

    def handle_endtag(self, tag: str) -> None:
        if tag == "code":
            self._in_code = False

    def handle_data(self, data: str) -> None:
        self.text += data
        if self._in_code:
            self.codes[-1] += data


def _renderers() -> list:
    markdown_it = pytest.importorskip("markdown_it")
    mistune = pytest.importorskip("mistune")
    return [markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render,
            mistune.create_markdown(plugins=["table", "url", "strikethrough"])]


@pytest.mark.parametrize("device", HOSTILE)
def test_verdict_markdown_renders_data_strings_as_literal_text(device):
    finding = Finding(stage="validate", severity="warning", code="UNKNOWN_DEVICES",
                      message=f"devices not in the catalog: {device}",
                      recommendation=f"add {device} to schemas/devices.py")
    summary = Summary(run_id="nightly-[r](javascript:x)`1`", status="warn",
                      started_at=NOW, finished_at=NOW, config={}, findings=[finding])
    markdown = verdict_markdown(summary)
    pages = []
    for render in _renderers():
        page = _Rendered()
        page.feed(render(markdown))
        assert not {"a", "img", "em", "del", "s", "h1", "script"} & set(page.tags)
        # code spans: the run id and the finding code, none opened by data
        assert all(c == "UNKNOWN_DEVICES" or c.startswith("nightly-") for c in page.codes)
        pages.append(page)
    # the CommonMark reference renderer shows the data exactly, on one line (mistune shows
    # the entities of < > & as they are: text all the same)
    flat = " ".join(device.splitlines())
    assert f"devices not in the catalog: {flat}" in pages[0].text
    assert f"add {flat} to schemas/devices.py" in pages[0].text


def test_md_text_escapes_every_markdown_metacharacter():
    escaped = md_text("\\ ` * _ [ ] ( ) ! < > # | ~ : .")
    assert escaped == "\\\\ \\` \\* \\_ \\[ \\] \\( \\) \\! &lt; &gt; \\# \\| \\~ \\: \\."


# --- labels and users: checked by validation, before anything is written -------------------


def _labels(cohort: Path, table: pa.Table | bytes) -> None:
    if isinstance(table, bytes):
        (cohort / "labels.parquet").write_bytes(table)
    else:
        pq.write_table(table, cohort / "labels.parquet")


@pytest.mark.parametrize(("name", "suggestion"), [
    ("high blood pressure", "high_blood_pressure"), ("sleep/apnea", "sleep_apnea"),
    ("2nd_stroke", "c_2nd_stroke")])
def test_label_names_must_be_usable_as_keras_layer_names(make_cohort, tmp_path, capsys,
                                                         name, suggestion):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    _labels(cohort, pa.table({"user_id": ["u1"], "diabetes": pa.array([1], pa.int8()),
                              name: pa.array([0], pa.int8())}))
    code, _, err = cli(validate_argv(cohort, tmp_path / "run"), capsys)
    assert code == EXIT_USAGE
    assert first_line(err).endswith("labels.parquet: labels table breaks its contract")
    assert f"column {name!r}, rule bad_label_name" in err and repr(suggestion) in err
    assert "diabetes" not in err.split("Fix:")[0]  # a usable name is not blamed
    assert not (tmp_path / "run").exists()


def test_an_unreadable_labels_file_is_named(make_cohort, tmp_path, capsys):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    _labels(cohort, b"PAR1x")  # 5 bytes
    code, _, err = cli(validate_argv(cohort, tmp_path / "run"), capsys)
    assert code == EXIT_USAGE
    assert first_line(err).endswith("labels.parquet: labels table cannot be read")
    assert "file labels.parquet, rule unreadable_file" in err and "Fix:" in err
    assert not (tmp_path / "run").exists()


def test_labels_matching_no_user_fail_before_training(make_cohort, tmp_path, capsys):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    _labels(cohort, pa.table({"user_id": ["p-001", "p-002"], "diabetes": pa.array([1, 0], pa.int8())}))
    code, _, err = cli(validate_argv(cohort, tmp_path / "run"), capsys)
    assert code == EXIT_USAGE
    assert "file labels.parquet, column 'user_id', rule labels_match_no_user, 2 rows" in err
    assert "remove labels.parquet" in err
    assert not (tmp_path / "run").exists()


def test_labels_matching_some_users_pass(make_cohort, tmp_path):
    cohort = make_cohort({"a.parquet": pa.concat_tables([sensor_table("u1", 100),
                                                         sensor_table("u2", 100, seed=1)])},
                         users=["u1", "u2"])
    _labels(cohort, pa.table({"user_id": ["u1", "someone"], "diabetes": pa.array([1, 0], pa.int8())}))
    result = validate_cohort(CohortPaths(cohort), RunPaths(tmp_path / "run"), FAST)
    assert result.rows_clean == 200


@pytest.mark.parametrize("bad_id", [None, "", "   "])
def test_null_or_empty_user_ids_in_users_parquet(make_cohort, tmp_path, capsys, bad_id):
    """A row naming no user is set aside (rule missing_user_id); the users named go on."""
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    pq.write_table(pa.table({"user_id": pa.array(["u1", bad_id], pa.string()), "age": [40.0, 50.0],
                             "sex": ["F", "M"], "timezone": ["UTC", "UTC"]}), cohort / "users.parquet")
    code, out, _ = cli(validate_argv(cohort, tmp_path / "run"), capsys)
    assert code == EXIT_OK
    assert "100 clean" in out and "users set aside for bad metadata (1)" in out
    rejected = pq.read_table(tmp_path / "run" / "validation" / "rejected_users.parquet")
    assert rejected["rule"].to_pylist() == ["missing_user_id"]
    assert rejected["user_id"].to_pylist() == [bad_id]


def test_an_empty_user_id_in_sensor_logs_is_quarantined(make_cohort, tmp_path):
    table = sensor_table("u1", 300)
    ids = ["u1"] * 300
    ids[17], ids[18] = "", "  "
    table = table.set_column(0, "user_id", pa.array(ids, pa.string()))
    cohort = make_cohort({"a.parquet": table}, users=["u1"])
    run = RunPaths(tmp_path / "run")
    result = validate_cohort(CohortPaths(cohort), run, FAST)
    assert (result.rows_in, result.rows_clean, result.rows_quarantined) == (300, 298, 2)
    quarantined = pa.concat_tables([pq.read_table(f) for f in run.quarantine.glob("*.parquet")])
    assert quarantined.schema.equals(QUARANTINE)
    assert quarantined["rule"].to_pylist() == ["empty_user_id"] * 2
    assert sorted(quarantined["source_row"].to_pylist()) == [17, 18]
    report = json.loads(run.validation_report.read_text())
    assert report["rules"]["empty_user_id"]["rows"] == 2


# --- import-csv --------------------------------------------------------------------------


def _export(folder: Path, name: str, text: str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _random_bytes(seed: int, n: int = 400) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert noise.find(b"\n") != 0
    return noise


GOOD_HR = "user,datetime,heartrate\nu1,2021-06-01 08:00:00,70\nu1,2021-06-01 08:01:00,71\n"


@pytest.mark.parametrize("content", [
    _random_bytes(1), b"user,datetime,heartrate\n" + _random_bytes(2)], ids=["whole", "body"])
def test_random_bytes_in_an_export_name_the_file(tmp_path, capsys, content):
    _export(tmp_path / "src", "u1_hr.csv", GOOD_HR)
    bad = _export(tmp_path / "src", "u2_hr.csv", content)
    out = tmp_path / "cohort"
    code, _, err = cli(["import-csv", "--source", str(tmp_path / "src"), "--out", str(out)], capsys)
    assert code == EXIT_USAGE
    assert f"file {bad}, rule unreadable_file" in err and "Fix:" in err
    assert not out.exists()


def test_random_bytes_in_the_users_csv_name_the_file(tmp_path, capsys):
    _export(tmp_path / "src", "u1_hr.csv", GOOD_HR)
    users_csv = _export(tmp_path, "users.csv", _random_bytes(3))
    out = tmp_path / "cohort"
    code, _, err = cli(["import-csv", "--source", str(tmp_path / "src"), "--out", str(out),
                        "--users-csv", str(users_csv)], capsys)
    assert code == EXIT_USAGE
    assert first_line(err).endswith("the users CSV cannot be read")
    assert f"file {users_csv}, rule unreadable_file" in err
    assert not out.exists()


def test_a_steps_value_beyond_int64_names_file_and_column(tmp_path, capsys):
    steps = _export(tmp_path / "src", "u1_steps.csv",
                    "user,datetime,steps\nu1,2021-06-01 08:00:00,12\n"
                    "u1,2021-06-01 08:01:00,99999999999999999999\n")
    out = tmp_path / "cohort"
    code, _, err = cli(["import-csv", "--source", str(tmp_path / "src"), "--out", str(out)], capsys)
    assert code == EXIT_USAGE
    assert f"file {steps}, column 'steps', rule steps_out_of_range, 1 rows" in err
    assert not out.exists()


def test_header_only_exports_are_no_cohort(tmp_path, capsys):
    _export(tmp_path / "src", "u1_hr.csv", "user,datetime,heartrate\n")
    _export(tmp_path / "src", "u1_steps.csv", "user,datetime,steps\n")
    out = tmp_path / "cohort"
    code, _, err = cli(["import-csv", "--source", str(tmp_path / "src"), "--out", str(out)], capsys)
    assert code == EXIT_USAGE
    assert first_line(err) == ("stethoscope import-csv: the exports hold no rows; nothing "
                                   "was written")
    assert err.count("rule no_rows") == 2
    assert not out.exists()


# --- analyze: an empty table is bad input, not a pass --------------------------------------


def test_an_empty_predictions_table_is_an_error_when_required(tmp_path):
    path = tmp_path / "predictions.parquet"
    pq.write_table(PREDICTIONS.empty_table(), path)
    with pytest.raises(DataContractError) as caught:
        read_predictions(path, AnalyzeConfig(), require_rows=True)
    assert [(p.rule, p.file) for p in caught.value.problems] == [("no_rows", str(path))]
    assert read_predictions(path, AnalyzeConfig()).empty  # a nightly run without labels


def test_analyze_on_an_empty_predictions_table_exits_2(tmp_path, capsys, prefect_server):
    path = tmp_path / "predictions.parquet"
    pq.write_table(pa.table({"user_id": pa.array([], pa.string()), "task": pa.array([], pa.string()),
                             "y_true": pa.array([], pa.int8()), "y_score": pa.array([], pa.float64()),
                             "week_start": pa.array([], pa.date32())}), path)
    out = tmp_path / "runs" / "a"
    code, _, err = cli(["analyze", "--predictions", str(path), "--out", str(out)], capsys)
    assert code == EXIT_USAGE
    assert "has no rows, so there is nothing to analyse" in err and "rule no_rows" in err
    assert not (out / "summary.json").exists() and not (out / "analysis").exists()


# --- a run directory inside the cohort ----------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run", "audit-model"])
def test_out_inside_the_cohort_is_refused(make_cohort, tmp_path, capsys, command):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    model = tmp_path / "m.keras"
    model.write_bytes(b"not read: the run directory is refused first")
    out = cohort / "sensor_logs" / "run"
    extra = ["--model", str(model)] if command == "audit-model" else []
    code, _, err = cli([command, *extra, "--data", str(cohort), "--out", str(out)], capsys)
    assert code == EXIT_USAGE
    assert f"--out {out}: is inside the cohort directory" in first_line(err)
    assert not out.exists()


def test_out_linked_into_the_cohort_is_refused(make_cohort, tmp_path, capsys):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    (tmp_path / "runs").symlink_to(cohort / "sensor_logs", target_is_directory=True)
    code, _, err = cli(validate_argv(cohort, tmp_path / "runs" / "r1"), capsys)
    assert code == EXIT_USAGE and "inside the cohort directory" in err
    assert sorted(p.name for p in (cohort / "sensor_logs").iterdir()) == ["a.parquet"]


def test_the_validate_stage_itself_refuses_a_run_inside_the_cohort(make_cohort):
    """Deployed runs and the Python API reach the stage without the command line's check."""
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    with pytest.raises(UsageError, match="inside the cohort directory"):
        validate_cohort(CohortPaths(cohort), RunPaths(cohort / "runs" / "r1"), FAST)
    assert not (cohort / "runs").exists()



def test_a_run_id_linked_out_of_the_roots_is_refused_in_a_deployed_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """runs_dir is inside the roots, but the run id names a link to a directory outside them:
    a deployed run refuses it (exit 2) before anything is written there; the command line,
    whose user owns the paths, is not confined."""
    from stethoscope.flows.roots import ROOTS_ENV, WORKER_RUN_ENV
    from stethoscope.flows.run_lock import writes_run
    from stethoscope.schemas.errors import UsageError

    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "runs").mkdir(parents=True)
    outside.mkdir()
    (root / "runs" / "night").symlink_to(outside, target_is_directory=True)
    written = []

    @writes_run(lambda args: args["run_dir"])
    def flow_body(run_dir: Path) -> None:
        written.append(run_dir)

    monkeypatch.setenv(ROOTS_ENV, str(root))
    monkeypatch.setenv(WORKER_RUN_ENV, "0b4f0c4e-0000-0000-0000-000000000000")
    with pytest.raises(UsageError, match="outside the allowed roots"):
        flow_body(root / "runs" / "night")
    assert written == [] and list(outside.iterdir()) == []
    flow_body(root / "runs" / "plain")  # a run directory inside the roots is fine
    monkeypatch.delenv(WORKER_RUN_ENV)
    flow_body(root / "runs" / "night")  # the command line is not confined
    assert len(written) == 2
