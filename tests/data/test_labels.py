"""The user-week table: exact values on hand-built logs, and every target against an
independent plain-pandas computation on a simulated cohort."""

from __future__ import annotations

import pickle
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.tables import SENSOR_LOGS, USER_WEEK_TARGETS, USER_WEEKS, USERS
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.labels.user_weeks import build_user_weeks

TEN_MINUTES = pd.Timedelta(minutes=10)


# --- hand-built clean logs -----------------------------------------------------------------

def logs(user: str, utc: pd.DatetimeIndex, heart_rate, steps=0,
         device: str = "apple_watch_series_4") -> pd.DataFrame:
    n = len(utc)
    return pd.DataFrame({
        "user_id": user, "timestamp": utc.tz_convert("UTC"),
        "heart_rate": pd.array(np.broadcast_to(heart_rate, n), dtype="Float64"),
        "steps": pd.array(np.broadcast_to(steps, n), dtype="Int64"),
        "device": np.broadcast_to(np.asarray(device, dtype=object), n),
    })


def every(start: str, end: str, step: pd.Timedelta = TEN_MINUTES, tz: str = "UTC"):
    """Instants from local `start` (inclusive) to local `end` (exclusive) every `step` of real
    time, as UTC."""
    first, last = pd.Timestamp(start, tz=tz), pd.Timestamp(end, tz=tz)
    return pd.date_range(first.tz_convert("UTC"), last.tz_convert("UTC"), freq=step,
                         inclusive="left")


def write_clean(root: Path, frames: list[pd.DataFrame], timezones: dict[str, str],
                users_per_file: int = 100) -> tuple[Path, Path]:
    """Clean files the way validation writes them (sorted, whole users) and a users table."""
    df = pd.concat(frames).sort_values(["user_id", "timestamp"], kind="stable")
    clean = root / "clean"
    clean.mkdir(parents=True, exist_ok=True)
    ids = sorted(df["user_id"].unique())
    for number in range(0, len(ids), users_per_file):
        part = df[df["user_id"].isin(ids[number:number + users_per_file])]
        table = pa.Table.from_pandas(part, preserve_index=False).cast(SENSOR_LOGS)
        pq.write_table(table, clean / f"part-{number:05d}.parquet")
    users = root / "users.parquet"
    pq.write_table(pa.table({
        "user_id": list(timezones), "age": [40.0 + i for i in range(len(timezones))],
        "sex": ["F", "M", "U"] * (len(timezones) // 3) + ["F", "M"][: len(timezones) % 3],
        "timezone": list(timezones.values())}, schema=USERS), users)
    return clean, users


def user_weeks(tmp_path: Path, frames: list[pd.DataFrame], timezones: dict[str, str],
               **config) -> pd.DataFrame:
    clean, users = write_clean(tmp_path, frames, timezones)
    out = tmp_path / "labels" / "user_weeks.parquet"
    result = build_user_weeks(clean, users, out, LabelsConfig(**config))
    table = pq.read_table(out)
    assert table.schema.equals(USER_WEEKS)
    assert result.num_user_weeks == table.num_rows
    return table.to_pandas().set_index(["user_id", "week_start"])


def alternating(times: pd.DatetimeIndex, low: float, high: float) -> np.ndarray:
    return np.where(np.arange(len(times)) % 2 == 0, low, high)


def windowed_heart_rate(utc: pd.DatetimeIndex, tz: str) -> np.ndarray:
    """Day [08, 20) alternates 60/80 (std 10), night [00, 06) 50/54 (std 2), else 100; per
    local date, so that every window holds as many lows as highs."""
    local = utc.tz_convert(tz)
    hour = local.hour + local.minute / 60
    hr = np.full(len(utc), 100.0)
    for lo_h, hi_h, low, high in ((8, 20, 60.0, 80.0), (0, 6, 50.0, 54.0)):
        inside = (hour >= lo_h) & (hour < hi_h)
        rank = pd.Series(inside.astype(int)).groupby(local.date).cumsum().to_numpy()
        hr[inside] = np.where(rank[inside] % 2 == 1, low, high)
    return hr


# --- exact values --------------------------------------------------------------------------

def test_dst_weeks_are_167_and_169_hours_with_exact_targets(tmp_path):
    tz = "Europe/Berlin"  # spring forward Sun 2024-03-31 02:00, fall back Sun 2024-10-27 03:00
    spring = every("2024-03-25", "2024-04-01", tz=tz)
    autumn = every("2024-10-21", "2024-10-28", tz=tz)
    frames = [logs("berlin", t, windowed_heart_rate(t, tz), steps=1) for t in (spring, autumn)]
    weeks = user_weeks(tmp_path, frames, {"berlin": tz})

    march = weeks.loc[("berlin", date(2024, 3, 25))]
    assert march.week_start_utc == pd.Timestamp("2024-03-24 23:00", tz="UTC")
    assert march.week_end_utc == pd.Timestamp("2024-03-31 22:00", tz="UTC")  # 167 h
    assert march.num_samples == 167 * 6
    assert march.coverage == 167 * 6 / 4096  # 10-minute samples, ~147 s bins: one per bin
    # A fixed UTC+1 offset would put Sunday 06:00-07:00 CEST (HR 100) in the night window.
    assert march.hr_std_day_minus_night == pytest.approx(10.0 - 2.0, abs=1e-9)
    assert march.mean_daily_steps == pytest.approx(167 * 6 / 7)

    october = weeks.loc[("berlin", date(2024, 10, 21))]
    assert october.week_end_utc - october.week_start_utc == pd.Timedelta(hours=169)
    assert october.num_samples == 169 * 6
    assert october.hr_std_day_minus_night == pytest.approx(8.0, abs=1e-9)
    assert len(weeks) == 2


def test_users_at_utc_plus_13_and_minus_10_get_their_local_weeks(tmp_path):
    utc = every("2024-03-10", "2024-03-11")  # Sunday, UTC
    hour = utc.hour
    hr = np.where((hour >= 10) & (hour < 16), alternating(utc, 50, 54), alternating(utc, 60, 80))
    frames = [logs("tonga", utc, hr), logs("hawaii", utc, hr)]
    weeks = user_weeks(tmp_path, frames, {"tonga": "Pacific/Tongatapu",
                                          "hawaii": "Pacific/Honolulu"})
    # Tongatapu (UTC+13): Sunday 13:00 to Monday 13:00 local -> two weeks.
    assert weeks.loc[("tonga", date(2024, 3, 4))].num_samples == 11 * 6
    monday = weeks.loc[("tonga", date(2024, 3, 11))]
    assert monday.num_samples == 13 * 6
    assert monday.week_start_utc == pd.Timestamp("2024-03-10 11:00", tz="UTC")
    # Its night (Monday 00:00-06:00 local = UTC 11:00-17:00): 30 samples 50/54 then 6 of 60/80.
    night = np.std([50.0, 54.0] * 15 + [60.0, 80.0] * 3)
    assert monday.hr_std_day_minus_night == pytest.approx(10.0 - night, abs=1e-9)
    # Honolulu (UTC-10): Saturday 14:00 to Sunday 14:00 local, one week; night = UTC 10-16.
    hawaii = weeks.loc[("hawaii", date(2024, 3, 4))]
    assert hawaii.num_samples == 144
    assert hawaii.week_start_utc == pd.Timestamp("2024-03-04 10:00", tz="UTC")
    assert hawaii.hr_std_day_minus_night == pytest.approx(10.0 - 2.0, abs=1e-9)
    assert len(weeks) == 3


@pytest.mark.parametrize("night_samples", [29, 30])
def test_a_window_with_too_few_samples_gives_null(tmp_path, night_samples):
    day = every("2024-05-06 08:00", "2024-05-06 13:00")  # 30 samples
    night = every("2024-05-07 00:00", "2024-05-07 06:00")[:night_samples]
    frames = [logs("u", day, alternating(day, 60, 80)), logs("u", night, 55.0)]
    row = user_weeks(tmp_path, frames, {"u": "UTC"}).loc[("u", date(2024, 5, 6))]
    if night_samples < 30:
        assert pd.isna(row.hr_std_day_minus_night)
    else:
        assert row.hr_std_day_minus_night == pytest.approx(10.0, abs=1e-9)


def test_min_window_samples_and_bounds_are_configuration(tmp_path):
    day = every("2024-05-06 10:00", "2024-05-06 10:50")  # 5 samples, 10:00-10:40
    night = every("2024-05-07 02:00", "2024-05-07 02:50")
    frames = [logs("u", day, [60.0, 80.0, 60.0, 80.0, 70.0]), logs("u", night, 50.0)]
    row = user_weeks(tmp_path, frames, {"u": "UTC"}, min_window_samples=4,
                     day_window=(10.0, 10.6), night_window=(22.0, 3.0)).iloc[0]
    # Day 10:00-10:36: 60, 80, 60, 80; night wraps midnight: 02:00-02:40, all 50.
    assert row.hr_std_day_minus_night == pytest.approx(10.0 - 0.0, abs=1e-9)


def test_a_week_spanning_a_month_and_a_year_boundary(tmp_path):
    tz = "America/New_York"
    first = every("2024-12-30", "2025-01-06", step=pd.Timedelta(hours=1), tz=tz)
    after = every("2025-01-06", "2025-01-06 03:00", step=pd.Timedelta(hours=1), tz=tz)
    frames = [logs("ny", first, 70.0, steps=np.arange(len(first))), logs("ny", after, 70.0)]
    weeks = user_weeks(tmp_path, frames, {"ny": tz})
    week = weeks.loc[("ny", date(2024, 12, 30))]
    assert week.num_samples == 168
    assert week.week_start_utc == pd.Timestamp("2024-12-30 05:00", tz="UTC")
    assert week.mean_daily_steps == pytest.approx(sum(range(168)) / 7)
    assert weeks.loc[("ny", date(2025, 1, 6))].num_samples == 3


def test_resting_heart_rate_and_recovery_minutes(tmp_path):
    minutes = every("2024-05-06", "2024-05-13", step=pd.Timedelta(minutes=1))
    hr = np.full(len(minutes), 60.0)
    steps = np.zeros(len(minutes), dtype=np.int64)

    def bout(at: str, after: list[float]) -> None:
        start = minutes.get_loc(pd.Timestamp(at, tz="UTC"))
        steps[start:start + 5], hr[start:start + 5] = 100, 120.0
        hr[start + 5:start + 5 + len(after)] = after

    # Recovered = HR <= resting (60) + 10, measured from the bout's last sample.
    bout("2024-05-06 10:00", [110, 90, 75, 68])  # 4 min
    bout("2024-05-07 10:00", [110, 100, 90, 80, 75, 70])  # 6 min
    bout("2024-05-08 10:00", [110, 100, 90, 85, 80, 78, 75, 64])  # 8 min
    bout("2024-05-09 10:00", [110, 100])  # interrupted by the next bout: not counted
    bout("2024-05-09 10:07", [90, 69])  # 2 min
    bout("2024-05-10 10:00", [110, 100, 90, 85, 80, 78, 75, 72, 66])  # 9 > 8.5: not counted
    steps[minutes.get_loc(pd.Timestamp("2024-05-11 10:00", tz="UTC"))] = 3  # not a bout
    frames = [logs("u", minutes, hr, steps)]
    row = user_weeks(tmp_path, frames, {"u": "UTC"}, max_recovery_minutes=8.5).iloc[0]
    # Rest samples (no steps in the last 10 minutes) are all at 60 bpm.
    assert row.resting_heart_rate == pytest.approx(60.0)
    assert row.hr_recovery_minutes == pytest.approx((4 + 6 + 8 + 2) / 4)
    assert row.mean_daily_steps == pytest.approx((6 * 5 * 100 + 3) / 7)


def test_recovery_is_null_below_min_bouts(tmp_path):
    minutes = every("2024-05-06", "2024-05-07", step=pd.Timedelta(minutes=1))
    steps = np.zeros(len(minutes), dtype=np.int64)
    hr = np.full(len(minutes), 60.0)
    steps[600:605], hr[600:605] = 100, 120.0
    steps[700:705], hr[700:705] = 100, 120.0
    row = user_weeks(tmp_path, [logs("u", minutes, hr, steps)], {"u": "UTC"}).iloc[0]
    assert pd.isna(row.hr_recovery_minutes)
    assert row.resting_heart_rate == pytest.approx(60.0)


def test_night_resting_hr_change_between_halves_of_the_week(tmp_path):
    minutes = every("2024-05-06", "2024-05-13", step=pd.Timedelta(minutes=1))
    weekday = minutes.weekday
    hr = np.select([weekday <= 2, weekday == 3], [58.0, 99.0], 61.0)
    steps = np.zeros(len(minutes), dtype=np.int64)
    burst = minutes.get_loc(pd.Timestamp("2024-05-10 01:00", tz="UTC"))  # Friday night
    steps[burst], hr[burst:burst + 10] = 40, 200.0  # not rest for 10 minutes
    row = user_weeks(tmp_path, [logs("u", minutes, hr, steps)], {"u": "UTC"}).iloc[0]
    assert row.night_resting_hr_change == pytest.approx(61.0 - 58.0)


def test_dominant_device_and_generation(tmp_path):
    t = every("2024-05-06", "2024-05-06 10:00")  # 60 samples
    devices = np.array(["apple_watch_1st_gen"] * 35 + ["apple_watch_series_9"] * 25, dtype=object)
    tie = np.array(["garmin_fenix_7"] * 30 + ["fitbit_charge_4"] * 30, dtype=object)
    frames = [logs("a", t, 70.0, device=devices), logs("b", t, 70.0, device=tie),
              logs("c", t, 70.0, device="acme_prototype")]
    weeks = user_weeks(tmp_path, frames, {"a": "UTC", "b": "UTC", "c": "UTC"}).droplevel(1)
    assert weeks.loc["a", "device"] == "apple_watch_1st_gen"
    assert weeks.loc["a", "device_generation"] == 1
    assert weeks.loc["b", "device"] == "fitbit_charge_4"  # a tie goes to the first name
    assert weeks.loc["c", "device"] == "acme_prototype"
    assert pd.isna(weeks.loc["c", "device_generation"])


def test_chunking_and_threads_do_not_change_the_table(tmp_path, simulated):
    clean, users = simulated
    one = build_user_weeks(clean, users, tmp_path / "a.parquet", LabelsConfig())
    many = build_user_weeks(clean, users, tmp_path / "b.parquet",
                            LabelsConfig(chunk_rows=5_000, workers=1))
    assert one.num_user_weeks == many.num_user_weeks > 0
    a, b = pq.read_table(one.path).to_pandas(), pq.read_table(many.path).to_pandas()
    floats = ["coverage", *USER_WEEK_TARGETS]
    pd.testing.assert_frame_equal(a.drop(columns=floats), b.drop(columns=floats))
    # Sums are prefix sums over a chunk: other chunks, other rounding (~1e-15 relative).
    pd.testing.assert_frame_equal(a[floats], b[floats], check_exact=False, rtol=1e-12)


def test_a_chunk_sends_back_its_user_weeks_not_its_rows(tmp_path, simulated, monkeypatch):
    """On a Dask cluster a partition's result is pickled back to the flow's process: it must
    not carry the chunk's row arrays (bench/bench_scale.py: labels 6-9x slower on Dask)."""
    from stethoscope.tasks.labels import user_weeks
    from stethoscope.tasks.shared.user_chunks import UserChunk, map_chunks

    sent: list[tuple[int, int]] = []  # (pickled result, pickled chunk), bytes

    def measured(fn, files, chunk_rows, workers):
        def partition(chunk: UserChunk):
            result = fn(chunk)
            assert not any(isinstance(part, UserChunk) for part in result)
            sent.append((len(pickle.dumps(result)), len(pickle.dumps(chunk))))
            return result
        return map_chunks(partition, files, chunk_rows, workers)

    monkeypatch.setattr(user_weeks, "map_chunks", measured)
    clean, users = simulated
    built = build_user_weeks(clean, users, tmp_path / "uw.parquet", LabelsConfig())
    assert built.num_user_weeks > 0 and sent
    assert all(result < chunk / 10 for result, chunk in sent), sent


def test_broken_inputs_are_named_all_at_once(tmp_path):
    t = every("2024-05-06", "2024-05-06 01:00")
    clean, users = write_clean(tmp_path, [logs("a", t, 70.0), logs("b", t, 70.0),
                                          logs("c", t, 70.0)], {"a": "UTC"})
    with pytest.raises(DataContractError, match="2 users") as error:
        build_user_weeks(clean, users, tmp_path / "uw.parquet", LabelsConfig(chunk_rows=1))
    assert "'b'" in str(error.value) and "'c'" in str(error.value)
    assert not (tmp_path / "uw.parquet").exists()

    # a user whose zone is unknown is set aside by the one reader (validation quarantines its
    # rows): clean logs holding its rows anyway name it
    pq.write_table(pa.table({"user_id": ["a", "b", "c"], "age": [1.0] * 3, "sex": ["F"] * 3,
                             "timezone": ["UTC", "Mars/Olympus", "Europe/Berlin"]}), users)
    with pytest.raises(DataContractError, match=r"1 users .*\['b'\].*set aside for bad metadata"):
        build_user_weeks(clean, users, tmp_path / "uw.parquet", LabelsConfig())

    pq.write_table(pa.table({"user_id": ["a", "b", "c"], "age": [1.0] * 3, "sex": ["F"] * 3,
                             "timezone": ["UTC"] * 3}), users)
    shutil.copy(clean / "part-00000.parquet", clean / "part-00001.parquet")  # users twice
    with pytest.raises(DataContractError, match="more than one file"):
        build_user_weeks(clean, users, tmp_path / "uw.parquet", LabelsConfig())
    (clean / "part-00001.parquet").unlink()

    unsorted = pq.read_table(clean / "part-00000.parquet")
    pq.write_table(unsorted.take(np.arange(unsorted.num_rows)[::-1].copy()),
                   clean / "part-00000.parquet")
    with pytest.raises(DataContractError, match="not contiguous|not strictly increasing"):
        build_user_weeks(clean, users, tmp_path / "uw.parquet", LabelsConfig())


# --- against plain pandas on a simulated cohort --------------------------------------------

@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[Path, Path]:
    """A simulated cohort's sensor logs as clean files (they are sorted and unique)."""
    from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig

    root = tmp_path_factory.mktemp("simulated")
    cohort = simulate_cohort(SimulateConfig(users=6, weeks=2, seed=3, users_per_file=4),
                             root / "cohort")
    shutil.copytree(cohort.paths.sensor_logs, root / "clean")
    return root / "clean", cohort.paths.users


def reference_user_weeks(logs_df: pd.DataFrame, users: pd.DataFrame,
                         config: LabelsConfig) -> pd.DataFrame:
    """Every column of the user-week table, computed row by row the obvious pandas way."""
    rows = []
    for user_id, g in logs_df.groupby("user_id", sort=True):
        tz = users.loc[user_id, "timezone"]
        g = g.reset_index(drop=True)
        ts = g["timestamp"]
        local = ts.dt.tz_convert(tz).dt.tz_localize(None)
        monday = local.dt.normalize() - pd.to_timedelta(local.dt.weekday, unit="D")
        hour = (local - local.dt.normalize()) / pd.Timedelta(hours=1)
        hr, steps = g["heart_rate"].astype(float), g["steps"].astype(float)
        last_active = ts.where(steps > 0).ffill()
        rest = last_active.isna() | (ts - last_active >= pd.Timedelta(minutes=config.rest_minutes))
        night = (hour >= 0) & (hour < 6)
        day = (hour >= 8) & (hour < 20)
        valid_rest = hr.notna() & rest
        counts = valid_rest.groupby(monday).sum()
        resting_of = hr.where(valid_rest).groupby(monday).mean().where(counts >= 30)
        recovery_of = reference_recovery(ts, hr, steps, monday, resting_of, config)
        for week_start, w in g.groupby(monday):
            idx = w.index
            start = pd.Timestamp(week_start, tz=tz).tz_convert("UTC")
            end = pd.Timestamp(week_start + pd.Timedelta(days=7), tz=tz).tz_convert("UTC")

            def std(mask, idx=idx, hr=hr):
                x = hr[idx][mask[idx]].dropna()
                return x.std(ddof=0) if len(x) >= 30 else np.nan

            def rest_mean(mask, idx=idx, hr=hr, rest=rest):
                x = hr[idx][(mask & rest)[idx]].dropna()
                return x.mean() if len(x) >= 30 else np.nan

            weekday = local[idx].dt.weekday
            first_half = pd.Series(False, index=g.index)
            second_half = pd.Series(False, index=g.index)
            first_half[idx] = weekday.isin([0, 1, 2])
            second_half[idx] = weekday.isin([4, 5, 6])
            resting = rest_mean(pd.Series(True, index=g.index))
            assert resting == resting_of[week_start] or np.isnan(resting)
            bins = ((ts[idx] - start).dt.total_seconds().mul(1e6).round().astype("int64")
                    * config.num_bins // int((end - start).total_seconds() * 1e6))
            counts = w["device"].value_counts()
            device = sorted(counts.index, key=lambda d: (-counts[d], d))[0]
            rows.append({
                "user_id": user_id, "week_start": week_start.date(),
                "week_start_utc": start, "week_end_utc": end, "num_samples": len(w),
                "num_heart_rate_samples": int(hr[idx].notna().sum()),
                "coverage": bins[hr[idx].notna()].nunique() / config.num_bins,
                "device": device,
                "hr_std_day_minus_night": std(day) - std(night),
                "mean_daily_steps": steps[idx].sum() / 7 if steps[idx].notna().any() else np.nan,
                "resting_heart_rate": resting,
                "hr_recovery_minutes": recovery_of.get(week_start, np.nan),
                "night_resting_hr_change": rest_mean(night & second_half)
                - rest_mean(night & first_half),
            })
    return pd.DataFrame(rows).set_index(["user_id", "week_start"])


def reference_recovery(ts, hr, steps, monday, resting_of, config) -> dict:
    """Plain loops over one user's samples: each bout end, then walk forward to the first
    recovered sample of the same week; the mean per week of at least `min_bouts` of them."""
    ts, hr, monday = ts.to_list(), hr.to_numpy(), monday.to_list()
    bout = (steps >= config.bout_min_steps).to_numpy()
    found: dict = {}
    for i in range(len(ts)):
        if not bout[i] or (i + 1 < len(ts) and bout[i + 1]):
            continue
        threshold = resting_of[monday[i]] + config.recovery_margin_bpm
        for j in range(i + 1, len(ts)):
            if bout[j] or monday[j] != monday[i]:
                break
            if not np.isnan(hr[j]) and hr[j] <= threshold:
                minutes = (ts[j] - ts[i]) / pd.Timedelta(minutes=1)
                if minutes <= config.max_recovery_minutes:
                    found.setdefault(monday[i], []).append(minutes)
                break
    return {week: float(np.mean(m)) for week, m in found.items() if len(m) >= config.min_bouts}


def test_every_target_matches_plain_pandas_on_a_simulated_cohort(tmp_path, simulated):
    clean, users_file = simulated
    config = LabelsConfig()
    result = build_user_weeks(clean, users_file, tmp_path / "uw.parquet", config)
    ours = pq.read_table(result.path).to_pandas().set_index(["user_id", "week_start"])
    logs_df = pd.concat(pq.read_table(f).to_pandas() for f in sorted(clean.glob("*.parquet")))
    users = pq.read_table(users_file).to_pandas().set_index("user_id")
    expected = reference_user_weeks(logs_df, users, config)

    assert list(ours.index) == list(expected.index)
    for column in ("week_start_utc", "week_end_utc", "num_samples", "num_heart_rate_samples",
                   "device"):
        assert (ours[column] == expected[column]).all(), column
    np.testing.assert_allclose(ours["coverage"], expected["coverage"], rtol=0, atol=1e-12)
    for target in USER_WEEK_TARGETS:
        np.testing.assert_allclose(ours[target].astype(float), expected[target].astype(float),
                                   rtol=1e-9, atol=1e-7, err_msg=target)
    # The simulated cohort exercises every target: each is non-null somewhere.
    assert all(result.non_null_targets[t] > 0 for t in USER_WEEK_TARGETS), result
    assert result.num_rows == len(logs_df)


def test_chunks_hold_whole_users_and_every_row_once(simulated):
    from stethoscope.tasks.shared.user_chunks import iter_user_chunks

    clean, _ = simulated
    files = sorted(clean.glob("*.parquet"))
    expected = pd.concat(pq.read_table(f).to_pandas() for f in files)
    chunks = list(iter_user_chunks(files, chunk_rows=40_000))
    assert len(files) < len(chunks) and max(c.num_users for c in chunks) > 1
    per_user = expected.groupby("user_id").size()
    assert sum(c.num_rows for c in chunks) == len(expected)
    assert [u for c in chunks for u in c.user_ids] == sorted(per_user.index)
    for chunk in chunks:
        sizes = np.diff(chunk.user_offsets)
        assert list(sizes) == list(per_user[list(chunk.user_ids)])
        # Memory bound: under two batches of chunk_rows, or one (larger) user.
        assert chunk.num_rows < 2 * 40_000 or chunk.num_users == 1
    np.testing.assert_array_equal(
        np.concatenate([c.timestamp for c in chunks]),
        expected["timestamp"].astype("datetime64[us, UTC]").astype("int64").to_numpy())
