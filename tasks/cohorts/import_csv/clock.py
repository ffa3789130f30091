"""Time for `stethoscope import-csv`: wall clock -> UTC, duplicate instants, the channel join.

`localise_wall_clock` converts one file's naive local times to UTC without ever raising on a
DST transition (the rules for the spring-forward gap and the fall-back hour are in the
docstring of tasks/cohorts/import_csv/importer.py); `drop_duplicate_instants` keeps the first row of every
instant; `join_channels` joins heart rate and steps on the exact timestamp into SENSOR_LOGS.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from stethoscope.schemas.tables import SENSOR_LOGS
from stethoscope.tasks.cohorts.import_csv.config import Channel

_US_PER_S = 1_000_000


@dataclass(frozen=True)
class LocalisedTimes:
    """Wall-clock times converted to UTC (int64 microseconds since the epoch)."""

    utc_us: np.ndarray
    num_nonexistent: int
    num_ambiguous_resolved: int
    num_ambiguous_unresolved: int


def localise_wall_clock(local: np.ndarray, timezone: str) -> LocalisedTimes:
    """Convert naive wall-clock times (datetime64, in file order) to UTC; the rules are in
    the docstring of tasks/cohorts/import_csv/importer.py."""
    index = pd.DatetimeIndex(np.asarray(local, dtype="datetime64[us]"))
    n = len(index)
    # Both readings of every row; they differ only in the fall-back hour, and are NaT (the
    # minimum int64) only in the spring-forward gap.
    first = index.tz_localize(timezone, ambiguous=np.ones(n, bool), nonexistent="NaT").asi8
    second = index.tz_localize(timezone, ambiguous=np.zeros(n, bool), nonexistent="NaT").asi8
    nonexistent = first == np.iinfo(np.int64).min
    earlier, later = np.minimum(first, second), np.maximum(first, second)
    utc = earlier.copy()

    if nonexistent.any():
        # The last instant before the gap carries the offset in force before it.
        gap = index[nonexistent]
        before = gap.tz_localize(timezone, nonexistent="shift_backward")
        offset_us = before.tz_localize(None).asi8 - before.asi8
        utc[nonexistent] = gap.asi8 - offset_us

    ambiguous = ~nonexistent & (first != second)
    wall = index.asi8
    resolved = unresolved = 0
    for run in _ambiguous_runs(np.flatnonzero(ambiguous), wall):
        steps_back = np.flatnonzero(np.diff(wall[run]) < 0)
        if len(steps_back) == 1:
            second_pass = run[steps_back[0] + 1 :]
            utc[second_pass] = later[second_pass]
            resolved += len(run)
        else:
            unresolved += len(run)
    return LocalisedTimes(utc, int(nonexistent.sum()), resolved, unresolved)


def _ambiguous_runs(positions: np.ndarray, wall_us: np.ndarray) -> Iterator[np.ndarray]:
    """Runs of consecutive ambiguous rows; a new local date starts a new run (transition)."""
    if len(positions) == 0:
        return
    day = wall_us[positions] // (86_400 * _US_PER_S)
    breaks = np.flatnonzero((np.diff(positions) != 1) | (np.diff(day) != 0)) + 1
    yield from np.split(positions, breaks)


def drop_duplicate_instants(utc_us: np.ndarray) -> tuple[np.ndarray, int]:
    """Row positions (sorted by time) that keep the first row, in file order, of every instant;
    and how many rows were dropped."""
    order = np.argsort(utc_us, kind="stable")
    ordered = utc_us[order]
    keep = np.ones(len(order), bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return order[keep], int((~keep).sum())


def join_channels(
    user_id: str, device: str, channels: dict[Channel, tuple[np.ndarray, pa.Array]]
) -> pa.Table:
    """Full outer join of each channel's (sorted unique utc_us, values) on the timestamp."""
    timestamps = np.unique(np.concatenate([t for t, _ in channels.values()] or [np.empty(0, "i8")]))
    n = len(timestamps)
    columns: dict[str, pa.Array] = {}
    for channel, type_ in (("heart_rate", pa.float64()), ("steps", pa.int64())):
        if channel not in channels:
            columns[channel] = pa.nulls(n, type_)
            continue
        times, values = channels[channel]
        take = np.full(n, -1, dtype=np.int64)
        take[np.searchsorted(timestamps, times)] = np.arange(len(times))
        # take() with a null index yields null: the rows this channel has no sample for.
        columns[channel] = values.take(pa.array(take, mask=take < 0)).cast(type_)
    return pa.table(
        {
            "user_id": pa.repeat(pa.scalar(user_id), n),
            "timestamp": pa.array(timestamps, type=pa.timestamp("us", tz="UTC")),
            "heart_rate": columns["heart_rate"],
            "steps": columns["steps"],
            "device": pa.repeat(pa.scalar(device), n),
        },
        schema=SENSOR_LOGS,
    )
