"""The validation stage: each rule against a seeded defect, a malformed cohort, accounting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stethoscope.flows.cli import main
from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.tables import QUARANTINE, SENSOR_LOGS
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.validate.gate import validate_cohort

from .conftest import sensor_table

NOW = datetime(2024, 6, 1, tzinfo=UTC)
FAST = ValidateConfig(great_expectations=False, now=NOW)


def _with(table: pa.Table, row: int, **values) -> pa.Table:
    frame = table.to_pandas()
    for column, value in values.items():
        frame.loc[row, column] = value
    return pa.Table.from_pandas(frame, preserve_index=False).cast(SENSOR_LOGS)


def _run(cohort: Path, tmp_path: Path, config: ValidateConfig = FAST):
    run = RunPaths(tmp_path / "run")
    return validate_cohort(CohortPaths(cohort), run, config), run


def _quarantine(run: RunPaths) -> pa.Table:
    files = sorted(run.quarantine.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else QUARANTINE.empty_table()


def _clean(run: RunPaths) -> pa.Table:
    return pa.concat_tables([pq.read_table(f).cast(SENSOR_LOGS) for f in sorted(run.clean.glob("*.parquet"))])


@pytest.mark.parametrize(
    ("defect", "rule"),
    [
        ({"heart_rate": 400.0}, "heart_rate_out_of_range"),
        ({"heart_rate": 12.0}, "heart_rate_out_of_range"),
        ({"heart_rate": float("nan")}, "heart_rate_out_of_range"),
        ({"steps": -1}, "steps_negative"),
        ({"steps": 5000}, "steps_implausible"),
        ({"timestamp": datetime(2009, 12, 31, tzinfo=UTC)}, "timestamp_out_of_range"),
        ({"timestamp": NOW + timedelta(days=2)}, "timestamp_out_of_range"),
        ({"user_id": "stranger"}, "unknown_user"),
        ({"device": None}, "missing_value"),
    ],
)
def test_each_rule_quarantines_exactly_its_seeded_row(make_cohort, tmp_path, defect, rule):
    table = _with(sensor_table("u1", 500), 123, **defect) if "device" not in defect else \
        sensor_table("u1", 500).set_column(4, "device", pa.array(["apple_watch_series_4"] * 123 + [None]
                                                                 + ["apple_watch_series_4"] * 376))
    if "heart_rate" in defect and defect["heart_rate"] != defect["heart_rate"]:  # NaN, not null
        hr = table["heart_rate"].to_numpy().copy()
        hr[123] = np.nan
        table = table.set_column(2, "heart_rate", pa.array(hr, pa.float64(), from_pandas=False))
    cohort = make_cohort({"a.parquet": table}, users=["u1"])
    result, run = _run(cohort, tmp_path)
    quarantined = _quarantine(run)
    assert quarantined.column("rule").to_pylist() == [rule]
    assert quarantined.column("source_file").to_pylist() == ["a.parquet"]
    assert quarantined.column("source_row").to_pylist() == [123]
    assert (result.rows_in, result.rows_clean, result.rows_quarantined) == (500, 499, 1)


def test_null_heart_rate_and_steps_are_clean(make_cohort, tmp_path):
    table = sensor_table("u1", 300)
    table = table.set_column(2, "heart_rate", pc.if_else(pa.array(np.arange(300) % 3 == 0), None, table["heart_rate"]))
    table = table.set_column(3, "steps", pc.if_else(pa.array(np.arange(300) % 5 == 0), None, table["steps"]))
    result, _ = _run(make_cohort({"a.parquet": table}, users=["u1"]), tmp_path)
    assert result.rows_quarantined == 0


def test_duplicates_keep_the_first_occurrence(make_cohort, tmp_path):
    table = sensor_table("u1", 200)
    doubled = pa.concat_tables([table, table.slice(50, 10)])
    result, run = _run(make_cohort({"a.parquet": doubled}, users=["u1"]), tmp_path)
    quarantined = _quarantine(run)
    assert set(quarantined.column("rule").to_pylist()) == {"duplicate_timestamp"}
    assert sorted(quarantined.column("source_row").to_pylist()) == list(range(200, 210))
    assert result.rows_clean == 200


@pytest.mark.parametrize("string_type", [pa.string(), pa.large_string(), pa.dictionary(pa.int8(), pa.string())])
def test_clean_files_are_exactly_sensor_logs_whatever_the_string_encoding(make_cohort, tmp_path, string_type):
    table = pa.concat_tables([sensor_table("u2", 100, seed=1), sensor_table("u1", 100)])  # unsorted
    table = _with(table, 5, heart_rate=400.0)
    strings = pa.schema([f.with_type(string_type) if f.type == pa.string() else f for f in SENSOR_LOGS])
    result, run = _run(make_cohort({"a.parquet": table.cast(strings)}, users=["u1", "u2"]), tmp_path)
    assert (result.rows_clean, result.rows_quarantined, result.users) == (199, 1, 2)
    (clean_file,) = run.clean.glob("*.parquet")
    assert pq.read_schema(clean_file).equals(SENSOR_LOGS)
    clean = pq.read_table(clean_file)
    assert clean["user_id"].to_pylist() == ["u1"] * 100 + ["u2"] * 99
    assert _quarantine(run)["source_row"].to_pylist() == [5]


def test_malformed_cohort_reconciles_and_names_everything(make_cohort, tmp_path):
    good = sensor_table("u1", 400)
    ns_good = sensor_table("u2", 400, seed=2).cast(pa.schema(
        [pa.field("user_id", pa.string()), pa.field("timestamp", pa.timestamp("ns", tz="UTC")),
         pa.field("heart_rate", pa.float32()), pa.field("steps", pa.int32()), pa.field("device", pa.string())]))
    unknown_device = sensor_table("u3", 100, device="acme_band_9000", seed=3)
    naive = sensor_table("u4", 50).set_column(1, "timestamp", sensor_table("u4", 50)["timestamp"].cast(pa.timestamp("us")))
    missing = sensor_table("u4", 50).drop_columns(["steps"])
    wrong = sensor_table("u4", 50).set_column(3, "steps", sensor_table("u4", 50)["steps"].cast(pa.float64()))
    mixed = _with(_with(sensor_table("u5", 300, seed=5), 10, heart_rate=999.0), 20, user_id="nobody")
    cohort = make_cohort({
        "good.parquet": good, "ns_good.parquet": ns_good, "device.parquet": unknown_device,
        "naive.parquet": naive, "missing.parquet": missing, "wrong.parquet": wrong,
        "corrupt.parquet": b"PAR1 this is not parquet", "empty.parquet": SENSOR_LOGS.empty_table(),
        "mixed.parquet": mixed,
    }, users=["u1", "u2", "u3", "u4", "u5"])
    result, run = _run(cohort, tmp_path, ValidateConfig(great_expectations=False, now=NOW,
                                                          max_quarantine_share=0.5))
    report = json.loads(run.validation_report.read_text())
    assert result.rows_in == result.rows_clean + result.rows_quarantined == 400 + 400 + 100 + 300
    assert result.rows_quarantined == 2
    files = {f["file"]: f for f in report["files"]}
    assert {n for n, f in files.items() if f["status"] == "rejected"} == {
        "naive.parquet", "missing.parquet", "wrong.parquet", "corrupt.parquet"}
    assert files["empty.parquet"]["status"] == "empty"
    assert files["mixed.parquet"]["rules"] == {"heart_rate_out_of_range": 1, "unknown_user": 1}
    problems = {f["file"]: f["problems"][0] for f in report["files"] if f["problems"]}
    assert problems["naive.parquet"]["rule"] == "naive_timestamp"
    assert problems["naive.parquet"]["column"] == "timestamp"
    assert problems["missing.parquet"] == problems["missing.parquet"] | {"rule": "missing_column", "column": "steps"}
    assert problems["wrong.parquet"]["rule"] == "wrong_type" and problems["wrong.parquet"]["column"] == "steps"
    assert "Int64" in problems["wrong.parquet"]["fix"]
    assert problems["corrupt.parquet"]["rule"] == "unreadable_file"
    # rejected files are kept, byte for byte
    for name in ("naive.parquet", "corrupt.parquet"):
        assert (run.rejected_files / name).read_bytes() == (cohort / "sensor_logs" / name).read_bytes()
    assert result.unknown_devices == {"acme_band_9000": 100}
    assert any("acme_band_9000" in w for w in result.warnings)
    assert report["rows_in_rejected_files"] == 150  # corrupt.parquet: unknown
    # the ns/float32/int32 file was accepted and normalised to the canonical schema
    clean = _clean(run)
    assert clean.schema.equals(SENSOR_LOGS)
    assert set(clean["user_id"].to_pylist()) == {"u1", "u2", "u3", "u5"}


def test_quarantine_share_above_the_bound_fails_with_the_rules(make_cohort, tmp_path):
    table = sensor_table("u1", 100)
    frame = table.to_pandas()
    frame.loc[:9, "heart_rate"] = 500.0
    bad = pa.Table.from_pandas(frame, preserve_index=False).cast(SENSOR_LOGS)
    with pytest.raises(DataContractError) as err:
        _run(make_cohort({"a.parquet": bad}, users=["u1"]), tmp_path)
    assert "10.00%" in str(err.value) and "heart_rate_out_of_range" in str(err.value)
    # everything was still written, for a person to look at
    assert (tmp_path / "run" / "validation" / "report.json").exists()


def test_users_sharing_files_end_in_one_clean_file_sorted(make_cohort, tmp_path):
    """Date-partitioned logs: every file holds every user. Cross-file duplicates are caught."""
    week1 = pa.concat_tables([sensor_table("u1", 300), sensor_table("u2", 300, seed=1)])
    week2 = pa.concat_tables([sensor_table("u2", 300, seed=1, start=datetime(2024, 3, 5, tzinfo=UTC)),
                              sensor_table("u1", 300, start=datetime(2024, 3, 5, tzinfo=UTC)),
                              sensor_table("u1", 300).slice(0, 5)])  # overlaps week1
    cohort = make_cohort({"day=1/a.parquet": week1, "day=2/b.parquet": week2}, users=["u1", "u2"])
    result, run = _run(cohort, tmp_path)
    quarantined = _quarantine(run)
    assert quarantined["rule"].to_pylist() == ["duplicate_timestamp"] * 5
    assert set(quarantined["source_file"].to_pylist()) == {"day=2/b.parquet"}
    clean_files = sorted(run.clean.glob("*.parquet"))
    assert len(clean_files) == 1
    clean = pq.read_table(clean_files[0])
    keys = list(zip(clean["user_id"].to_pylist(), clean["timestamp"].to_pylist(), strict=True))
    assert keys == sorted(keys) and len(set(keys)) == len(keys) == 1200


@pytest.mark.parametrize(("workers", "num_parts"), [(1, 2), (2, 4)])
def test_bucketed_units_give_the_same_answer(make_cohort, tmp_path, workers, num_parts):
    files = {f"f{i}.parquet": pa.concat_tables([sensor_table(f"u{j}", 1000, seed=j,
                                                              start=datetime(2024, 3, 4 + i, tzinfo=UTC))
                                                 for j in range(6)]) for i in range(3)}
    files["f0.parquet"] = _with(files["f0.parquet"], 7, heart_rate=300.0)
    cohort = make_cohort(files, users=[f"u{j}" for j in range(6)])
    whole = validate_cohort(CohortPaths(cohort), RunPaths(tmp_path / "whole"), FAST)
    small = ValidateConfig(great_expectations=False, now=NOW, max_rows_in_memory=10_000, workers=workers)
    bucketed, run = _run(cohort, tmp_path, small)
    assert (whole.rows_clean, whole.rows_quarantined) == (bucketed.rows_clean, bucketed.rows_quarantined) == (17999, 1)
    assert whole.users == bucketed.users == 6
    quarantined = _quarantine(run)
    assert (quarantined["source_file"].to_pylist(), quarantined["source_row"].to_pylist()) == (["f0.parquet"], [7])
    parts = [pq.read_table(f) for f in sorted(run.clean.glob("*.parquet"))]
    assert len(parts) == num_parts  # 18,000 rows in buckets of about 10,000 / workers rows
    users_per_part = [set(p["user_id"].to_pylist()) for p in parts]
    assert sum(len(u) for u in users_per_part) == len(set().union(*users_per_part)) == 6


def test_great_expectations_writes_data_docs_and_summarises(make_cohort, tmp_path):
    table = _with(sensor_table("u1", 2000), 3, heart_rate=300.0)
    result, run = _run(make_cohort({"a.parquet": table}, users=["u1"]), tmp_path,
                       ValidateConfig(now=NOW))
    report = json.loads(run.validation_report.read_text())
    suites = {s["suite"]: s for s in report["great_expectations"]["suites"]}
    assert suites["sensor_logs"]["success"] and suites["users"]["success"]
    assert suites["sensor_logs"]["evaluated"] == 10
    assert (run.data_docs / "index.html").exists()
    assert result.gx_success is True


def test_great_expectations_reports_a_broken_expectation(make_cohort, tmp_path):
    frame = sensor_table("u1", 1000).to_pandas()
    frame.loc[:99, "heart_rate"] = 300.0  # 10% out of range: the suite's `mostly` is 0.95
    table = pa.Table.from_pandas(frame, preserve_index=False).cast(SENSOR_LOGS)
    with pytest.raises(DataContractError):
        _run(make_cohort({"a.parquet": table}, users=["u1"]), tmp_path, ValidateConfig(now=NOW))
    report = json.loads((tmp_path / "run/validation/report.json").read_text())
    failed = report["great_expectations"]["suites"][0]["failed"]
    assert [(f["expectation"], f["column"]) for f in failed] == [
        ("expect_column_values_to_be_between", "heart_rate")]


def test_great_expectations_flags_users_missing_from_the_users_table(make_cohort, tmp_path):
    """The unknown-user expectation joins users.parquet instead of listing every user id."""
    table = pa.concat_tables([sensor_table("u1", 900), sensor_table("stranger", 100, seed=1)])
    with pytest.raises(DataContractError):
        _run(make_cohort({"a.parquet": table}, users=["u1"]), tmp_path, ValidateConfig(now=NOW))
    report = json.loads((tmp_path / "run/validation/report.json").read_text())
    suites = {s["suite"]: s for s in report["great_expectations"]["suites"]}
    failed = suites["sensor_logs"]["failed"]
    assert [(f["expectation"], f["column"], f["unexpected_count"]) for f in failed] == [
        ("expect_column_values_to_not_be_null", "users_timezone", 100)]


def test_a_users_table_without_one_usable_user_lists_every_problem(make_cohort, tmp_path):
    """Each bad row sets its user aside (docs/architecture.md §4.2); with no usable user left,
    no sensor row is clean: a contract error naming every rule the users broke."""
    cohort = make_cohort({"a.parquet": sensor_table("u1", 10)}, users=["u1"])
    pq.write_table(pa.table({"user_id": ["u1", "u1", "u2", "u3", "u4"],
                             "age": [30.0, 31.0, 40.0, 50.0, 200.0], "sex": ["F", "F", "M", "X", "U"],
                             "timezone": ["UTC", "UTC", "Mars/Olympus", "UTC", "UTC"]}),
                   cohort / "users.parquet")
    with pytest.raises(DataContractError, match="no usable sensor rows") as err:
        _run(cohort, tmp_path)
    rules = [p.rule for p in err.value.problems]
    assert rules == ["duplicate_user", "unknown_timezone", "unknown_sex", "age_out_of_range"]
    rejected = pq.read_table(tmp_path / "run" / "validation" / "rejected_users.parquet")
    assert rejected["user_id"].to_pylist() == ["u1", "u1", "u2", "u3", "u4"]
    assert set(_quarantine(RunPaths(tmp_path / "run"))["rule"].to_pylist()) == {"bad_user_metadata"}


def test_cli_exit_codes(make_cohort, tmp_path, capsys):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 100)}, users=["u1"])
    assert main(["validate", "--data", str(cohort), "--out", str(tmp_path / "ok"),
                 "--no-great-expectations"]) == 0
    assert "100 clean" in capsys.readouterr().out
    assert main(["validate", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r2")]) == 2
    assert "users.parquet" in capsys.readouterr().err


def test_relative_run_directory_works_with_great_expectations(make_cohort, tmp_path, monkeypatch):
    cohort = make_cohort({"a.parquet": sensor_table("u1", 300)}, users=["u1"])
    monkeypatch.chdir(tmp_path)
    result = validate_cohort(CohortPaths(cohort), RunPaths(Path("relative-run")), ValidateConfig(now=NOW))
    assert result.gx_success is True
    assert (tmp_path / "relative-run" / "validation" / "data_docs" / "index.html").exists()


FITBIT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fitbit"


@pytest.mark.skipif(not FITBIT.is_dir(), reason=f"real Fitbit exports not found at {FITBIT}")
def test_the_six_real_fitbit_users_import_and_validate_end_to_end(tmp_path):
    from stethoscope.tasks.cohorts.import_csv.config import ImportConfig
    from stethoscope.tasks.cohorts.import_csv.importer import import_csv_exports

    imported = import_csv_exports(FITBIT, tmp_path / "fitbit", ImportConfig(timezone="UTC"))
    result, run = _run(tmp_path / "fitbit", tmp_path, ValidateConfig(now=datetime.now(UTC)))
    print(f"\nFitbit cohort: {result.describe()}")
    assert result.rows_in == imported.num_rows == result.rows_clean + result.rows_quarantined
    assert result.users == 6 and not result.files_rejected
    assert result.quarantined_share < 0.01
    assert result.gx_success is True
    clean = _clean(run)
    assert clean["heart_rate"].drop_null().to_numpy().min() >= 25
