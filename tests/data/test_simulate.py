"""The synthetic cohort: contract, determinism, layout, and the planted effects it documents.

One 40-user x 2-week cohort is simulated once per session; the planted magnitudes are checked
exactly on one hand-built user with and without each condition (same random streams).
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from stethoscope.flows.cli import main as cli_main
from stethoscope.schemas.devices import DEVICE_CATALOG
from stethoscope.schemas.errors import UsageError
from stethoscope.schemas.layout import CohortPaths
from stethoscope.schemas.tables import DEFAULT_CONDITIONS, LABELS, SENSOR_LOGS, SEXES, USERS
from stethoscope.tasks.cohorts.simulate import cohort as simulate
from stethoscope.tasks.cohorts.simulate.cohort import draw_user_profiles, simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig, SimulateResult
from stethoscope.tasks.cohorts.simulate.signals import (
    UserMinutes,
    UserProfile,
    minute_grid,
    simulate_user_minutes,
)

COHORT = SimulateConfig(users=40, weeks=2, seed=0, users_per_file=16)
MINUTES_PER_WEEK = 7 * 1440
# Magnitudes as documented in tasks.cohorts.simulate.cohort's docstring (and cited by the README).
HYPERTENSION_BPM = 6.0
GEN1_SLEEP_BIAS_BPM = 6.0


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> SimulateResult:
    return simulate_cohort(COHORT, tmp_path_factory.mktemp("simulate") / "cohort")


@pytest.fixture(scope="session")
def logs(cohort: SimulateResult) -> pd.DataFrame:
    """All sensor-log rows with the local hour and the device generation."""
    frame = pq.read_table(cohort.paths.sensor_logs).to_pandas()
    zones = pq.read_table(cohort.paths.users).to_pandas().set_index("user_id")["timezone"]
    frame["local_hour"] = -1
    for user_id, rows in frame.groupby("user_id").groups.items():
        local = frame.loc[rows, "timestamp"].dt.tz_convert(zones[user_id])
        frame.loc[rows, "local_hour"] = local.dt.hour.to_numpy()
    frame["generation"] = frame["device"].map(lambda key: DEVICE_CATALOG[key].generation)
    return frame


@pytest.fixture(scope="session")
def per_user(cohort: SimulateResult, logs: pd.DataFrame) -> pd.DataFrame:
    """One row per user: night (local 00:00-06:00) heart-rate statistics, labels, device."""
    stats = logs[logs["local_hour"] < 6].groupby("user_id")["heart_rate"].agg(
        night_median="median", night_diff_std=lambda hr: hr.diff().std())
    stats["gen1"] = logs.groupby("user_id")["generation"].min() == 1
    return stats.join(pq.read_table(cohort.paths.labels).to_pandas().set_index("user_id"))


def _profile(**changes: object) -> UserProfile:
    base = UserProfile(number=7, user_id="u00007", age=50.0, sex="F", timezone="Europe/Berlin",
                       devices=("apple_watch_series_6",), switch_day=None,
                       conditions=frozenset(), unknown_labels=frozenset())
    return dataclasses.replace(base, **changes)


def _minutes(profile: UserProfile) -> tuple[UserMinutes, np.ndarray]:
    """Two weeks of one user from a fixed stream, and each row's local hour."""
    minutes = simulate_user_minutes(profile, date(2024, 3, 4), 2, np.random.default_rng(11))
    stamps = pd.DatetimeIndex(minutes.timestamp_us * 1000).tz_localize("UTC")
    return minutes, stamps.tz_convert(profile.timezone).hour.to_numpy()


# --- contract and layout -----------------------------------------------------------------


def test_result_names_every_file(cohort: SimulateResult) -> None:
    assert (cohort.num_users, cohort.num_files) == (40, 3)
    assert [p.name for p in cohort.sensor_log_files] == [
        "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert sorted(cohort.paths.sensor_logs.iterdir()) == list(cohort.sensor_log_files)
    assert cohort.num_rows == sum(pq.read_metadata(p).num_rows for p in cohort.sensor_log_files)
    assert not [p for p in cohort.paths.root.parent.iterdir() if p.name.startswith(".")]


def test_every_table_has_its_contract_schema(cohort: SimulateResult) -> None:
    for path in cohort.sensor_log_files:
        assert pq.read_schema(path).equals(SENSOR_LOGS), path
    assert pq.read_schema(cohort.paths.users).equals(USERS)
    assert pq.read_schema(cohort.paths.labels).equals(LABELS)


def test_rows_sorted_unique_whole_minutes_one_file_per_user_chunk(cohort: SimulateResult) -> None:
    previous_last_user = ""
    for path in cohort.sensor_log_files:
        table = pq.read_table(path)
        users = np.asarray(table["user_id"].to_pylist())
        stamps = table["timestamp"].cast(pa.int64()).to_numpy()
        key_order = np.lexsort((stamps, users))
        assert (key_order == np.arange(len(users))).all(), f"{path.name} not sorted"
        same_user = users[1:] == users[:-1]
        assert (np.diff(stamps)[same_user] > 0).all(), f"{path.name}: duplicate timestamps"
        assert (stamps % 60_000_000 == 0).all()
        assert users[0] > previous_last_user  # users never span two files
        previous_last_user = users[-1]
    assert len(set(pq.read_table(cohort.paths.sensor_logs)["user_id"].to_pylist())) == 40


def test_values_are_plausible(logs: pd.DataFrame) -> None:
    assert logs["steps"].notna().all() and (logs["steps"] >= 0).all()
    assert logs["steps"].max() <= 250
    heart_rate = logs["heart_rate"].dropna()
    assert heart_rate.between(35, 220).all()
    assert logs["device"].isin(list(DEVICE_CATALOG)).all()


def test_users_span_dst_and_fixed_offset_timezones_ages_and_sexes(cohort: SimulateResult) -> None:
    users = pq.read_table(cohort.paths.users).to_pandas()
    assert users["user_id"].is_unique and users["age"].between(18, 85).all()
    assert set(users["sex"]) <= set(SEXES) and users["sex"].nunique() >= 2

    def observes_dst(zone: str) -> bool:
        january, july = (datetime(2024, m, 15, tzinfo=ZoneInfo(zone)) for m in (1, 7))
        return january.utcoffset() != july.utcoffset()

    dst = users["timezone"].map(observes_dst)
    assert dst.sum() >= 3 and (~dst).sum() >= 3


def test_rows_lie_within_local_weeks(cohort: SimulateResult, logs: pd.DataFrame) -> None:
    zones = pq.read_table(cohort.paths.users).to_pandas().set_index("user_id")["timezone"]
    span = logs.groupby("user_id")["timestamp"].agg(["min", "max"])
    for user_id, (first, last) in span.iterrows():
        zone = ZoneInfo(zones[user_id])
        assert first >= pd.Timestamp(datetime(2024, 3, 4, tzinfo=zone))
        assert last < pd.Timestamp(datetime(2024, 3, 18, tzinfo=zone))


def test_minute_grid_is_dst_correct() -> None:
    # New York springs forward on 2024-03-10, Berlin on 2024-03-31; Tokyo has no DST.
    assert minute_grid("America/New_York", date(2024, 3, 4), 2)[0].size == 2 * MINUTES_PER_WEEK - 60
    assert minute_grid("Europe/Berlin", date(2024, 3, 4), 4)[0].size == 4 * MINUTES_PER_WEEK - 60
    utc_s, local = minute_grid("Asia/Tokyo", date(2024, 3, 4), 1)
    assert utc_s.size == MINUTES_PER_WEEK and (local == np.arange(MINUTES_PER_WEEK)).all()
    assert utc_s[0] == int(datetime(2024, 3, 3, 15, tzinfo=ZoneInfo("UTC")).timestamp())
    _, local = minute_grid("America/New_York", date(2024, 3, 4), 2)
    assert sorted(set(np.diff(local))) == [1, 61]  # 02:00-03:00 local does not exist


def test_devices_generation1_share_and_switches(logs: pd.DataFrame) -> None:
    runs = logs.groupby("user_id")["device"].agg(lambda d: (d != d.shift()).sum())
    assert runs.max() <= 2  # a switch happens once, never back
    first_generation = logs.groupby("user_id")["generation"].first()
    assert 0.1 <= (first_generation == 1).mean() <= 0.4
    profiles = draw_user_profiles(SimulateConfig(users=2000))
    switched = [p for p in profiles if len(p.devices) == 2]
    assert 0.03 < len(switched) / 2000 < 0.1
    assert all(DEVICE_CATALOG[p.devices[1]].generation > 1 for p in switched)


def test_labels_follow_profiles_with_some_unknown(cohort: SimulateResult) -> None:
    labels = pq.read_table(cohort.paths.labels).to_pandas().set_index("user_id")
    for profile in draw_user_profiles(COHORT):
        for condition in DEFAULT_CONDITIONS:
            value = labels.loc[profile.user_id, condition]
            if condition in profile.unknown_labels:
                assert pd.isna(value)
            else:
                assert value == int(profile.has(condition))
    profiles = draw_user_profiles(SimulateConfig(users=1000))
    unknown = np.mean([len(p.unknown_labels) for p in profiles]) / len(DEFAULT_CONDITIONS)
    assert 0.02 < unknown < 0.07


def test_prevalence_rises_with_age() -> None:
    profiles = draw_user_profiles(SimulateConfig(users=3000, seed=5))
    ages = np.array([p.age for p in profiles])
    assert ages.min() >= 18 and ages.max() <= 85
    for condition in DEFAULT_CONDITIONS:
        has = np.array([p.has(condition) for p in profiles])
        assert has[ages >= 60].mean() > 1.3 * has[ages < 40].mean(), condition


# --- determinism -------------------------------------------------------------------------


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_same_seed_writes_byte_identical_files(cohort: SimulateResult, tmp_path: Path) -> None:
    again = simulate_cohort(COHORT, tmp_path / "again")
    assert _files(again.paths.root) == _files(cohort.paths.root)


def test_another_seed_gives_another_cohort(tmp_path: Path) -> None:
    small = {"users": 3, "weeks": 1}
    a = simulate_cohort(SimulateConfig(seed=1, **small), tmp_path / "a").paths
    b = simulate_cohort(SimulateConfig(seed=2, **small), tmp_path / "b").paths
    assert not pq.read_table(a.sensor_logs).equals(pq.read_table(b.sensor_logs))
    assert not pq.read_table(a.users).equals(pq.read_table(b.users))


def test_a_user_does_not_depend_on_cohort_size_or_chunking(
    cohort: SimulateResult, tmp_path: Path
) -> None:
    config = COHORT.model_copy(update={"users": 5, "users_per_file": 2})
    small = simulate_cohort(config, tmp_path / "small")
    assert small.num_files == 3
    first_five = pq.read_table(cohort.paths.sensor_logs).slice(0, small.num_rows)
    assert pq.read_table(small.paths.sensor_logs).equals(first_five)


# --- the signals and planted effects, seen in the cohort ----------------------------------


def test_circadian_pattern_follows_local_time(cohort: SimulateResult, logs: pd.DataFrame) -> None:
    zones = pq.read_table(cohort.paths.users).to_pandas().set_index("user_id")["timezone"]
    hourly = logs.assign(timezone=logs["user_id"].map(zones)).pivot_table(
        index="timezone", columns="local_hour", values="heart_rate", aggfunc="mean")
    assert len(hourly) >= 5
    assert (hourly[3] + 8 < hourly[15]).all(), hourly[[3, 15]]


def test_gaps_absent_rows_and_heart_rate_only_dropouts(cohort: SimulateResult, logs: pd.DataFrame) -> None:
    absent = 1 - len(logs) / (40 * 2 * MINUTES_PER_WEEK)
    assert 0.03 < absent < 0.25
    gaps = logs.groupby("user_id")["timestamp"].agg(lambda t: t.diff().max())
    assert (gaps > pd.Timedelta(minutes=30)).mean() > 0.9
    hr_only_missing = logs["heart_rate"].isna() & logs["steps"].notna()
    assert 0.005 < hr_only_missing.mean() < 0.1


def test_night_is_lower_and_steadier_than_day(logs: pd.DataFrame, per_user: pd.DataFrame) -> None:
    plain = per_user.index[(per_user["sleep_apnea"] == 0) & ~per_user["gen1"]]
    assert len(plain) >= 15
    new = logs[logs["user_id"].isin(plain)]
    night = new[new["local_hour"].between(1, 4)].groupby("user_id")["heart_rate"]
    day = new[new["local_hour"].between(9, 18)].groupby("user_id")["heart_rate"]
    assert (night.median() < day.median() - 5).mean() > 0.9
    assert (night.std() < day.std()).mean() > 0.9


def test_planted_effects_visible_in_cohort_statistics(per_user: pd.DataFrame) -> None:
    def median_of(column: str, group: str) -> tuple[float, float]:
        known = per_user[per_user[group].notna()]
        members = known[group].astype(bool)
        assert 3 <= members.sum() <= len(known) - 3, f"too few users to compare on {group}"
        return known.loc[members, column].median(), known.loc[~members, column].median()

    with_ht, without_ht = median_of("night_median", "hypertension")
    assert with_ht > without_ht + 3
    with_apnea, without_apnea = median_of("night_diff_std", "sleep_apnea")
    assert with_apnea > 1.3 * without_apnea
    gen1, newer = median_of("night_median", "gen1")
    assert gen1 > newer + 3
    gen1, newer = median_of("night_diff_std", "gen1")
    assert gen1 > 1.5 * newer


# --- the planted magnitudes, counterfactually ---------------------------------------------


def test_hypertension_adds_its_documented_bpm_everywhere() -> None:
    base, _ = _minutes(_profile())
    hypertensive, _ = _minutes(_profile(conditions=frozenset({"hypertension"})))
    assert (hypertensive.timestamp_us == base.timestamp_us).all()
    delta = (hypertensive.heart_rate - base.heart_rate)[~np.isnan(base.heart_rate)]
    assert (delta == HYPERTENSION_BPM).mean() > 0.99  # the rest: clipped


def test_sleep_apnea_makes_nights_more_variable_and_leaves_days_alone() -> None:
    (base, hour), (apnea, _) = _minutes(_profile()), _minutes(
        _profile(conditions=frozenset({"sleep_apnea"})))
    night, day = hour < 6, (hour >= 9) & (hour < 18)
    diff_std = [np.nanstd(np.diff(m.heart_rate[night])) for m in (base, apnea)]
    assert diff_std[1] > 1.5 * diff_std[0]
    assert np.nanmedian(apnea.heart_rate[day]) == np.nanmedian(base.heart_rate[day])


def test_diabetes_slows_recovery_after_activity() -> None:
    base, _ = _minutes(_profile())
    diabetic, _ = _minutes(_profile(conditions=frozenset({"diabetes"})))
    assert (diabetic.timestamp_us == base.timestamp_us).all()
    active = base.steps >= 80
    after_activity = np.zeros_like(active)
    for lag in range(1, 5):
        after_activity[lag:] |= active[:-lag]
    recovering = after_activity & (base.steps < 10)
    delta = diabetic.heart_rate - base.heart_rate
    assert np.nanmean(delta[recovering]) > 3
    assert abs(np.nanmedian(delta[base.steps == 0])) <= 1  # at rest, long after activity


def test_high_cholesterol_is_a_weak_activity_effect() -> None:
    base, _ = _minutes(_profile())
    high, _ = _minutes(_profile(conditions=frozenset({"high_cholesterol"})))
    assert 0.6 < high.steps.sum() / base.steps.sum() < 0.95
    still = (base.steps == 0) & (high.steps == 0)
    assert np.nanmedian(high.heart_rate[still] - base.heart_rate[still]) == 0


def test_generation1_device_biases_and_blurs_nights_only() -> None:
    newer, hour = _minutes(_profile())
    old, old_hour = _minutes(_profile(devices=("apple_watch_1st_gen",)))
    night = (hour >= 1) & (hour < 5)
    old_night = (old_hour >= 1) & (old_hour < 5)
    bias = np.nanmedian(old.heart_rate[old_night]) - np.nanmedian(newer.heart_rate[night])
    assert abs(bias - GEN1_SLEEP_BIAS_BPM) <= 1
    day, old_day = (hour >= 10) & (hour < 18), (old_hour >= 10) & (old_hour < 18)
    assert abs(np.nanmedian(old.heart_rate[old_day]) - np.nanmedian(newer.heart_rate[day])) <= 1
    noise = [np.nanstd(np.diff(m.heart_rate[h])) for m, h in ((newer, night), (old, old_night))]
    assert noise[1] > 2 * noise[0]
    assert np.isnan(old.heart_rate).mean() > np.isnan(newer.heart_rate).mean()


def test_a_switch_changes_the_device_at_local_midnight() -> None:
    profile = _profile(devices=("apple_watch_1st_gen", "apple_watch_series_9"), switch_day=5)
    minutes, _ = _minutes(profile)
    local = pd.DatetimeIndex(minutes.timestamp_us * 1000).tz_localize("UTC").tz_convert(
        profile.timezone)
    switched = local.date >= date(2024, 3, 9)
    assert (minutes.device_index == switched).all() and switched.any() and not switched.all()


# --- writing safely -----------------------------------------------------------------------


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="Fix") as caught:
        simulate_cohort(SimulateConfig(users=2, weeks=1), out)
    assert str(out) in str(caught.value)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert cli_main(["simulate", "--users", "2", "--weeks", "1", "--out", str(out)]) == 2


def test_writes_into_an_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    result = simulate_cohort(SimulateConfig(users=2, weeks=1), out)
    paths = CohortPaths(out)
    assert result.paths == paths and paths.users.exists() and paths.labels.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_a_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail_on_second_chunk(profiles: list[UserProfile], config: SimulateConfig) -> pa.Table:
        calls.append(len(profiles))
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(profiles, config)

    real = simulate.sensor_log_table
    monkeypatch.setattr(simulate, "sensor_log_table", fail_on_second_chunk)
    with pytest.raises(RuntimeError, match="disk full"):
        simulate_cohort(SimulateConfig(users=3, weeks=1, users_per_file=2), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_config_is_frozen_strict_and_starts_on_a_monday() -> None:
    config = SimulateConfig()
    assert (config.users, config.weeks, config.seed) == (50, 2, 0)
    assert config.start_date.weekday() == 0
    with pytest.raises(ValidationError):
        config.users = 3  # type: ignore[misc]
    with pytest.raises(ValidationError):
        SimulateConfig(user=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="Monday"):
        SimulateConfig(start_date=date(2024, 3, 5))
