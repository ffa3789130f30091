"""Labels stage: the user-week table, with coverage, dominant device and the synthetic targets.

Owns `<run>/labels/user_weeks.parquet` (`schemas.tables.USER_WEEKS`): one row per user and
local ISO week that holds at least one sample. Weeks are DST-correct intervals of the user's
local time (`tasks.shared.calendar`): Monday 00:00 to the next Monday 00:00, 167 h or 169 h long when
the clocks change. Coverage is the share of the week's `num_bins` equal bins (the sequence bins,
~148 s each for 4096 bins) that hold at least one heart-rate sample; a DST week is cut into the
same number of bins, 1/168 shorter or longer, so that a sequence always spans exactly its week.

Synthetic targets (each null when its minimum is not met; bounds and minimums are config):

- `hr_std_day_minus_night` (docs/architecture.md §4.5; needs day vs night and several days): population standard
  deviation (ddof=0) of the non-null heart rate over samples whose local time of day is in
  `day_window` [08:00, 20:00), minus the same over `night_window` [00:00, 06:00). Null when
  either window holds fewer than `min_window_samples` (30) samples.
- `mean_daily_steps` (trivial: a sum over the week): the sum of the non-null steps of the week
  divided by 7. Null when the week has no steps sample.
- `resting_heart_rate` (short range, ~10 minutes): mean of the non-null heart rate over *rest
  samples*: samples such that no sample of the user with steps > 0 lies in
  (t - `rest_minutes`, t] (default 10 min; the sample itself has no steps, and samples of the
  previous week count). Null below `min_window_samples` rest samples.
- `hr_recovery_minutes` (minutes to hours): mean time, in minutes, from the end of an activity
  bout to the first later heart-rate sample of the same week at or below the week's
  `resting_heart_rate` + `recovery_margin_bpm` (10). A bout sample has steps >=
  `bout_min_steps` (60); a bout ends at a bout sample whose next sample is not one. A bout end
  counts only if that recovery sample exists, comes before the next bout sample and within
  `max_recovery_minutes` (120). Null when the resting heart rate is null or fewer than
  `min_bouts` (3) bout ends count.
- `night_resting_hr_change` (memory across days): mean non-null heart rate over rest samples in
  the night window on the local dates Friday, Saturday and Sunday, minus the same on Monday,
  Tuesday and Wednesday (Thursday is left out, so both halves hold three nights and are at least
  a day apart). Null when either half holds fewer than `min_window_samples` such samples.

Clean logs are streamed in chunks of whole users (`tasks.shared.user_chunks`), so memory stays bounded
by `chunk_rows` whatever the cohort size; every step is vectorised over the rows of a chunk.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stethoscope.schemas.atomic import atomic_path
from stethoscope.schemas.devices import device_generation
from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.tables import USER_WEEK_TARGETS, USER_WEEKS
from stethoscope.tasks.labels.config import LabelsConfig, LabelsResult
from stethoscope.tasks.shared import kernels
from stethoscope.tasks.shared.calendar import US_PER_SECOND, WeekGrid, local_weeks, window_intervals
from stethoscope.tasks.shared.io import list_parquet_files
from stethoscope.tasks.shared.user_chunks import UserChunk, map_chunks
from stethoscope.tasks.shared.users import read_users, timezones_of

log = logging.getLogger("stethoscope.labels")


_US_PER_MINUTE = 60 * US_PER_SECOND
_FIRST_HALF, _SECOND_HALF = (0, 1, 2), (4, 5, 6)  # Mon-Wed, Fri-Sun


def build_user_weeks(
    clean_dir: Path, users_file: Path, out_file: Path, config: LabelsConfig
) -> LabelsResult:
    """Stream the clean logs and write the user-week table to `out_file` (atomically)."""
    timezones = load_timezones(users_file)
    files = list_parquet_files(clean_dir)
    missing: list[str] = []
    num_rows = num_users = num_weeks = 0
    non_null = dict.fromkeys(USER_WEEK_TARGETS, 0)

    def compute(chunk: UserChunk) -> tuple[tuple[str, ...], int, pa.Table | None]:
        # (user ids, rows, table), not the chunk: on a Dask cluster the result travels back
        # to this process, and the chunk's row arrays are ~45 MB per million rows
        zones = [timezones.get(u) for u in chunk.user_ids]
        if None in zones or missing:  # after the first unknown user, only collect the others
            return chunk.user_ids, chunk.num_rows, None
        known = tuple(z for z in zones if z is not None)  # every zone, after the check above
        return chunk.user_ids, chunk.num_rows, user_weeks_of_chunk(chunk, known, config)

    with atomic_path(Path(out_file)) as tmp, pq.ParquetWriter(tmp, USER_WEEKS) as writer:
        for user_ids, chunk_rows, table in map_chunks(compute, files, config.chunk_rows,
                                                      config.workers):
            if table is None:
                missing += [u for u in user_ids if u not in timezones]
                continue
            writer.write_table(table)
            num_rows, num_users = num_rows + chunk_rows, num_users + len(user_ids)
            num_weeks += table.num_rows
            for name in USER_WEEK_TARGETS:
                non_null[name] += table.num_rows - table.column(name).null_count
        if missing:
            raise DataContractError("labels: users without a timezone", [Problem(
                rule="unknown_user", file=str(users_file), column="user_id",
                message=f"{len(missing)} users of the clean logs are not usable users of "
                f"the users table ({missing[:10]}): absent, or set aside for bad metadata.",
                fix="add or repair them in users.parquet, or re-run validation, which "
                    "quarantines their rows")])
    log.info("labels: %d user-weeks of %d users from %d rows", num_weeks, num_users, num_rows)
    return LabelsResult(path=Path(out_file), num_rows=num_rows, num_users=num_users,
                           num_user_weeks=num_weeks, num_bins=config.num_bins,
                           non_null_targets=non_null)


def load_timezones(users_file: Path) -> dict[str, str]:
    """user_id -> IANA timezone of the usable users: `read_users` leaves out the users that
    validation set aside for bad metadata (an unknown zone among them), docs/architecture.md §4.2."""
    return timezones_of(read_users(users_file, ["user_id", "timezone"], stage="labels"))


def user_weeks_of_chunk(
    chunk: UserChunk, timezones: tuple[str, ...], config: LabelsConfig
) -> pa.Table:
    """The USER_WEEKS rows of one chunk of whole users (`timezones[u]` of `chunk.user_ids[u]`)."""
    first = chunk.timestamp[chunk.user_offsets[:-1]]
    last = chunk.timestamp[chunk.user_offsets[1:] - 1]
    grid = local_weeks(first, last, timezones)
    lo, hi = _row_range(chunk, grid.user, grid.start_us, grid.end_us)
    grid, lo, hi = grid.take(hi > lo), lo[hi > lo], hi[hi > lo]
    # Rows of each week are [lo, hi): the weeks of a chunk partition its rows.
    windows = window_intervals(grid, timezones, {"day_window": config.day_window,
                                                 "night_window": config.night_window})
    ranges = {name: _row_range(chunk, grid.user[w.week], w.start_us, w.end_us)
              for name, w in windows.items()}
    segments = _Segments(np.concatenate([lo, *(p for r in ranges.values() for p in r)]),
                         chunk.num_rows)
    hr, valid = chunk.heart_rate, chunk.heart_rate_valid
    rest_valid = rest_mask(chunk, config.rest_minutes) & valid
    # Variances from sums of squares around the chunk's mean, so that prefix sums over a
    # million rows keep the precision of a window's few hundred.
    centred = (hr - hr.sum() / max(int(valid.sum()), 1)) * valid
    total = {  # prefix sums at every range bound, one reduceat pass per row array
        "valid": segments.totals(valid), "centred": segments.totals(centred),
        "centred2": segments.totals(centred * centred), "rest": segments.totals(rest_valid),
        "rest_hr": segments.totals(hr * rest_valid),
        "steps": segments.totals(chunk.steps), "steps_valid": segments.totals(chunk.steps_valid),
    }
    week_sum = {name: segments.between(t, lo, hi) for name, t in total.items()}
    resting = _mean(week_sum["rest_hr"], week_sum["rest"], config.min_window_samples)

    def window_sum(name: str, window: str, days: tuple[int, ...] = tuple(range(7))) -> np.ndarray:
        start, end = ranges[window]
        sel = np.isin(windows[window].day, days)
        return np.bincount(windows[window].week[sel], minlength=len(grid),
                           weights=segments.between(total[name], start[sel], end[sel]))

    std = {window: _population_std(window_sum("valid", window), window_sum("centred", window),
                                   window_sum("centred2", window), config.min_window_samples)
           for window in windows}
    night_rest = [_mean(window_sum("rest_hr", "night_window", days),
                        window_sum("rest", "night_window", days), config.min_window_samples)
                  for days in (_FIRST_HALF, _SECOND_HALF)]
    targets = {
        "hr_std_day_minus_night": std["day_window"] - std["night_window"],
        "mean_daily_steps": np.where(week_sum["steps_valid"] > 0, week_sum["steps"] / 7.0, np.nan),
        "resting_heart_rate": resting,
        "hr_recovery_minutes": recovery_minutes(chunk, lo, hi, resting, config),
        "night_resting_hr_change": night_rest[1] - night_rest[0],
    }
    n_valid = week_sum["valid"]
    devices = dominant_device(chunk, lo, hi)
    return _table(chunk, grid, hi - lo, n_valid, coverage(chunk, grid, lo, hi, config.num_bins),
                  devices, targets)


def rest_mask(chunk: UserChunk, rest_minutes: float) -> np.ndarray:
    """bool [n]: no sample of the same user with steps > 0 in (t - rest_minutes, t]."""
    return kernels.rest_mask(chunk.timestamp, chunk.steps, chunk.user_offsets,
                             round(rest_minutes * _US_PER_MINUTE))


def recovery_minutes(chunk: UserChunk, lo: np.ndarray, hi: np.ndarray, resting: np.ndarray,
                     config: LabelsConfig) -> np.ndarray:
    """`hr_recovery_minutes` per week (see the module docstring), NaN where null."""
    return kernels.recovery_minutes(
        chunk.timestamp, chunk.heart_rate, chunk.heart_rate_valid, chunk.steps, lo, hi,
        resting + config.recovery_margin_bpm, config.bout_min_steps, config.max_recovery_minutes,
        config.min_bouts)


def coverage(chunk: UserChunk, grid: WeekGrid, lo: np.ndarray, hi: np.ndarray,
             num_bins: int) -> np.ndarray:
    """Share of each week's `num_bins` bins holding at least one heart-rate sample."""
    return kernels.coverage(chunk.timestamp, chunk.heart_rate_valid, lo, hi, grid.start_us,
                            grid.end_us, num_bins)


def dominant_device(chunk: UserChunk, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per week, the index (into chunk.device_names) of the device with most samples; ties go to
    the name that sorts first."""
    device = chunk.device[lo].astype(np.int64)
    changes = np.flatnonzero(chunk.device[1:] != chunk.device[:-1]) + 1
    mixed = np.unique(np.searchsorted(lo, changes[~np.isin(changes, lo)], side="right") - 1)
    if len(mixed) == 0:
        return device
    lengths = hi[mixed] - lo[mixed]
    local = np.repeat(np.arange(len(mixed)), lengths)
    rows = np.repeat(lo[mixed], lengths) + np.arange(lengths.sum()) - np.repeat(
        np.cumsum(lengths) - lengths, lengths)
    num_devices = len(chunk.device_names)
    counts = np.bincount(local * num_devices + chunk.device[rows],
                         minlength=len(mixed) * num_devices).reshape(len(mixed), num_devices)
    device[mixed] = counts.argmax(axis=1)
    return device


class _Segments:
    """Sums of row values over many row ranges [start, end) in one pass per value array: one
    `np.add.reduceat` over the union of all range bounds, then prefix sums of the pieces."""

    def __init__(self, bounds: np.ndarray, num_rows: int) -> None:
        inside = bounds[(bounds > 0) & (bounds < num_rows)]
        self.points = np.unique(np.concatenate([[0], inside])).astype(np.int64)

    def totals(self, values: np.ndarray) -> np.ndarray:
        """Sum of `values` before each point, and of all values last: [P + 1]."""
        if values.dtype == bool:  # cast first: reduceat casting as it goes holds the GIL
            values = values.astype(np.int64)
        pieces = np.add.reduceat(values, self.points)
        return np.concatenate([np.zeros(1, dtype=pieces.dtype), np.cumsum(pieces)])

    def between(self, totals: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Sums over the row ranges [start, end), whose bounds are among the points (or n)."""
        return (totals[np.searchsorted(self.points, end)]
                - totals[np.searchsorted(self.points, start)])


def _row_range(chunk: UserChunk, user: np.ndarray, start_us: np.ndarray,
               end_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row positions [lo, hi) of each (user, [start_us, end_us))."""
    return (np.searchsorted(chunk.key, chunk.keys_of(user, start_us)),
            np.searchsorted(chunk.key, chunk.keys_of(user, end_us)))


def _per_week(week: np.ndarray, values: np.ndarray, num_weeks: int) -> np.ndarray:
    return np.bincount(week, weights=values, minlength=num_weeks)


def _mean(total: np.ndarray, n: np.ndarray, minimum: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= minimum, total / n, np.nan)


def _population_std(n: np.ndarray, s: np.ndarray, q: np.ndarray, minimum: int) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        return np.where(n >= minimum, np.sqrt(np.maximum(q / n - mean * mean, 0.0)), np.nan)


def _generation_or_minus_one(device: str) -> int:
    generation = device_generation(device)
    return -1 if generation is None else generation


def _table(chunk: UserChunk, grid: WeekGrid, num_samples: np.ndarray, n_valid: np.ndarray,
           cover: np.ndarray, devices: np.ndarray, targets: dict[str, np.ndarray]) -> pa.Table:
    names = np.asarray(chunk.device_names, dtype=object)
    generations = np.array([_generation_or_minus_one(n) for n in chunk.device_names], np.int16)
    generation = generations[devices] if len(names) else np.zeros(len(grid), np.int16)
    columns = {
        "user_id": pa.array(np.asarray(chunk.user_ids, dtype=object)[grid.user], pa.string()),
        "week_start": pa.array(grid.week_start.astype(np.int32), pa.date32()),
        "week_start_utc": pa.array(grid.start_us, pa.timestamp("us", tz="UTC")),
        "week_end_utc": pa.array(grid.end_us, pa.timestamp("us", tz="UTC")),
        "num_samples": pa.array(num_samples.astype(np.int64)),
        "num_heart_rate_samples": pa.array(n_valid.astype(np.int64)),
        "coverage": pa.array(cover, pa.float64()),
        "device": pa.array(names[devices], pa.string()),
        "device_generation": pa.array(generation, pa.int16(), mask=generation < 0),
    }
    for name in USER_WEEK_TARGETS:
        columns[name] = pa.array(targets[name], pa.float64(), mask=np.isnan(targets[name]))
    return pa.table(columns, schema=USER_WEEKS)
