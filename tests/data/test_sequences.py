"""The sequence store: exact tensors, coverage exclusion, the split, train-only statistics, the
labels join, and the six real Fitbit users end to end."""

from __future__ import annotations

import logging
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.sequence_store import EXCLUDED, INDEX, SPLITS, StorePaths, StoreStats
from stethoscope.schemas.tables import USER_WEEK_TARGETS
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.labels.user_weeks import build_user_weeks
from stethoscope.tasks.sequences.build import assign_split, build_sequences
from stethoscope.tasks.sequences.config import SequencesConfig
from tests.data.test_labels import every, logs, write_clean

log = logging.getLogger(__name__)
FITBIT = Path(__file__).resolve().parents[3] / "shared" / "data" / "fitbit"


def train_user(prefix: str, seed: int = 0) -> str:
    """The first user id `<prefix>N` that the default split puts in train."""
    return next(f"{prefix}{i}" for i in range(100)
                if assign_split(f"{prefix}{i}", seed, (0.7, 0.15, 0.15)) == "train")


def store(tmp_path: Path, frames, timezones, labels: pa.Table | None = None,
          num_steps: int = 16, **config):
    clean, users = write_clean(tmp_path, frames, timezones)
    weeks = build_user_weeks(clean, users, tmp_path / "uw.parquet",
                             LabelsConfig(num_bins=num_steps))
    labels_file = None
    if labels is not None:
        labels_file = tmp_path / "labels.parquet"
        pq.write_table(labels, labels_file)
    result = build_sequences(clean, users, weeks.path, labels_file, tmp_path / "sequences",
                             SequencesConfig(num_steps=num_steps, **config))
    paths = StorePaths(root=result.store_dir)
    stats = StoreStats.model_validate_json(paths.stats.read_text())
    return result, paths, stats, pq.read_table(paths.index)


def tensor(paths: StorePaths, index: pa.Table, user: str, week: date) -> np.ndarray:
    row = index.to_pandas().set_index(["user_id", "week_start"]).loc[(user, week)]
    return np.load(paths.shard(row["shard"]), mmap_mode="r")[row["row"]]


def test_split_is_by_user_stable_for_a_seed_and_near_the_fractions():
    users = [f"user-{i}" for i in range(3000)]
    first = [assign_split(u, 7, (0.7, 0.15, 0.15)) for u in users]
    assert first == [assign_split(u, 7, (0.7, 0.15, 0.15)) for u in users]
    other = [assign_split(u, 8, (0.7, 0.15, 0.15)) for u in users]
    assert 0.4 < np.mean([a != b for a, b in zip(first, other, strict=True)]) < 0.6
    shares = pd.Series(first).value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.03)
    assert shares["val"] == pytest.approx(0.15, abs=0.03)
    assert shares["test"] == pytest.approx(0.15, abs=0.03)
    assert {assign_split(u, 7, (0.0, 1.0, 0.0)) for u in users} == {"val"}


def test_tensor_channels_are_exact(tmp_path):
    user = train_user("u")
    bin_ = pd.Timedelta(days=7) / 16  # 10.5 h
    start = pd.Timestamp("2024-05-06", tz="UTC")
    # Bin 0: HR 60 and 70, steps 3 and 4. Bin 1: steps only. Bins 2-8: HR 80, no steps.
    times = pd.DatetimeIndex([start, start + pd.Timedelta(minutes=1), start + bin_]
                             + [start + k * bin_ for k in range(2, 9)])
    hr = [60.0, 70.0, None] + [80.0] * 7
    steps = [3, 4, 5] + [None] * 7
    frame = logs(user, times, 0.0, 0)
    frame["heart_rate"] = pd.array(hr, dtype="Float64")
    frame["steps"] = pd.array(steps, dtype="Int64")
    result, paths, stats, index = store(tmp_path, [frame], {user: "UTC"})

    assert result.counts == {"train": 1, "val": 0, "test": 0}
    # Train statistics: bins with HR {65, 80 x 7}; bins with steps {log1p 7, log1p 5}.
    assert stats.heart_rate_mean == pytest.approx(np.mean([65.0] + [80.0] * 7))
    assert stats.heart_rate_std == pytest.approx(np.std([65.0] + [80.0] * 7))
    assert stats.log_steps_mean == pytest.approx(np.mean(np.log1p([7.0, 5.0])))
    assert stats.bin_seconds == pytest.approx(7 * 86400 / 16)
    x = tensor(paths, index, user, date(2024, 5, 6))
    assert x.shape == (16, 3) and x.dtype == np.float32

    def hr_std(v):
        return (v - stats.heart_rate_mean) / stats.heart_rate_std

    def steps_std(v):
        return (np.log1p(v) - stats.log_steps_mean) / stats.log_steps_std

    np.testing.assert_allclose(x[:, 0], [hr_std(65.0), 0.0] + [hr_std(80.0)] * 7 + [0.0] * 7,
                               rtol=1e-6)
    np.testing.assert_allclose(x[:, 1], [steps_std(7.0), steps_std(5.0)] + [0.0] * 14, rtol=1e-6)
    np.testing.assert_array_equal(x[:, 2], [0.0, 1.0] + [0.0] * 7 + [1.0] * 7)
    assert index["coverage"][0].as_py() == 8 / 16


def test_a_dst_week_is_cut_into_t_bins_of_its_real_length(tmp_path):
    tz = "Europe/Berlin"
    user = train_user("b")
    hours = every("2024-03-25", "2024-04-01", step=pd.Timedelta(hours=1), tz=tz)  # 167
    frame = logs(user, hours + pd.Timedelta(minutes=30), np.arange(167, dtype=float) + 40)
    _, paths, stats, index = store(tmp_path, [frame], {user: tz}, num_steps=167)
    x = tensor(paths, index, user, date(2024, 3, 25))
    # One sample per real hour, in bin = its hour since local Monday 00:00: all 167 bins.
    np.testing.assert_allclose(x[:, 0] * stats.heart_rate_std + stats.heart_rate_mean,
                               np.arange(167) + 40, rtol=1e-5)
    assert not x[:, 2].any()


def test_time_of_day_channels_are_optional_and_local(tmp_path):
    user = train_user("t")
    t = every("2024-05-06", "2024-05-13", step=pd.Timedelta(hours=1), tz="Asia/Kolkata")
    _, paths, stats, index = store(tmp_path, [logs(user, t, 70.0)], {user: "Asia/Kolkata"},
                                   num_steps=168, time_of_day=True)
    assert stats.channels[3:] == ["time_of_day_sin", "time_of_day_cos"]
    x = tensor(paths, index, user, date(2024, 5, 6))
    hours = (np.arange(168) + 0.5) % 24  # bin centres in local time
    np.testing.assert_allclose(x[:, 3], np.sin(2 * np.pi * hours / 24), atol=1e-6)
    np.testing.assert_allclose(x[:, 4], np.cos(2 * np.pi * hours / 24), atol=1e-6)


def test_low_coverage_weeks_are_excluded_counted_and_listed(tmp_path):
    user = train_user("c")
    full = every("2024-05-06", "2024-05-13", step=pd.Timedelta(hours=1))
    sparse = every("2024-05-13", "2024-05-15", step=pd.Timedelta(hours=1))  # 2 of 7 days
    result, paths, stats, index = store(tmp_path, [logs(user, full, 70.0),
                                                   logs(user, sparse, 70.0)], {user: "UTC"},
                                        num_steps=168, min_coverage=0.5)
    assert (result.num_included, result.num_excluded) == (1, 1)
    excluded = pq.read_table(paths.excluded)
    assert excluded.schema.equals(EXCLUDED)
    assert excluded.to_pylist() == [{"user_id": user, "week_start": date(2024, 5, 13),
                                     "split": "train", "coverage": 48 / 168,
                                     "reason": "low_coverage"}]
    assert index["week_start"].to_pylist() == [date(2024, 5, 6)]


def test_standardisation_uses_train_users_only(tmp_path):
    t = every("2024-05-06", "2024-05-13", step=pd.Timedelta(hours=2))
    ids = [f"s{i}" for i in range(12)]
    frames = [logs(u, t, 40.0 + i**2, steps=i) for i, u in enumerate(ids)]
    result, _, stats, index = store(tmp_path, frames, dict.fromkeys(ids, "UTC"), num_steps=84)
    split = {u: assign_split(u, 0, (0.7, 0.15, 0.15)) for u in ids}
    train = [i for i, u in enumerate(ids) if split[u] == "train"]
    assert 0 < len(train) < len(ids)
    # Every bin of user i holds HR 40 + i^2: the train mean is the mean over train users.
    assert stats.heart_rate_mean == pytest.approx(np.mean([40.0 + i**2 for i in train]))
    assert stats.heart_rate_std == pytest.approx(np.std([40.0 + i**2 for i in train]))
    assert stats.heart_rate_mean != pytest.approx(np.mean([40.0 + i**2 for i in range(12)]))
    assert stats.age_mean == pytest.approx(np.mean([40.0 + i for i in train]))
    frame = index.to_pandas()
    assert frame.groupby("user_id")["split"].nunique().max() == 1
    assert dict(zip(frame.user_id, frame.split, strict=True)) == split
    assert result.counts == {s: sum(v == s for v in split.values()) for s in SPLITS}


def test_labels_join_by_user_and_keep_unknowns(tmp_path):
    t = every("2024-05-06", "2024-05-13", step=pd.Timedelta(hours=1))
    ids = ["a", "b", "c"]
    labels = pa.table({"user_id": ["a", "b", "z"], "diabetes": pa.array([1, None, 0], pa.int8()),
                       "sleep_apnea": pa.array([0, 1, 1], pa.int8())})
    result, _, stats, index = store(tmp_path, [logs(u, t, 70.0) for u in ids],
                                    dict.fromkeys(ids, "UTC"), labels=labels, num_steps=168,
                                    split_fractions=(1.0, 0.0, 0.0))
    assert stats.conditions == result.conditions == ["diabetes", "sleep_apnea"]
    rows = {r["user_id"]: r for r in index.to_pylist()}
    assert (rows["a"]["diabetes"], rows["a"]["sleep_apnea"]) == (1, 0)
    assert (rows["b"]["diabetes"], rows["b"]["sleep_apnea"]) == (None, 1)
    assert (rows["c"]["diabetes"], rows["c"]["sleep_apnea"]) == (None, None)
    assert index.schema.field("diabetes").type == pa.int8()


def test_index_carries_metadata_targets_and_points_at_every_shard_row(tmp_path):
    # Two weeks of different lengths (167 h, then 168 h) binned in one go.
    t = every("2024-03-25", "2024-04-08", step=pd.Timedelta(minutes=10), tz="Europe/Paris")
    ids = [f"m{i}" for i in range(9)]
    frames = [logs(u, t, 60.0 + (np.arange(len(t)) % 7), steps=np.arange(len(t)) % 3)
              for u in ids]
    result, paths, stats, index = store(tmp_path, frames, dict.fromkeys(ids, "Europe/Paris"),
                                        num_steps=4096, shard_size=4, min_coverage=0.2)
    assert sorted(set(index["coverage"].to_pylist())) == [167 * 6 / 4096, 168 * 6 / 4096]
    assert index.schema.names[: len(INDEX)] == INDEX.names
    assert index.schema.names[len(INDEX):] == list(USER_WEEK_TARGETS) == stats.targets
    weeks = pq.read_table(tmp_path / "uw.parquet").to_pandas().set_index(
        ["user_id", "week_start"])
    frame = index.to_pandas().set_index(["user_id", "week_start"])
    for target in USER_WEEK_TARGETS:
        np.testing.assert_array_equal(frame[target], weeks.loc[frame.index, target])
    np.testing.assert_array_equal(frame["coverage"], weeks.loc[frame.index, "coverage"])
    places = set()
    for shard, group in index.to_pandas().groupby("shard"):
        array = np.load(paths.shard(shard), mmap_mode="r")
        assert array.shape[1:] == (4096, 3) and array.shape[0] <= 4
        assert shard.split("-")[0] == group["split"].iloc[0] == group["split"].iloc[-1]
        assert sorted(group["row"]) == list(range(array.shape[0]))
        places.update((shard, r) for r in group["row"])
    assert len(places) == index.num_rows == 18 == sum(stats.counts.values())
    row = index.to_pylist()[0]
    age_std = (row["age"] - stats.age_mean) / stats.age_std
    sex = [float(row["sex"] == s) for s in ("F", "M", "U")]
    np.testing.assert_allclose(row["metadata"], [age_std, *sex], rtol=1e-6)


def test_a_store_can_be_rebuilt_in_place(tmp_path):
    user = train_user("r")
    t = every("2024-05-06", "2024-05-13", step=pd.Timedelta(hours=1))
    first, *_ = store(tmp_path / "one", [logs(user, t, 70.0)], {user: "UTC"}, num_steps=168)
    clean, users = tmp_path / "one" / "clean", tmp_path / "one" / "users.parquet"
    again = build_sequences(clean, users, tmp_path / "one" / "uw.parquet", None,
                            first.store_dir, SequencesConfig(num_steps=168))
    assert again == first
    assert sorted(p.name for p in first.store_dir.parent.iterdir()) == [
        "clean", "sequences", "users.parquet", "uw.parquet"]


@pytest.mark.slow
@pytest.mark.skipif(not FITBIT.is_dir(), reason="the shared Fitbit exports are not here")
def test_the_six_real_fitbit_users_get_user_weeks_and_sequences(tmp_path, caplog):
    from stethoscope.tasks.cohorts.import_csv.config import ImportConfig
    from stethoscope.tasks.cohorts.import_csv.importer import import_csv_exports

    cohort = tmp_path / "cohort"
    import_csv_exports(FITBIT, cohort, ImportConfig(timezone="America/Los_Angeles"))
    clean = tmp_path / "clean"
    shutil.copytree(cohort / "sensor_logs", clean)  # the import writes sorted, unique rows
    weeks = build_user_weeks(clean, cohort / "users.parquet", tmp_path / "uw.parquet",
                             LabelsConfig())
    result = build_sequences(clean, cohort / "users.parquet", weeks.path, None,
                             tmp_path / "sequences", SequencesConfig())
    table = pq.read_table(weeks.path).to_pandas()
    assert table["user_id"].nunique() == 6 and weeks.num_rows > 6 * 12 * 7 * 1000
    assert table.groupby("user_id").size().between(12, 15).all()
    assert ((table["coverage"] >= 0) & (table["coverage"] <= 1)).all()
    assert result.num_included + result.num_excluded == len(table)
    assert result.num_included >= 6 * 10
    summary = table.groupby("user_id").agg(weeks=("week_start", "size"),
                                           first=("week_start", "min"),
                                           coverage=("coverage", "median"))
    with caplog.at_level(logging.INFO):
        log.info("fitbit user-weeks: %s; %s", summary.to_dict("index"), result.describe())
    print("fitbit user-weeks:\n", summary.to_string(), "\n", result.describe())


def test_no_train_user_week_is_a_clear_error_and_leaves_nothing(tmp_path):
    t = every("2024-05-06", "2024-05-13", step=pd.Timedelta(hours=1))
    with pytest.raises(DataContractError, match="no train user-week"):
        store(tmp_path, [logs("a", t, 70.0)], {"a": "UTC"}, num_steps=168,
              split_fractions=(0.0, 1.0, 0.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "users.parquet", "uw.parquet"]


def test_a_user_week_table_of_other_logs_is_refused(tmp_path):
    t = every("2024-05-06", "2024-05-13", step=pd.Timedelta(hours=1))
    clean, users = write_clean(tmp_path, [logs("a", t, 70.0), logs("b", t, 70.0)],
                               {"a": "UTC", "b": "UTC"})
    weeks = build_user_weeks(clean, users, tmp_path / "uw.parquet", LabelsConfig())
    table = pq.read_table(weeks.path)
    pq.write_table(table.filter(pc.equal(table["user_id"], "a")), weeks.path)
    with pytest.raises(DataContractError, match=r"\['b'\]"):
        build_sequences(clean, users, weeks.path, None, tmp_path / "sequences",
                        SequencesConfig(num_steps=168))


def test_bins_equal_a_floor_division_reference_on_irregular_weeks():
    """Each bin against the definition, floor((t - start) T / duration), with a pandas groupby;
    week lengths that T does not divide (DST weeks), irregular sampling, nulls."""
    from stethoscope.tasks.sequences.build import _bin_rows
    from stethoscope.tasks.shared.user_chunks import UserChunk

    rng = np.random.default_rng(3)
    num_steps = 64
    week = 7 * 86_400 * 1_000_000
    starts = np.array([0, week, week * 2 - 3_600_000_000], dtype=np.int64) + 1_700_000_000_000_000
    durations = np.array([week, week - 3_600_000_000, week + 3_600_000_000 + 7], dtype=np.int64)
    user = np.array([0, 0, 1])
    ts, offsets = [], [0]
    for u in (0, 1):
        weeks = np.flatnonzero(user == u)
        lo, hi = starts[weeks[0]], starts[weeks[-1]] + durations[weeks[-1]]
        # ~2 per bin, so some bins are empty, plus the instants on either side of every bound
        on_bounds = [starts[w] + (np.arange(num_steps) * durations[w]) // num_steps + d
                     for w in weeks for d in (0, 1)]
        t = np.unique(np.concatenate([rng.integers(lo, hi, 300), *on_bounds]))
        ts.append(t)
        offsets.append(offsets[-1] + len(t))
    t = np.concatenate(ts)
    n = len(t)
    hr_valid, steps_valid = rng.random(n) > 0.2, rng.random(n) > 0.5
    hr = np.where(hr_valid, rng.normal(70, 9, n).round(1), 0.0)
    steps = np.where(steps_valid, rng.integers(0, 100, n), 0).astype(np.float64)
    chunk = UserChunk(user_ids=("a", "b"), user_offsets=np.array(offsets), timestamp=t,
                      heart_rate=hr, heart_rate_valid=hr_valid, steps=steps, steps_valid=steps_valid,
                      device=np.zeros(n, dtype=np.int32), device_names=("d",), source_file="x")
    lo = np.searchsorted(chunk.key, chunk.keys_of(user, starts))
    hi = np.searchsorted(chunk.key, chunk.keys_of(user, starts + durations))
    raw, _ = _bin_rows(chunk, lo, hi, starts, starts + durations, num_steps)

    row_user = np.repeat([0, 1], np.diff(offsets))
    for w in range(3):
        rows = (row_user == user[w]) & (t >= starts[w]) & (t < starts[w] + durations[w])
        frame = pd.DataFrame({"bin": (t[rows] - starts[w]) * num_steps // durations[w],
                              "hr": np.where(hr_valid[rows], hr[rows], np.nan),
                              "steps": np.where(steps_valid[rows], steps[rows], np.nan)})
        by_bin = frame.groupby("bin").agg(hr=("hr", "mean"), steps=("steps", "sum"),
                                          n_steps=("steps", "count")).reindex(range(num_steps))
        expected_steps = np.where(by_bin["n_steps"] > 0, np.log1p(by_bin["steps"]), np.nan)
        np.testing.assert_allclose(raw[w, :, 0], by_bin["hr"], rtol=1e-6)
        np.testing.assert_allclose(raw[w, :, 1], expected_steps, rtol=1e-6)
        np.testing.assert_array_equal(raw[w, :, 2], by_bin["hr"].isna())
