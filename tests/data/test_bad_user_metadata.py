"""Bad metadata of one user (issue #17, item 4): that user's rows are set aside under a rule of
their own and the rest goes on; too many such users still fail the gate; a whole-file problem of
users.parquet is still exit 2. On a small simulated cohort (30 users, one week)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stethoscope.flows.cli import EXIT_OK, EXIT_USAGE
from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.sequence_store import StorePaths
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.analyze.plots import read_timezones
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.labels.user_weeks import build_user_weeks
from stethoscope.tasks.report.artifacts import verdict_markdown
from stethoscope.tasks.sequences.build import build_sequences
from stethoscope.tasks.sequences.config import SequencesConfig
from stethoscope.tasks.shared.users import read_users, split_users
from stethoscope.tasks.validate.gate import validate_cohort

from .test_hostile_input import (
    FAST,
    NOW,
    _Rendered,
    _renderers,
    cli,
    first_line,
    validate_argv,
)

BAD = "u00003"  # a user of the simulated cohort
STEPS = 128


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("metadata") / "cohort"
    simulate_cohort(SimulateConfig(users=30, weeks=1, seed=5), root)
    return root


def with_users(simulated: Path, tmp_path: Path, edit) -> Path:
    """A copy of the simulated cohort whose users table is `edit(users as a list of dicts)`."""
    root = tmp_path / "cohort"
    shutil.copytree(simulated, root)
    users = pq.read_table(root / "users.parquet")
    nullable = pa.schema([f.with_nullable(True) for f in users.schema])  # nulls may be planted
    pq.write_table(pa.Table.from_pylist(edit(users.to_pylist()), schema=nullable),
                   root / "users.parquet")
    return root


def set_value(column: str, value, user: str = BAD):
    def edit(rows: list[dict]) -> list[dict]:
        return [{**r, column: value} if r["user_id"] == user else r for r in rows]
    return edit


def duplicate(rows: list[dict]) -> list[dict]:
    twin = next(r for r in rows if r["user_id"] == BAD)
    return rows + [{**twin, "timezone": "Asia/Tokyo"}]


def quarantine_of(run: RunPaths) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(run.quarantine.glob("*.parquet"))])


def clean_users(run: RunPaths) -> set[str]:
    return {u for f in run.clean.glob("*.parquet") for u in pq.read_table(f)["user_id"].to_pylist()}


DEFECTS = {  # name: (edit, rule, column, value as text)
    "unknown_timezone": (set_value("timezone", "Mars/Olympus"), "unknown_timezone", "timezone",
                         "Mars/Olympus"),
    "empty_timezone": (set_value("timezone", ""), "unknown_timezone", "timezone", ""),
    "null_timezone": (set_value("timezone", None), "unknown_timezone", "timezone", None),
    "duplicate_user": (duplicate, "duplicate_user", "user_id", BAD),
    "unknown_sex": (set_value("sex", "X"), "unknown_sex", "sex", "X"),
    "negative_age": (set_value("age", -4.0), "age_out_of_range", "age", "-4.0"),
    "absurd_age": (set_value("age", 999.0), "age_out_of_range", "age", "999.0"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_a_user_with_bad_metadata_is_set_aside_and_the_rest_goes_on(simulated, tmp_path, defect):
    edit, rule, column, value = DEFECTS[defect]
    cohort = with_users(simulated, tmp_path, edit)
    run = RunPaths(tmp_path / "run")
    result = validate_cohort(CohortPaths(cohort), run, FAST)

    quarantined = quarantine_of(run)
    mine = quarantined.filter(pc.equal(quarantined["user_id"], BAD))
    assert mine.num_rows > 0 and set(mine["rule"].to_pylist()) == {"bad_user_metadata"}
    assert BAD not in clean_users(run) and len(clean_users(run)) == 29
    assert result.rows_in == result.rows_clean + result.rows_quarantined
    assert result.users == 29 and result.users_set_aside == 1

    rejected = pq.read_table(result.rejected_users)
    assert rejected["user_id"].to_pylist() == [BAD] * (2 if defect == "duplicate_user" else 1)
    assert set(rejected["rule"].to_pylist()) == {rule}
    assert set(rejected["column"].to_pylist()) == {column}
    assert set(rejected["value"].to_pylist()) == {value}

    report = json.loads(run.validation_report.read_text())
    assert report["rules"]["bad_user_metadata"]["rows"] == mine.num_rows
    assert report["users_set_aside"]["users"] == 1
    assert report["users_set_aside"]["rules"][rule]["rows"] == rejected.num_rows
    [finding] = [f for f in result.findings if f.code == FindingCode.USERS_SET_ASIDE]
    assert finding.severity == "warning"
    assert f"user '{BAD}'" in finding.message and rule in finding.message


@pytest.mark.parametrize("defect", ["unknown_timezone", "duplicate_user"])
def test_labels_and_sequences_run_without_the_user_set_aside(simulated, tmp_path, capsys,
                                                               defect):
    cohort = with_users(simulated, tmp_path, DEFECTS[defect][0])
    run = RunPaths(tmp_path / "run")
    code, out, _ = cli(validate_argv(cohort, run.root), capsys)
    assert code == EXIT_OK
    assert "users set aside for bad metadata (1)" in out and f"user '{BAD}'" in out

    # the later stages read the cohort's users.parquet, as the flows hand it to them
    weeks = build_user_weeks(run.clean, cohort / "users.parquet", run.user_weeks,
                             LabelsConfig(num_bins=STEPS))
    assert weeks.num_users == 29
    assert BAD not in pq.read_table(run.user_weeks)["user_id"].to_pylist()
    store = build_sequences(run.clean, cohort / "users.parquet", run.user_weeks,
                            cohort / "labels.parquet", run.sequences,
                            SequencesConfig(num_steps=STEPS, min_coverage=0.3))
    index = pq.read_table(StorePaths(root=store.store_dir).index)
    assert BAD not in index["user_id"].to_pylist()
    assert len(set(index["user_id"].to_pylist())) == 29
    # analyze's week plots: the users set aside have no time zone, the others theirs
    zones = read_timezones(cohort / "users.parquet")
    assert BAD not in zones and len(zones) == 29


def test_a_majority_of_bad_users_fails_the_gate_naming_the_rule(simulated, tmp_path, capsys):
    bad = {f"u{i:05d}" for i in range(16)}
    cohort = with_users(simulated, tmp_path, lambda rows: [
        {**r, "timezone": "Mars/Olympus"} if r["user_id"] in bad else r for r in rows])
    code, _, err = cli(validate_argv(cohort, tmp_path / "run"), capsys)
    assert code == EXIT_USAGE
    assert "above the bound of 5.00%" in first_line(err)
    assert "rule bad_user_metadata" in err
    assert "file users.parquet, column 'timezone', rule unknown_timezone, 16 rows" in err
    assert "user 'u00000' (timezone 'Mars/Olympus')" in err and "and 11 more" in err


def test_every_user_bad_is_no_usable_row_naming_the_users(simulated, tmp_path):
    cohort = with_users(simulated, tmp_path, lambda rows: [{**r, "sex": "?"} for r in rows])
    with pytest.raises(DataContractError, match="no usable sensor rows") as caught:
        validate_cohort(CohortPaths(cohort), RunPaths(tmp_path / "run"), FAST)
    assert [p.rule for p in caught.value.problems] == ["unknown_sex"]
    assert caught.value.problems[0].count == 30


def test_a_clean_users_table_sets_no_one_aside(simulated, tmp_path):
    run = RunPaths(tmp_path / "run")
    result = validate_cohort(CohortPaths(simulated), run, FAST)
    assert result.users == 30 and result.users_set_aside == 0
    assert not any(f.code == FindingCode.USERS_SET_ASIDE for f in result.findings)
    assert not result.rejected_users.exists()
    report = json.loads(run.validation_report.read_text())
    assert report["users_set_aside"]["users"] == 0 and report["users_set_aside"]["file"] is None
    assert report["rules"]["bad_user_metadata"]["rows"] == 0


def test_data_strings_of_a_user_set_aside_are_quoted_not_trusted(simulated, tmp_path):
    hostile = "Mars/\x1b[31mOlympus\n![x](http://h/x.png) <img src=x>" + "z" * 100
    cohort = with_users(simulated, tmp_path, set_value("timezone", hostile))
    result = validate_cohort(CohortPaths(cohort), RunPaths(tmp_path / "run"), FAST)
    [finding] = [f for f in result.findings if f.code == FindingCode.USERS_SET_ASIDE]
    assert "\x1b" not in finding.message and "\n" not in finding.message
    assert "\\x1b" in finding.message and "…" in finding.message  # repr, cut at 40 characters
    assert len(finding.message) < 300
    summary = Summary(run_id="r", status="warn", started_at=NOW, finished_at=NOW, config={},
                      findings=[finding])
    for render in _renderers():
        page = _Rendered()
        page.feed(render(verdict_markdown(summary)))
        assert not {"a", "img"} & set(page.tags)
    # the value is kept whole where nothing renders it
    assert pq.read_table(result.rejected_users)["value"].to_pylist() == [hostile]


@pytest.mark.parametrize("whole_file", ["missing_column", "wrong_type", "unreadable_file"])
def test_a_whole_file_problem_of_users_parquet_is_still_exit_2(simulated, tmp_path, capsys,
                                                                 whole_file):
    cohort = tmp_path / "cohort"
    shutil.copytree(simulated, cohort)
    users = pq.read_table(cohort / "users.parquet")
    if whole_file == "missing_column":
        pq.write_table(users.drop_columns(["timezone"]), cohort / "users.parquet")
    elif whole_file == "wrong_type":
        pq.write_table(users.set_column(0, "user_id", pa.array(range(users.num_rows))),
                       cohort / "users.parquet")
    else:
        (cohort / "users.parquet").write_bytes(b"PAR1 not a parquet file")
    code, _, err = cli(validate_argv(cohort, tmp_path / "run"), capsys)
    assert code == EXIT_USAGE
    assert f"rule {whole_file}" in err and "users.parquet" in err
    assert not (tmp_path / "run").exists()


def test_split_users_names_the_first_rule_each_row_breaks():
    table = pa.table({
        "user_id": ["a", "b", "b", "c", "", None, "e", "f", "g"],
        "age": [30.0, 1.0, 2.0, float("nan"), 5.0, 6.0, 121.0, None, 0.0],
        "sex": ["F", "M", "M", "X", "F", "F", "U", None, "U"],
        "timezone": ["UTC", "UTC", "UTC", "UTC", "UTC", "UTC", "Europe/Berlin", "Mars/Olympus",
                     "Pacific/Honolulu"]})
    split = split_users(table)
    assert split.usable["user_id"].to_pylist() == ["a", "g"]  # NaN age: unknown, usable
    assert list(zip(split.set_aside["user_id"].to_pylist(), split.set_aside["rule"].to_pylist(),
                    strict=True)) == [
        ("b", "duplicate_user"), ("b", "duplicate_user"), ("c", "unknown_sex"),
        ("", "missing_user_id"), (None, "missing_user_id"), ("e", "age_out_of_range"),
        ("f", "unknown_timezone")]  # f: its zone is checked before its (null) sex
    assert split.set_aside_ids == ["b", "c", "e", "f"]


def test_every_reader_of_users_parquet_skips_the_users_set_aside(tmp_path):
    path = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b", "b", "c"], "age": [1.0, 2.0, 3.0, 4.0],
                             "sex": ["F", "M", "M", "U"],
                             "timezone": ["UTC", "UTC", "UTC", "Mars/Olympus"]}), path)
    assert read_users(path)["user_id"].to_pylist() == ["a"]
    assert read_users(path, ["user_id", "timezone"], stage="labels").column_names == [
        "user_id", "timezone"]
    assert read_timezones(path) == {"a": "UTC"}
