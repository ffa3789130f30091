"""A user's local calendar as UTC intervals: ISO weeks, time-of-day windows, sequence bins.

Local times are turned into instants by `first_instants`: the first UTC instant at which the
user's clock reads the given wall-clock time or later. That is DST-correct both ways: a wall
time skipped by a spring-forward transition maps to the transition instant, a repeated one
(fall back) to its first occurrence. So a local week, Monday 00:00 to the next Monday 00:00, is
the UTC interval [first_instant(Monday), first_instant(next Monday)): 168 h long, 167 h in a
spring-forward week, 169 h in a fall-back one; every instant of a user's life is in exactly one
week. A window [a, b) of local time of day is, on each local date, the interval
[first_instant(date a), first_instant(date b)): that is the set of samples whose local time of
day is in [a, b), except when a window bound falls inside an hour that a fall-back transition
repeats (no default bound does, in any zone that shifts at 01:00-03:00).

Everything is vectorised over users and weeks; the only Python loop is over the distinct time
zones of a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 24 * US_PER_HOUR
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)


@dataclass(frozen=True)
class WeekGrid:
    """Local ISO weeks, one row per (user, week). Arrays of length W."""

    user: np.ndarray  # int64, index of the user in its chunk
    week_start: np.ndarray  # int64, the local Monday as days since 1970-01-01
    start_us: np.ndarray  # int64, first instant of the week, UTC microseconds
    end_us: np.ndarray  # int64, first instant of the next week

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> WeekGrid:
        return WeekGrid(self.user[rows], self.week_start[rows], self.start_us[rows],
                        self.end_us[rows])


@dataclass(frozen=True)
class Intervals:
    """Time-of-day windows of some weeks, one row per (week, local date, piece)."""

    week: np.ndarray  # int64 index into the WeekGrid
    day: np.ndarray  # int64 local date within the week, Monday = 0
    start_us: np.ndarray  # int64 UTC
    end_us: np.ndarray  # int64 UTC


def to_local_us(utc_us: np.ndarray, timezone: str) -> np.ndarray:
    """Wall-clock microseconds since 1970-01-01 in `timezone` of UTC instants."""
    index = pd.DatetimeIndex(np.asarray(utc_us, dtype="datetime64[us]")).tz_localize("UTC")
    return index.tz_convert(timezone).tz_localize(None).as_unit("us").asi8


def first_instants(local_us: np.ndarray, timezone: str) -> np.ndarray:
    """First UTC instant (microseconds) at which a clock in `timezone` reads `local_us` or later."""
    local_us = np.asarray(local_us, dtype=np.int64)
    if len(local_us) == 0:
        return local_us.copy()
    naive = pd.DatetimeIndex(local_us.astype("datetime64[us]"))
    # Both readings of a repeated wall time, then the earlier one: robust to zones whose tzdb
    # "DST" flag is set in winter (negative DST, e.g. Europe/Dublin).
    readings = [
        naive.tz_localize(timezone, ambiguous=np.full(len(naive), is_dst),
                          nonexistent="shift_forward").as_unit("us").asi8
        for is_dst in (True, False)
    ]
    return np.minimum(*readings)


def first_instants_by_user(
    user: np.ndarray, local_us: np.ndarray, user_timezones: tuple[str, ...]
) -> np.ndarray:
    """`first_instants` of wall-clock times of many users, each in their own zone."""
    codes, zones = pd.factorize(pd.Series(user_timezones, dtype=object))
    row_zone = codes[user]
    out = np.empty(len(local_us), dtype=np.int64)
    for code, zone in enumerate(zones):
        rows = np.flatnonzero(row_zone == code)
        out[rows] = first_instants(local_us[rows], zone)
    return out


def monday_of(local_us: np.ndarray) -> np.ndarray:
    """The local Monday (days since the epoch) of the ISO week holding each wall-clock time."""
    day = np.floor_divide(local_us, US_PER_DAY)
    return day - (day + _EPOCH_WEEKDAY) % 7


def local_weeks(
    first_us: np.ndarray, last_us: np.ndarray, user_timezones: tuple[str, ...]
) -> WeekGrid:
    """Every local week from the one holding each user's first sample to the one holding the
    last (user u: `first_us[u]`, `last_us[u]`, `user_timezones[u]`)."""
    num_users = len(first_us)
    first_monday = np.empty(num_users, dtype=np.int64)
    last_monday = np.empty(num_users, dtype=np.int64)
    codes, zones = pd.factorize(pd.Series(user_timezones, dtype=object))
    for code, zone in enumerate(zones):
        users = np.flatnonzero(codes == code)
        first_monday[users] = monday_of(to_local_us(first_us[users], zone))
        last_monday[users] = monday_of(to_local_us(last_us[users], zone))
    num_weeks = (last_monday - first_monday) // 7 + 1
    user = np.repeat(np.arange(num_users, dtype=np.int64), num_weeks)
    week_number = np.arange(len(user)) - np.repeat(np.cumsum(num_weeks) - num_weeks, num_weeks)
    monday = np.repeat(first_monday, num_weeks) + 7 * week_number
    bounds = first_instants_by_user(
        np.concatenate([user, user]),
        np.concatenate([monday, monday + 7]) * US_PER_DAY,
        user_timezones,
    )
    return WeekGrid(user=user, week_start=monday, start_us=bounds[: len(user)],
                    end_us=bounds[len(user):])


def week_window(week_start: object, timezone: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """UTC bounds of the local week [Monday 00:00, next Monday 00:00) that starts on the date
    `week_start`, DST-correct: the same bounds as `local_weeks` gives that week."""
    day = np.datetime64(pd.Timestamp(week_start).date(), "D").astype(np.int64)
    start, end = first_instants(np.array([day, day + 7]) * US_PER_DAY, timezone)
    return (pd.Timestamp(int(start), unit="us", tz="UTC"),
            pd.Timestamp(int(end), unit="us", tz="UTC"))


def window_intervals(
    grid: WeekGrid, user_timezones: tuple[str, ...],
    windows: dict[str, tuple[float, float]],
) -> dict[str, Intervals]:
    """Each window [start_hour, end_hour) of local time of day on the 7 dates of every week
    (one time-zone conversion for all windows). A window that wraps midnight (start > end) is
    two pieces per date: [0, end) and [start, 24)."""
    parts = {name: _pieces(grid, *hours) for name, hours in windows.items()}
    week = np.concatenate([p[0] for p in parts.values()])
    bounds = first_instants_by_user(
        np.tile(grid.user[week], 2),
        np.concatenate([p[2] for p in parts.values()] + [p[3] for p in parts.values()]),
        user_timezones,
    )
    starts, ends = bounds[: len(week)], bounds[len(week):]
    out, at = {}, 0
    for name, (week_of, day, _, _) in parts.items():
        n = len(week_of)
        out[name] = Intervals(week=week_of, day=day, start_us=starts[at:at + n],
                              end_us=ends[at:at + n])
        at += n
    return out


def _pieces(grid: WeekGrid, start_hour: float, end_hour: float) -> tuple[np.ndarray, ...]:
    """(week, day, local start, local end) of one window's pieces, every date of every week."""
    start, end = round(start_hour * US_PER_HOUR), round(end_hour * US_PER_HOUR)
    pieces = [(start, end)] if start < end else [(0, end), (start, US_PER_DAY)]
    pieces = [(a, b) for a, b in pieces if a < b]
    per_week = 7 * len(pieces)
    week = np.repeat(np.arange(len(grid), dtype=np.int64), per_week)
    day = np.tile(np.repeat(np.arange(7, dtype=np.int64), len(pieces)), len(grid))
    offsets = np.array(pieces, dtype=np.int64).reshape(-1, 2)
    midnight = (grid.week_start[week] + day) * US_PER_DAY
    piece = np.tile(np.arange(len(pieces)), 7 * len(grid))
    return week, day, midnight + offsets[piece, 0], midnight + offsets[piece, 1]


def bin_of(timestamp_us: np.ndarray, start_us: np.ndarray, end_us: np.ndarray,
           num_bins: int) -> np.ndarray:
    """Bin of each sample when its week [start_us, end_us) is cut into `num_bins` equal bins
    (exact integer arithmetic; a DST week's bins are 1/168 shorter or longer)."""
    return ((timestamp_us - start_us) * num_bins) // (end_us - start_us)
