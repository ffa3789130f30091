"""The row-level gate of the validation stage: pure, vectorised, no I/O.

`check_rows` takes one file's rows in the canonical SENSOR_LOGS schema and returns them sorted
by (user_id, timestamp) with, per row, the first rule it breaks (0 = clean). Rules are checked
in the order of RULES; a row is counted once, under the first rule it breaks, so that
rows_in == rows_clean + rows_quarantined holds exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# code -> (rule name, what was expected, how to fix); code 0 is "clean".
RULES: dict[int, tuple[str, str, str]] = {
    1: ("missing_value", "user_id, timestamp and device are never null",
        "drop or repair the rows at the source; a sample without user, time or device cannot be placed"),
    2: ("timestamp_out_of_range", "timestamp not before `earliest` and not in the future",
        "check the device clock / the export's timezone conversion"),
    3: ("unknown_user", "every user_id is in users.parquet",
        "add the user to users.parquet (age, sex, timezone) or remove their rows"),
    4: ("heart_rate_out_of_range", "heart_rate within [heart_rate_min, heart_rate_max] bpm, or null",
        "write null for 'not measured'; values outside the range are sensor errors"),
    5: ("steps_negative", "steps >= 0, or null", "write null for 'not measured'"),
    6: ("duplicate_timestamp", "(user_id, timestamp) unique; the first clean occurrence is kept",
        "deduplicate the export; repeated rows usually come from overlapping export windows"),
    7: ("steps_implausible", "steps <= max_steps_per_minute x the interval until the user's next steps sample",
        "check the export's step aggregation interval"),
}
RULE_NAMES: dict[int, str] = {code: spec[0] for code, spec in RULES.items()}

_US_PER_MINUTE = 60_000_000


@dataclass(frozen=True)
class RowLimits:
    heart_rate_min: float
    heart_rate_max: float
    max_steps_per_minute: float
    min_step_interval_s: float
    max_step_interval_s: float
    earliest: datetime
    latest: datetime


@dataclass(frozen=True)
class CheckedRows:
    """`table` sorted by (user_id, timestamp); `rule[i]` the first rule row i breaks (0 clean);
    `source_row[i]` its position in the file as read; `user[i]` its user's number."""

    table: pa.Table
    rule: np.ndarray  # int8 [n]
    source_row: np.ndarray  # int64 [n]
    user: np.ndarray  # int64 [n]: run number of the row's user_id (0, 1, ...) in sorted order
    reordered: bool  # False: the rows were already sorted, source_row is 0..n-1


def _micros(value: datetime) -> int:
    return int(pa.scalar(value, pa.timestamp("us", tz="UTC")).value)


def _runs(user_id: pa.ChunkedArray) -> np.ndarray:
    """An int per run of equal consecutive user_id (nulls each start a run of their own)."""
    n = len(user_id)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    same = pc.equal(user_id.slice(1), user_id.slice(0, n - 1)).fill_null(False)
    return np.cumsum(np.r_[True, ~same.to_numpy(zero_copy_only=False)]) - 1


def _is_sorted(table: pa.Table, runs: np.ndarray, ts: np.ndarray) -> bool:
    """Sorted by (user_id, timestamp): run heads strictly increase, time never goes back in a run."""
    if table.num_rows == 0:
        return True
    if table["user_id"].null_count or table["timestamp"].null_count:
        return False
    heads = table["user_id"].take(pa.array(np.flatnonzero(np.r_[True, np.diff(runs) > 0]))).to_pylist()
    if any(a >= b for a, b in zip(heads, heads[1:], strict=False)):
        return False
    same_run = runs[1:] == runs[:-1]
    return bool(np.all(~same_run | (ts[1:] >= ts[:-1])))


def _micros_of(table: pa.Table) -> np.ndarray:
    """Timestamps as int64 microseconds, null as 0."""
    return table["timestamp"].cast(pa.int64()).fill_null(0).to_numpy()


def sort_rows(table: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Sort by (user_id, timestamp), stable, nulls last; skip the sort when already in order.
    Returns the table, each row's position as read, its user run number, its timestamp in
    microseconds, and whether the sort moved any row."""
    runs = _runs(table["user_id"])
    ts = _micros_of(table)
    if _is_sorted(table, runs, ts):
        return table, np.arange(table.num_rows, dtype=np.int64), runs, ts, False
    order = pc.sort_indices(table, options=pc.SortOptions(
        sort_keys=[("user_id", "ascending", "at_end"), ("timestamp", "ascending", "at_end")]))
    table = table.take(order)
    return table, order.to_numpy().astype(np.int64), _runs(table["user_id"]), _micros_of(table), True


def check_rows(table: pa.Table, known_users: pa.Array, limits: RowLimits) -> CheckedRows:
    """Apply every row rule to one file's rows (canonical schema)."""
    table, source_row, user, ts, reordered = sort_rows(table)
    n = table.num_rows
    rule = np.zeros(n, dtype=np.int8)

    def flag(code: int, mask: np.ndarray) -> None:
        rule[(rule == 0) & mask] = code

    def is_null(name: str) -> np.ndarray:
        column = table[name]
        if column.null_count == 0:
            return np.zeros(n, dtype=bool)
        return column.is_null().to_numpy(zero_copy_only=False)

    flag(1, is_null("user_id") | is_null("timestamp") | is_null("device"))

    flag(2, (ts < _micros(limits.earliest)) | (ts > _micros(limits.latest)))

    # one membership test per user run, not per row
    heads = np.flatnonzero(np.r_[True, np.diff(user) > 0]) if n else np.zeros(0, dtype=np.int64)
    known = pc.is_in(table["user_id"].take(pa.array(heads)), value_set=known_users).fill_null(False)
    flag(3, ~known.to_numpy(zero_copy_only=False)[user])

    hr = table["heart_rate"].to_numpy(zero_copy_only=False)  # null -> NaN
    hr_null = is_null("heart_rate")
    hr_bad = ~hr_null & ~((hr >= limits.heart_rate_min) & (hr <= limits.heart_rate_max))
    flag(4, hr_bad)  # NaN (as opposed to null) fails the comparison: quarantined, not coerced

    steps_null = is_null("steps")
    steps = table["steps"].fill_null(0).to_numpy()
    flag(5, ~steps_null & (steps < 0))
    flag(6, _duplicates(user, ts, rule == 0))
    flag(7, _implausible_steps(user, ts, steps, steps_null | (rule != 0), limits))
    return CheckedRows(table=table, rule=rule, source_row=source_row, user=user, reordered=reordered)


def _implausible_steps(
    user: np.ndarray, ts: np.ndarray, steps: np.ndarray, skip: np.ndarray, limits: RowLimits,
) -> np.ndarray:
    """steps > rate x interval, the interval being the time until the same user's next steps
    sample among rows not skipped (null steps, already quarantined), clipped to [min, max]; a
    user's last sample gets one minute. Only rows above the smallest possible limit are looked
    at, so the common case costs one comparison per row."""
    out = np.zeros(len(ts), dtype=bool)
    floor = limits.max_steps_per_minute * limits.min_step_interval_s / 60
    candidates = np.flatnonzero(~skip & (steps > floor))
    if candidates.size == 0:
        return out
    kept = np.flatnonzero(~skip)
    nxt_pos = np.searchsorted(kept, candidates, side="right")
    has_next = nxt_pos < kept.size
    nxt = kept[np.minimum(nxt_pos, kept.size - 1)]
    same_user = has_next & (user[nxt] == user[candidates])
    gap_us = np.where(same_user, ts[nxt] - ts[candidates], _US_PER_MINUTE).astype(np.float64)
    gap_us = np.clip(gap_us, limits.min_step_interval_s * 1e6, limits.max_step_interval_s * 1e6)
    out[candidates] = steps[candidates] > limits.max_steps_per_minute * gap_us / _US_PER_MINUTE
    return out


def _duplicates(user: np.ndarray, ts: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Among eligible rows (sorted), a row repeating the previous eligible row's key."""
    out = np.zeros(len(ts), dtype=bool)
    if eligible.all():
        out[1:] = (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])
        return out
    idx = np.flatnonzero(eligible)
    if idx.size < 2:
        return out
    repeat = (user[idx][1:] == user[idx][:-1]) & (ts[idx][1:] == ts[idx][:-1])
    out[idx[1:][repeat]] = True
    return out
