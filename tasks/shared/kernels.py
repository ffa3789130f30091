"""Compiled row loops of the labels and sequences stages (numba, `nogil`).

The stages are vectorised numpy; these few loops are the ones numpy can only express as several
full passes over the rows (bincounts, a running maximum), some of which hold the GIL, so chunks
binned on two threads used to wait for each other. Each kernel is one pass, releases the GIL,
and is checked against a plain numpy reference in tests/unit/test_kernels.py.

Compiled on first use and cached on disk beside this file (`cache=True`), so a process pays the
compile once per machine (~1 s) and a load after that (~0.3 s).
"""

from __future__ import annotations

import math
from typing import TypedDict

import numba
import numpy as np


class _JitOptions(TypedDict):  # typed, so that `njit(**_JIT)` matches numba's overloads
    nogil: bool
    cache: bool


_JIT: _JitOptions = {"nogil": True, "cache": True}


@numba.njit(**_JIT)
def bin_user_weeks(timestamp: np.ndarray, heart_rate: np.ndarray, heart_rate_valid: np.ndarray,
                   steps: np.ndarray, steps_valid: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   start_us: np.ndarray, end_us: np.ndarray, raw: np.ndarray,
                   moments: np.ndarray) -> None:  # pragma: no cover (compiled)
    """Bin the rows [lo[w], hi[w]) of k user-weeks into raw[w] ([k, T, 3] float32) and
    moments[w] ([k, 2, 3] float64), in place.

    Row i falls in bin floor((t_i - start_w) T / (end_w - start_w)). Per bin: channel 0 the mean
    of the valid heart rates (NaN if none), channel 1 log1p of the sum of the valid steps (NaN
    if none), channel 2 1.0 when the bin has no heart rate. moments[w, c] = (count, sum, sum of
    squares) of channel c over its non-NaN bins, for c in (0, 1)."""
    k, num_steps = raw.shape[0], raw.shape[1]
    hr_sum = np.empty(num_steps)
    hr_n = np.empty(num_steps, np.int64)
    steps_sum = np.empty(num_steps)
    steps_n = np.empty(num_steps, np.int64)
    for w in range(k):
        hr_sum[:] = 0.0
        hr_n[:] = 0
        steps_sum[:] = 0.0
        steps_n[:] = 0
        start, duration = start_us[w], end_us[w] - start_us[w]
        for i in range(lo[w], hi[w]):
            b = (timestamp[i] - start) * num_steps // duration
            if heart_rate_valid[i]:
                hr_sum[b] += heart_rate[i]
                hr_n[b] += 1
            if steps_valid[i]:
                steps_sum[b] += steps[i]
                steps_n[b] += 1
        moments[w] = 0.0
        for b in range(num_steps):
            if hr_n[b] > 0:
                value = hr_sum[b] / hr_n[b]
                raw[w, b, 0], raw[w, b, 2] = value, 0.0
                moments[w, 0, 0] += 1.0
                moments[w, 0, 1] += value
                moments[w, 0, 2] += value * value
            else:
                raw[w, b, 0], raw[w, b, 2] = np.nan, 1.0
            if steps_n[b] > 0:
                value = math.log1p(max(steps_sum[b], 0.0))
                raw[w, b, 1] = value
                moments[w, 1, 0] += 1.0
                moments[w, 1, 1] += value
                moments[w, 1, 2] += value * value
            else:
                raw[w, b, 1] = np.nan


@numba.njit(**_JIT)
def rest_mask(timestamp: np.ndarray, steps: np.ndarray, user_offsets: np.ndarray,
              window_us: int) -> np.ndarray:  # pragma: no cover (compiled)
    """bool [n]: row i is at rest when no row of its user with steps > 0 lies in
    (t_i - window_us, t_i]. Users' rows are [user_offsets[u], user_offsets[u + 1]), in time
    order."""
    out = np.empty(len(timestamp), np.bool_)
    for u in range(len(user_offsets) - 1):
        active = False  # a row with steps > 0 seen for this user
        last = 0
        for i in range(user_offsets[u], user_offsets[u + 1]):
            if steps[i] > 0:
                active, last = True, timestamp[i]
            out[i] = (not active) or timestamp[i] - last >= window_us
    return out


@numba.njit(**_JIT)
def recovery_minutes(timestamp: np.ndarray, heart_rate: np.ndarray, heart_rate_valid: np.ndarray,
                     steps: np.ndarray, lo: np.ndarray, hi: np.ndarray, threshold: np.ndarray,
                     bout_min_steps: float, max_minutes: float,
                     min_bouts: int) -> np.ndarray:  # pragma: no cover (compiled)
    """float64 [k]: per week (rows [lo[w], hi[w]), partitioning the n rows in order), the mean
    minutes from a bout end to its recovery sample; NaN below `min_bouts` counted ends or when
    threshold[w] is NaN.

    A bout row has steps >= bout_min_steps; row e ends a bout when row e + 1 is not a bout row.
    Its recovery sample is the first later row of the same week with a valid heart rate <=
    threshold[w]; it counts when it comes before the next bout row and within max_minutes."""
    out = np.full(len(lo), np.nan)
    for w in range(len(lo)):
        limit = threshold[w]
        if math.isnan(limit):
            continue
        count, total, end = 0, 0.0, -1  # end: the bout end awaiting its recovery, -1 none
        for i in range(lo[w], hi[w]):
            if steps[i] >= bout_min_steps:
                end = i  # the last bout row before a recovery is the bout's end
            elif end >= 0 and heart_rate_valid[i] and heart_rate[i] <= limit:
                minutes = (timestamp[i] - timestamp[end]) / 60_000_000
                if minutes <= max_minutes:
                    count += 1
                    total += minutes
                end = -1
        if count >= min_bouts:
            out[w] = total / count
    return out


@numba.njit(**_JIT)
def coverage(timestamp: np.ndarray, heart_rate_valid: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             start_us: np.ndarray, end_us: np.ndarray,
             num_bins: int) -> np.ndarray:  # pragma: no cover (compiled)
    """float64 [k]: per week (rows [lo[w], hi[w]) in time order, span [start_us[w], end_us[w])),
    the share of its `num_bins` equal bins that hold at least one valid heart rate."""
    out = np.zeros(len(lo))
    for w in range(len(lo)):
        start, duration = start_us[w], end_us[w] - start_us[w]
        filled, last = 0, -1
        for i in range(lo[w], hi[w]):
            if heart_rate_valid[i]:
                b = (timestamp[i] - start) * num_bins // duration  # never decreases in a week
                if b != last:
                    filled += 1
                    last = b
        out[w] = filled / num_bins
    return out
