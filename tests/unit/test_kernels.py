"""The compiled row loops against plain numpy and pandas references, on seeded random chunks
with the edge cases in them: nulls, empty bins and weeks, bouts at week and chunk ends, a week
whose resting heart rate is null, DST-length weeks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stethoscope.tasks.shared import kernels

MINUTE = 60_000_000
WEEK = 7 * 1440 * MINUTE


def _chunk(seed: int, num_users: int = 3, weeks_per_user: int = 2):
    """Rows of users in time order, and their weeks [start, end) partitioning the rows."""
    rng = np.random.default_rng(seed)
    ts, offsets, starts, ends = [], [0], [], []
    origin = 1_700_000_000_000_000
    for u in range(num_users):
        week_starts = origin + u * 10 * WEEK + np.arange(weeks_per_user) * WEEK
        lengths = WEEK + rng.choice([-3_600_000_000, 0, 3_600_000_000], weeks_per_user)
        week_starts = week_starts[0] + np.r_[0, np.cumsum(lengths[:-1])]
        for start, length in zip(week_starts, lengths, strict=True):
            minutes = np.sort(rng.choice(length // MINUTE, rng.integers(0, 600), replace=False))
            ts.append(start + minutes * MINUTE)
            starts.append(start)
            ends.append(start + length)
        offsets.append(sum(len(t) for t in ts))
    sizes = np.array([len(t) for t in ts])
    hi = np.cumsum(sizes)
    lo = hi - sizes
    t = np.concatenate(ts).astype(np.int64)
    n = len(t)
    active = rng.random(n) < 0.15
    steps = np.where(active, rng.integers(60, 140, n), rng.integers(0, 3, n) * (rng.random(n) < 0.2))
    heart_rate = np.where(active, 120.0, 62.0) + rng.normal(0, 6, n)
    valid = rng.random(n) > 0.1
    return dict(timestamp=t, heart_rate=np.where(valid, heart_rate, 0.0), heart_rate_valid=valid,
                steps=steps.astype(np.float64), user_offsets=np.array(offsets, dtype=np.int64),
                lo=lo.astype(np.int64), hi=hi.astype(np.int64),
                start_us=np.array(starts, dtype=np.int64), end_us=np.array(ends, dtype=np.int64))


# --- references: the numpy code the kernels replaced ------------------------------------------


def _rest_mask_numpy(c, window_us):
    lane = 30 * WEEK
    user = np.repeat(np.arange(len(c["user_offsets"]) - 1), np.diff(c["user_offsets"]))
    key = c["timestamp"] - c["timestamp"].min() + 2 * 1440 * MINUTE + user * lane
    last_active = np.maximum.accumulate(key * (c["steps"] > 0))
    return key - last_active >= window_us


def _recovery_numpy(c, threshold, bout_min_steps, max_minutes, min_bouts):
    lo, hi, n = c["lo"], c["hi"], len(c["timestamp"])
    bout = np.flatnonzero(c["steps"] >= bout_min_steps)
    ends = bout[np.diff(bout, append=n + 1) != 1]
    week = np.searchsorted(lo, ends, side="right") - 1
    keep = ~np.isnan(threshold[week])
    ends, week = ends[keep], week[keep]
    out = np.full(len(lo), np.nan)
    if len(ends) == 0:
        return out
    row_threshold = np.repeat(threshold, hi - lo)
    recovered = np.flatnonzero(c["heart_rate_valid"] & (c["heart_rate"] <= row_threshold))
    at = np.searchsorted(recovered, ends, side="right")
    found = at < len(recovered)
    first = recovered[np.minimum(at, max(len(recovered) - 1, 0))] if len(recovered) else ends
    next_bout_at = np.searchsorted(bout, ends, side="right")
    next_bout = np.where(next_bout_at < len(bout), bout[np.minimum(next_bout_at, len(bout) - 1)], n)
    minutes = (c["timestamp"][first] - c["timestamp"][ends]) / MINUTE
    counted = found & (first < next_bout) & (first < hi[week]) & (minutes <= max_minutes)
    count = np.bincount(week[counted], minlength=len(lo))
    total = np.bincount(week[counted], weights=minutes[counted], minlength=len(lo))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= min_bouts, total / count, np.nan)


def _coverage_pandas(c, num_bins):
    out = []
    for w in range(len(c["lo"])):
        rows = slice(c["lo"][w], c["hi"][w])
        t = c["timestamp"][rows][c["heart_rate_valid"][rows]]
        bins = (t - c["start_us"][w]) * num_bins // (c["end_us"][w] - c["start_us"][w])
        out.append(pd.Series(bins).nunique() / num_bins)
    return np.array(out)


def _bins_pandas(c, w, num_steps):
    rows = slice(c["lo"][w], c["hi"][w])
    frame = pd.DataFrame({
        "bin": (c["timestamp"][rows] - c["start_us"][w]) * num_steps // (c["end_us"][w] - c["start_us"][w]),
        "hr": np.where(c["heart_rate_valid"][rows], c["heart_rate"][rows], np.nan),
        "steps": c["steps"][rows]})
    by_bin = frame.groupby("bin").agg(hr=("hr", "mean"), steps=("steps", "sum"),
                                      n=("steps", "count")).reindex(range(num_steps))
    return by_bin["hr"].to_numpy(), np.where(by_bin["n"] > 0, np.log1p(by_bin["steps"]), np.nan)


# --- the kernels against them ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_rest_mask_matches_the_running_maximum(seed):
    c = _chunk(seed)
    for minutes in (1, 10, 90):
        np.testing.assert_array_equal(
            kernels.rest_mask(c["timestamp"], c["steps"], c["user_offsets"], minutes * MINUTE),
            _rest_mask_numpy(c, minutes * MINUTE))


@pytest.mark.parametrize("seed", range(8))
def test_recovery_minutes_matches_the_numpy_definition(seed):
    c = _chunk(seed)
    rng = np.random.default_rng(seed)
    threshold = 62.0 + rng.uniform(0, 15, len(c["lo"]))
    threshold[rng.random(len(threshold)) < 0.2] = np.nan  # weeks without a resting heart rate
    for max_minutes, min_bouts in ((120.0, 3), (5.0, 1)):
        np.testing.assert_allclose(
            kernels.recovery_minutes(c["timestamp"], c["heart_rate"], c["heart_rate_valid"], c["steps"],
                                     c["lo"], c["hi"], threshold, 60.0, max_minutes, min_bouts),
            _recovery_numpy(c, threshold, 60.0, max_minutes, min_bouts), rtol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_coverage_counts_bins_with_heart_rate(seed):
    c = _chunk(seed)
    for num_bins in (16, 4096):
        np.testing.assert_allclose(
            kernels.coverage(c["timestamp"], c["heart_rate_valid"], c["lo"], c["hi"], c["start_us"],
                             c["end_us"], num_bins), _coverage_pandas(c, num_bins), rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_bins_and_moments_match_a_groupby(seed):
    c = _chunk(seed)
    num_steps = 256
    k = len(c["lo"])
    raw = np.empty((k, num_steps, 3), dtype=np.float32)
    moments = np.empty((k, 2, 3))
    kernels.bin_user_weeks(c["timestamp"], c["heart_rate"], c["heart_rate_valid"], c["steps"],
                           np.ones(len(c["steps"]), dtype=bool), c["lo"], c["hi"], c["start_us"],
                           c["end_us"], raw, moments)
    for w in range(k):
        hr, log_steps = _bins_pandas(c, w, num_steps)
        np.testing.assert_allclose(raw[w, :, 0], hr, rtol=1e-6)
        np.testing.assert_allclose(raw[w, :, 1], log_steps, rtol=1e-6)
        np.testing.assert_array_equal(raw[w, :, 2], np.isnan(hr))
        for channel, values in ((0, hr), (1, log_steps)):
            finite = values[~np.isnan(values)]
            np.testing.assert_allclose(moments[w, channel],
                                       [len(finite), finite.sum(), (finite**2).sum()], rtol=1e-9)
