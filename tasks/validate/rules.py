"""The row-level gate of the validation stage: pure, vectorised, no I/O.

`check_rows` takes one unit's rows (CANONICAL: SENSOR_LOGS with dictionary strings) and returns them sorted
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
    2: ("empty_user_id", "user_id is not empty or blank",
        "write each row's user id at the source; an empty id names no user"),
    3: ("timestamp_out_of_range", "timestamp not before `earliest` and not in the future",
        "check the device clock / the export's timezone conversion"),
    4: ("unknown_user", "every user_id is in users.parquet",
        "add the user to users.parquet (age, sex, timezone) or remove their rows"),
    5: ("bad_user_metadata", "the user's row of users.parquet is usable: one row per user, an IANA "
        "timezone, sex F/M/U, age within [0, 120] or null (validation/rejected_users.parquet names "
        "each user set aside with the rule, column and value)",
        "repair the user's row of users.parquet (the column and value in "
        "validation/rejected_users.parquet) and re-run"),
    6: ("heart_rate_out_of_range", "heart_rate within [heart_rate_min, heart_rate_max] bpm, or null",
        "write null for 'not measured'; values outside the range are sensor errors"),
    7: ("steps_negative", "steps >= 0, or null", "write null for 'not measured'"),
    8: ("duplicate_timestamp", "(user_id, timestamp) unique; the first clean occurrence is kept",
        "deduplicate the export; repeated rows usually come from overlapping export windows"),
    9: ("steps_implausible", "steps <= max_steps_per_minute x the interval until the user's next steps sample",
        "check the export's step aggregation interval"),
}
RULE_NAMES: dict[int, str] = {code: spec[0] for code, spec in RULES.items()}
NUM_CODES = len(RULES) + 1  # codes 0 (clean) .. len(RULES)

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
    `source_row[i]` its position in the file as read (None: the rows were already sorted, so it
    is i); `user[i]` its user's dictionary code (-1 for a null user_id); `user_starts` the first
    row of each run of one user."""

    table: pa.Table
    rule: np.ndarray  # int8 [n]
    source_row: np.ndarray | None  # int64 [n]
    user: np.ndarray  # int32 [n]
    user_starts: np.ndarray  # int64 [runs]

    @property
    def reordered(self) -> bool:
        return self.source_row is not None


def _micros(value: datetime) -> int:
    return int(pa.scalar(value, pa.timestamp("us", tz="UTC")).value)


def dictionary_codes(column: pa.ChunkedArray) -> np.ndarray:
    """The int32 codes of a dictionary column whose chunks share one dictionary; null -> -1."""
    if not column.num_chunks:
        return np.zeros(0, dtype=np.int32)
    parts = [chunk.indices.fill_null(-1).to_numpy() if chunk.null_count else chunk.indices.to_numpy()
             for chunk in column.chunks]
    return np.concatenate(parts).astype(np.int32, copy=False) if len(parts) > 1 else parts[0]


def _dictionary(column: pa.ChunkedArray) -> pa.Array:
    return column.chunks[0].dictionary if column.num_chunks else pa.array([], pa.string())


def _run_starts(codes: np.ndarray) -> np.ndarray:
    """First row of each run of equal consecutive codes (each null starts a run of its own)."""
    if codes.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = codes[1:] != codes[:-1]
    change |= codes[1:] == -1
    return np.r_[0, np.flatnonzero(change) + 1]


def _is_sorted(table: pa.Table, codes: np.ndarray, starts: np.ndarray, ts: np.ndarray) -> bool:
    """Sorted by (user_id, timestamp): run heads strictly increase (so each user is one run),
    time never goes back within a run."""
    if table.num_rows == 0:
        return True
    if table["user_id"].null_count or table["timestamp"].null_count:
        return False
    heads = _dictionary(table["user_id"]).take(pa.array(codes[starts])).to_pylist()
    if any(a >= b for a, b in zip(heads, heads[1:], strict=False)):
        return False
    back = ts[1:] < ts[:-1]
    back[starts[1:] - 1] = False  # a new user may start earlier in time
    return not back.any()


def _micros_of(table: pa.Table) -> np.ndarray:
    """Timestamps as int64 microseconds, null as 0."""
    return table["timestamp"].cast(pa.int64()).fill_null(0).to_numpy()


def sort_rows(table: pa.Table) -> tuple[pa.Table, np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """Sort by (user_id, timestamp), stable, nulls last; skip the sort when already in order.
    Returns the table, each row's position as read (None when no row moved), the user codes,
    the user runs' first rows and the timestamps in microseconds."""
    codes = dictionary_codes(table["user_id"])
    starts = _run_starts(codes)
    ts = _micros_of(table)
    if _is_sorted(table, codes, starts, ts):
        return table, None, codes, starts, ts
    # Rare (files come sorted from every exporter we know): sort on decoded strings, since
    # Arrow cannot sort by a dictionary column, then encode again.
    plain = table.set_column(0, "user_id", table["user_id"].cast(pa.string()))
    order = pc.sort_indices(plain, options=pc.SortOptions(
        sort_keys=[("user_id", "ascending", "at_end"), ("timestamp", "ascending", "at_end")]))
    table = table.take(order)
    table = table.set_column(0, "user_id", plain["user_id"].take(order).dictionary_encode()
                             .cast(table.schema.field("user_id").type)).unify_dictionaries()
    codes = dictionary_codes(table["user_id"])
    return table, order.to_numpy().astype(np.int64), codes, _run_starts(codes), _micros_of(table)


def check_rows(table: pa.Table, known_users: pa.Array, limits: RowLimits,
               set_aside_users: pa.Array | None = None) -> CheckedRows:
    """Apply every row rule to one unit's rows (CANONICAL: dictionary strings). `known_users`:
    the usable users of users.parquet; `set_aside_users`: those whose metadata was set aside
    (their rows break `bad_user_metadata`, not `unknown_user`)."""
    table, source_row, user, starts, ts = sort_rows(table)
    n = table.num_rows
    rule = np.zeros(n, dtype=np.int8)

    def flag(code: int, mask: np.ndarray) -> None:
        rule[(rule == 0) & mask] = code

    def is_null(name: str) -> np.ndarray:
        column = table[name]
        if column.null_count == 0:
            return np.zeros(n, dtype=bool)
        return column.is_null().to_numpy(zero_copy_only=False)

    if table["user_id"].null_count or table["timestamp"].null_count or table["device"].null_count:
        flag(1, is_null("user_id") | is_null("timestamp") | is_null("device"))

    # one test per distinct user, not per row; code -1 (a null user, rule 1 already) -> False
    users = _dictionary(table["user_id"])
    empty = pc.equal(pc.utf8_trim_whitespace(users), "").to_numpy(zero_copy_only=False)
    if empty.any():
        flag(2, np.r_[empty, False][user])

    flag(3, (ts < _micros(limits.earliest)) | (ts > _micros(limits.latest)))

    known = pc.is_in(users, value_set=known_users).to_numpy(zero_copy_only=False)
    if not known.all():
        aside = np.zeros(len(known), dtype=bool)
        if set_aside_users is not None and len(set_aside_users):
            aside = pc.is_in(users, value_set=set_aside_users).to_numpy(zero_copy_only=False)
        flag(4, np.r_[~known & ~aside, False][user])
        flag(5, np.r_[~known & aside, False][user])

    hr = table["heart_rate"].to_numpy(zero_copy_only=False)  # null -> NaN
    hr_null = is_null("heart_rate")
    hr_bad = ~hr_null & ~((hr >= limits.heart_rate_min) & (hr <= limits.heart_rate_max))
    flag(6, hr_bad)  # NaN (as opposed to null) fails the comparison: quarantined, not coerced

    steps_null = is_null("steps")
    steps = table["steps"].fill_null(0).to_numpy()
    flag(7, ~steps_null & (steps < 0))
    flag(8, _duplicates(user, ts, rule == 0))
    flag(9, _implausible_steps(user, ts, steps, steps_null | (rule != 0), limits))
    return CheckedRows(table=table, rule=rule, source_row=source_row, user=user, user_starts=starts)


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
    """Among eligible rows (sorted), a row repeating an earlier eligible row's key. Rows of one
    key are adjacent, so only rows equal to their predecessor (rare) need a closer look."""
    out = np.zeros(len(ts), dtype=bool)
    if len(ts) < 2:
        return out
    same = np.r_[False, (user[1:] == user[:-1]) & (ts[1:] == ts[:-1])]
    if not same.any():
        return out
    if eligible.all():
        return same
    # rows in groups of one key, with more than one row: the groups' first rows plus `same`
    rows = np.union1d(np.flatnonzero(same), np.flatnonzero(same) - 1)
    group = np.cumsum(~same[rows])
    ok = eligible[rows]
    seen = np.cumsum(ok)  # eligible rows so far ...
    first = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    before = (seen - ok) - np.repeat(np.r_[0, seen[first[1:] - 1]], np.diff(np.r_[first, rows.size]))
    out[rows[ok & (before > 0)]] = True  # ... and in this group before this row
    return out
