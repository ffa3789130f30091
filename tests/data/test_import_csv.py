"""import-csv: vendor CSV exports (naive local times, zipped or not) -> a cohort directory.

Hand-built exports in tmp_path pin each rule (DST gap and fall-back hour, cadences, column names,
metadata precedence); the six real Fitbit users of ../shared/data/fitbit are imported end to end.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from stethoscope.flows.cli import main
from stethoscope.schemas.errors import DataContractError, UsageError
from stethoscope.schemas.layout import CohortPaths
from stethoscope.schemas.tables import SENSOR_LOGS, USERS
from stethoscope.tasks.cohorts.import_csv.clock import drop_duplicate_instants, localise_wall_clock
from stethoscope.tasks.cohorts.import_csv.config import ImportConfig
from stethoscope.tasks.cohorts.import_csv.importer import import_csv_exports

FITBIT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fitbit"
VALUE_COLUMN = {"hr": "heartrate", "steps": "steps"}


def write_export(
    folder: Path, user: str, kind: str, times: list[str] | pd.Index, values: list | np.ndarray,
    *, zipped: bool = False, value_column: str | None = None,
) -> Path:
    """A vendor-style export: unnamed row index, user, datetime, value."""
    frame = pd.DataFrame({
        "user": user,
        "datetime": [str(t) for t in times],
        value_column or VALUE_COLUMN[kind]: values,
    })
    text = frame.to_csv(index=True)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{user}_{kind}.csv"
    if not zipped:
        (folder / name).write_text(text)
        return folder / name
    with zipfile.ZipFile(folder / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, text)
    return folder / f"{name}.zip"


def minutes(start: str, periods: int, freq: str = "1min") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=periods, freq=freq)


def read_logs(out: Path, user: str) -> pd.DataFrame:
    return pq.read_table(CohortPaths(out).sensor_logs / f"{user}.parquet").to_pandas()


def run_import(source: Path, out: Path, **options) -> object:
    return import_csv_exports(source, out, ImportConfig(**options))


# --- daylight saving time ------------------------------------------------------------------


def test_spring_forward_gap_is_shifted_forward_by_the_gap_and_counted(tmp_path: Path) -> None:
    # Europe/Berlin, 2021-03-28: 02:00-02:59 does not exist. A device whose clock had not yet
    # moved writes 02:xx; read with the offset before the gap (+01:00), 02:30 is 01:30 UTC.
    local = ["2021-03-28 01:58:00", "2021-03-28 01:59:00", "2021-03-28 02:00:00",
             "2021-03-28 02:30:00", "2021-03-28 03:31:00"]
    write_export(tmp_path / "src", "u1", "hr", local, [60, 61, 62, 63, 64])
    result = run_import(tmp_path / "src", tmp_path / "out", timezone="Europe/Berlin")

    logs = read_logs(tmp_path / "out", "u1")
    expected = pd.to_datetime(["2021-03-28 00:58", "2021-03-28 00:59", "2021-03-28 01:00",
                               "2021-03-28 01:30", "2021-03-28 01:31"], utc=True)
    assert list(logs["timestamp"]) == list(expected)
    assert logs["heart_rate"].tolist() == [60, 61, 62, 63, 64]
    (user,) = result.users
    assert user.num_nonexistent == 2
    assert user.num_ambiguous_resolved == user.num_ambiguous_unresolved == 0


def test_fall_back_hour_is_resolved_by_order(tmp_path: Path) -> None:
    # America/New_York, 2021-11-07: a minute series from 04:00Z to 07:59Z reads 00:00..01:59
    # EDT, then 01:00..02:59 EST on the wall clock: the hour 01:xx passes twice.
    utc = minutes("2021-11-07 04:00", 240).tz_localize("UTC")
    wall = utc.tz_convert("America/New_York").tz_localize(None)
    assert wall.duplicated().sum() == 60  # the export really repeats the hour
    write_export(tmp_path / "src", "u1", "hr", wall, np.arange(240) % 100 + 50, zipped=True)
    write_export(tmp_path / "src", "u1", "steps", wall[::2], np.arange(120))
    result = run_import(tmp_path / "src", tmp_path / "out", timezone="America/New_York")

    logs = read_logs(tmp_path / "out", "u1")
    assert logs["timestamp"].is_monotonic_increasing and logs["timestamp"].is_unique
    assert list(logs["timestamp"]) == list(utc)
    assert logs["steps"].notna().sum() == 120
    (user,) = result.users
    assert {c.channel: c.num_ambiguous_resolved for c in user.channels} == {
        "heart_rate": 120, "steps": 60}
    assert user.num_ambiguous_unresolved == 0 and user.num_duplicates == 0


def test_ambiguous_without_a_second_pass_is_read_as_the_first_and_counted() -> None:
    wall = np.array(["2021-11-07T00:59", "2021-11-07T01:00", "2021-11-07T01:30",
                     "2021-11-07T02:00"], dtype="datetime64[us]")
    times = localise_wall_clock(wall, "America/New_York")
    assert (times.num_ambiguous_resolved, times.num_ambiguous_unresolved) == (0, 2)
    got = pd.to_datetime(times.utc_us, unit="us", utc=True)
    assert list(got.strftime("%H:%M")) == ["04:59", "05:00", "05:30", "07:00"]  # 01:xx as EDT


def test_ambiguous_out_of_order_rows_are_counted_never_raised() -> None:
    # Two backward steps inside the repeated hour: order cannot tell the passes apart.
    wall = np.array(["2021-11-07T01:10", "2021-11-07T01:05", "2021-11-07T01:20",
                     "2021-11-07T01:15"], dtype="datetime64[us]")
    times = localise_wall_clock(wall, "America/New_York")
    assert (times.num_ambiguous_resolved, times.num_ambiguous_unresolved) == (0, 4)
    assert times.num_nonexistent == 0


def test_duplicate_instants_keep_the_first_row_in_file_order() -> None:
    keep, num_duplicates = drop_duplicate_instants(np.array([30, 10, 30, 20, 10]))
    assert keep.tolist() == [1, 3, 0] and num_duplicates == 2


# --- files, cadences, columns --------------------------------------------------------------


def test_zipped_and_plain_exports_import_alike(tmp_path: Path) -> None:
    times = minutes("2021-06-01 08:00", 30)
    for zipped, folder in ((True, "zipped"), (False, "plain")):
        write_export(tmp_path / folder, "u1", "hr", times, np.arange(30) + 60, zipped=zipped)
        write_export(tmp_path / folder, "u1", "steps", times, np.arange(30), zipped=not zipped)
        run_import(tmp_path / folder, tmp_path / f"out_{folder}")
    zipped = read_logs(tmp_path / "out_zipped", "u1")
    plain = read_logs(tmp_path / "out_plain", "u1")
    assert len(zipped) == 30
    pd.testing.assert_frame_equal(zipped, plain)


def test_five_second_heart_rate_and_minute_steps_are_kept_as_they_are(tmp_path: Path) -> None:
    write_export(tmp_path / "src", "u1", "hr", minutes("2021-06-01 08:00", 120, "5s"),
                 np.full(120, 80))
    write_export(tmp_path / "src", "u1", "steps", minutes("2021-06-01 08:00", 10), np.arange(10))
    result = run_import(tmp_path / "src", tmp_path / "out")

    logs = read_logs(tmp_path / "out", "u1")
    assert len(logs) == 120 + 10 - 10  # the 10 minute marks of the 10 min hold both
    both = logs.dropna(subset=["heart_rate", "steps"])
    assert both["timestamp"].dt.second.eq(0).all() and len(both) == 10
    hr_gaps = logs.dropna(subset=["heart_rate"])["timestamp"].diff().dropna().unique()
    assert list(hr_gaps) == [pd.Timedelta("5s")]
    assert logs["steps"].isna().sum() == 110
    assert (result.users[0].num_heart_rate, result.users[0].num_steps) == (120, 10)


def test_tolerated_column_names_are_read(tmp_path: Path) -> None:
    times = minutes("2021-06-01 08:00", 3)
    write_export(tmp_path / "src", "u1", "hr", times, [70, 71, 72], value_column="Heart Rate")
    write_export(tmp_path / "src", "u1", "steps", times, [1, 2, 3], value_column="value")
    run_import(tmp_path / "src", tmp_path / "out")
    logs = read_logs(tmp_path / "out", "u1")
    assert logs["heart_rate"].tolist() == [70, 71, 72] and logs["steps"].tolist() == [1, 2, 3]


def test_missing_column_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    times = minutes("2021-06-01 08:00", 3)
    write_export(tmp_path / "src", "u1", "hr", times, [70, 71, 72])
    bad = write_export(tmp_path / "src", "u2", "steps", times, [1, 2, 3], value_column="count")
    with pytest.raises(DataContractError) as caught:
        run_import(tmp_path / "src", tmp_path / "out")
    message = str(caught.value)
    assert str(bad) in message and "'steps'" in message and "rename the column" in message
    assert caught.value.problems[0].rule == "missing_column"
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "src"]  # no staging directory left behind


def test_ambiguous_column_names_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "u1_hr.csv").write_text("datetime,heart_rate,value\n2021-06-01 08:00:00,70,71\n")
    with pytest.raises(DataContractError, match="could all be the value column"):
        run_import(folder, tmp_path / "out")


def test_bad_values_name_file_and_column_for_every_broken_file(tmp_path: Path) -> None:
    times = ["2021-06-01 08:00:00", "2021-06-01 08:01:00"]
    write_export(tmp_path / "src", "u1", "hr", ["06/01/2021 08:00", "06/01/2021 08:01"], [70, 71])
    write_export(tmp_path / "src", "u2", "steps", times, [1.5, 2])
    write_export(tmp_path / "src", "u3", "hr", times, [70, 71])
    with pytest.raises(DataContractError) as caught:
        run_import(tmp_path / "src", tmp_path / "out")
    rules = {(Path(p.file).name, p.column, p.rule) for p in caught.value.problems}
    assert rules == {("u1_hr.csv", "datetime", "unparsable_value"),
                     ("u2_steps.csv", "steps", "bad_steps")}
    assert not (tmp_path / "out").exists()


def test_a_user_with_one_file_gets_the_other_channel_null(tmp_path: Path) -> None:
    write_export(tmp_path / "src", "u0", "hr", [], [])  # a header only: no samples, said so
    write_export(tmp_path / "src", "u1", "steps", minutes("2021-06-01 08:00", 5), [0, 1, 2, 3, 4])
    result = run_import(tmp_path / "src", tmp_path / "out")
    logs = read_logs(tmp_path / "out", "u1")
    assert logs["heart_rate"].isna().all() and logs["steps"].tolist() == [0, 1, 2, 3, 4]
    assert {u.profile.user_id: u.missing_channels for u in result.users} == {
        "u0": ("steps",), "u1": ("heart_rate",)}
    assert "u1 has no heart_rate export" in result.describe()
    assert "u0 has no samples" in result.describe()
    assert read_logs(tmp_path / "out", "u0").empty


def test_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    times = ["2021-06-01 08:00:00", "2021-06-01 08:01:00", "2021-06-01 08:00:00"]
    write_export(tmp_path / "src", "u1", "hr", times, [70, 71, 99])
    result = run_import(tmp_path / "src", tmp_path / "out")
    assert read_logs(tmp_path / "out", "u1")["heart_rate"].tolist() == [70, 71]
    assert result.users[0].num_duplicates == 1


# --- metadata and the output directory -----------------------------------------------------


def test_users_csv_gives_metadata_and_options_take_precedence(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for user in ("u1", "u2", "u3"):
        write_export(src, user, "hr", ["2021-07-01 12:00:00"], [70])
    users_csv = tmp_path / "users.csv"
    users_csv.write_text(
        "user_id,timezone,device,age,sex\n"
        "u1,Europe/Berlin,apple_watch_series_4,40,F\n"
        "u2,America/New_York,,,m\n"
        "unused,UTC,,,\n"
    )
    run_import(src, tmp_path / "a", users_csv=users_csv)
    users = pq.read_table(CohortPaths(tmp_path / "a").users)
    assert users.schema.equals(USERS)
    assert users.to_pylist() == [
        {"user_id": "u1", "age": 40.0, "sex": "F", "timezone": "Europe/Berlin"},
        {"user_id": "u2", "age": None, "sex": "M", "timezone": "America/New_York"},
        {"user_id": "u3", "age": None, "sex": "U", "timezone": "UTC"},
    ]
    assert read_logs(tmp_path / "a", "u1")["device"].tolist() == ["apple_watch_series_4"]
    assert read_logs(tmp_path / "a", "u2")["device"].tolist() == ["fitbit_charge_4"]
    noon_utc = {u: read_logs(tmp_path / "a", u)["timestamp"][0].hour for u in ("u1", "u2", "u3")}
    assert noon_utc == {"u1": 10, "u2": 16, "u3": 12}

    result = run_import(src, tmp_path / "b", users_csv=users_csv, timezone="Asia/Tokyo",
                        device="garmin_fenix_7", age=33.0, sex="U")
    users = pq.read_table(CohortPaths(tmp_path / "b").users).to_pylist()
    assert {(u["timezone"], u["age"], u["sex"]) for u in users} == {("Asia/Tokyo", 33.0, "U")}
    assert {p.device for p in (u.profile for u in result.users)} == {"garmin_fenix_7"}
    assert read_logs(tmp_path / "b", "u1")["timestamp"][0].hour == 3


def test_users_csv_problems_are_listed_at_once(tmp_path: Path) -> None:
    write_export(tmp_path / "src", "u1", "hr", ["2021-07-01 12:00:00"], [70])
    users_csv = tmp_path / "users.csv"
    users_csv.write_text("user_id,timezone,age,sex\nu1,Europe/Berln,-3,X\n")
    with pytest.raises(DataContractError) as caught:
        run_import(tmp_path / "src", tmp_path / "out", users_csv=users_csv)
    assert [p.rule for p in caught.value.problems] == ["unknown_timezone", "bad_age", "bad_sex"]
    users_csv.write_text("user_id,tz\nu1,UTC\n")
    with pytest.raises(DataContractError, match="unknown: \\['tz'\\]"):
        run_import(tmp_path / "src", tmp_path / "out", users_csv=users_csv)


def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    write_export(tmp_path / "src", "u1", "hr", ["2021-07-01 12:00:00"], [70])
    with pytest.raises(UsageError, match="'Mars/Olympus' is not an IANA timezone"):
        run_import(tmp_path / "src", tmp_path / "out", timezone="Mars/Olympus")


def test_refuses_a_non_empty_out_and_fills_an_empty_one(tmp_path: Path) -> None:
    write_export(tmp_path / "src", "u1", "hr", ["2021-07-01 12:00:00"], [70])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="refusing to write"):
        run_import(tmp_path / "src", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    run_import(tmp_path / "src", tmp_path / "empty")
    written = sorted(p.name for p in (tmp_path / "empty").iterdir())
    assert written == ["sensor_logs", "users.parquet"]


def test_cli_imports_and_exits_2_on_a_non_empty_out(tmp_path: Path, capsys) -> None:
    write_export(tmp_path / "src", "u1", "hr", ["2021-07-01 12:00:00"], [70])
    argv = ["import-csv", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
            "--timezone", "Europe/Berlin", "--sex", "F"]
    assert main(argv) == 0
    assert "1 users, 1 rows" in capsys.readouterr().out
    assert main(argv) == 2
    assert "refusing to write" in capsys.readouterr().err


# --- the real Fitbit exports ---------------------------------------------------------------


def _union_of_timestamps(user: str) -> int:
    stamps = [pd.to_datetime(pd.read_csv(FITBIT / f"{user}_{kind}.csv.zip",
                                         usecols=["datetime"])["datetime"])
              for kind in ("hr", "steps")]
    return len(pd.Index(stamps[0]).union(pd.Index(stamps[1])).unique())


@pytest.mark.skipif(not FITBIT.is_dir(), reason=f"real Fitbit exports not found at {FITBIT}")
def test_real_fitbit_users_import_end_to_end(tmp_path: Path) -> None:
    users_csv = tmp_path / "users.csv"
    users_csv.write_text("user_id,sex\nA3OU183,F\n")
    result = run_import(FITBIT, tmp_path / "cohort", users_csv=users_csv)
    print(f"\n{result.describe().splitlines()[0]}")
    for user in result.users:
        print(f"  {user.describe()}")

    cohort = CohortPaths(tmp_path / "cohort")
    assert [u.profile.user_id for u in result.users] == sorted(
        p.name.split("_")[0] for p in FITBIT.glob("*_hr.csv.zip"))
    assert len(result.users) == 6 and not result.warnings
    for user in result.users:
        table = pq.read_table(cohort.sensor_logs / f"{user.profile.user_id}.parquet")
        assert table.schema.equals(SENSOR_LOGS)
        logs = table.to_pandas()
        assert len(logs) == user.num_rows == _union_of_timestamps(user.profile.user_id)
        assert logs["timestamp"].is_monotonic_increasing and logs["timestamp"].is_unique
        assert logs["heart_rate"].dropna().between(46, 194).all()
        assert logs["steps"].dropna().between(0, 173).all()
        assert (logs["device"] == "fitbit_charge_4").all()
    all_logs = pq.read_table(cohort.sensor_logs).to_pandas()
    assert (all_logs["heart_rate"].min(), all_logs["heart_rate"].max()) == (46, 194)
    assert all_logs["steps"].max() == 173
    users = pq.read_table(cohort.users)
    assert users.schema.equals(USERS) and users.num_rows == 6
    assert users.to_pandas().set_index("user_id")["sex"].to_dict()["A3OU183"] == "F"
