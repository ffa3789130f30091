"""Semantic units: how closely each unit of a layer with a time axis follows, over time, states
of the input and the calendar (issue #15, item 2; docs/architecture.md §1.1).

States per input bin of a user-week, from the batch's own channels (`input_states`; the store's
standardisation undone with `InputScale`, docs/architecture.md §4.6):
- night: 1 where the local time at the bin's centre is in `night_hours` (00:00-06:00). Local time
  is read from the time-of-day channels when the store has them; else bin t is taken to start
  t x bin_seconds after local Monday 00:00 (§4.4), an hour off on the days after a DST change.
- activity: log1p(steps in the bin); 0 where the bin has no steps sample. The log, as the
  network sees it: raw step counts are heavy-tailed and r would follow a few bouts.
- hr_missing: the heart_rate_missing channel (1 where the bin has no heart rate).
- elevated_hr: 1 where heart rate > the user-week's resting level + ELEVATED_BPM (20 bpm). The
  resting level is the RESTING_PERCENTILE (10th) percentile of the user-week's measured bins
  (the labels stage's resting_heart_rate is not in the store). 0 where heart rate is missing.
- after_activity: 1 on the bins that start within AFTER_ACTIVITY_MINUTES (60) after a bout ends
  and are not active themselves; a bout is a run of active bins (steps per minute of the bin
  >= `active_steps_per_minute`). Bouts of the previous week are not seen.
A layer whose time axis is shorter than T (pooling, strides) gets, at each of its steps, the
mean of each state over the input bins the step covers (`states_at_steps`).

Correlation: Pearson r of a unit's activation with a state over every (user-week, time)
position of the sample, pooled. `StateCorrelations` keeps running sums (n, Sx, Sy, Sxx, Syy,
Sxy) per unit x state, streaming: each batch is reduced to per-user-week means and centred sums
(float32 on the batch, then float64 about a fixed shift, so a near-constant unit loses no
precision), added into the sums of the user-week's jackknife group. Memory: groups x units x
states, whatever the sample size.

Interval: positions within a user-week are far from independent, so the interval comes from a
delete-one-group jackknife over user-weeks (one user-week per group up to MAX_GROUPS, then
user-week i in group i mod MAX_GROUPS) of Fisher's z = atanh(r): z +- q SE_jack, back through
tanh, at CONFIDENCE (95%). n is the number of user-weeks. Weeks of one user count as
independent (the store's batches do not say whose they are), so with many weeks per user the
interval is too narrow. None when fewer than 3 groups, or when leaving a group out makes r
undefined.

A unit or a state that does not vary over the sample (range <= constant_atol + constant_rtol
x max|a|) has no r; dead and constant units (stats.py) track nothing and are never reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
from scipy import stats

from stethoscope.schemas.summary import SemanticUnit
from stethoscope.tasks.audits.activations.config import (
    SEMANTIC_SCHEMA,
    STATES,
    ActivationsConfig,
    InputScale,
)

ELEVATED_BPM = 20.0
RESTING_PERCENTILE = 10.0
AFTER_ACTIVITY_MINUTES = 60.0
CONFIDENCE = 0.95
MAX_GROUPS = 200


def input_states(sequence: np.ndarray, scale: InputScale, night_hours: tuple[float, float],
                 active_steps_per_minute: float) -> np.ndarray:
    """States [b, T, len(STATES)] float32 of a batch of store sequences [b, T, C] (see the
    module docstring for each state's definition)."""
    sequence = np.asarray(sequence, dtype=np.float64)
    b, num_steps, _ = sequence.shape
    missing = sequence[:, :, 2] > 0.5
    heart_rate = np.where(missing, np.nan,
                          sequence[:, :, 0] * scale.heart_rate_std + scale.heart_rate_mean)
    log_steps = np.where(sequence[:, :, 1] != 0.0,
                         np.maximum(sequence[:, :, 1] * scale.log_steps_std
                                    + scale.log_steps_mean, 0.0), 0.0)
    active = np.expm1(log_steps) >= active_steps_per_minute * scale.bin_seconds / 60.0
    with np.errstate(all="ignore"):  # a week without heart rate: no resting level, no elevation
        resting = np.nanpercentile(np.where(np.isnan(heart_rate).all(axis=1, keepdims=True),
                                            0.0, heart_rate), RESTING_PERCENTILE, axis=1)
        elevated = heart_rate > resting[:, None] + ELEVATED_BPM  # NaN compares False
    night = _in_window(_local_hours(sequence, scale), night_hours)
    after = _after_bouts(active, int(np.ceil(AFTER_ACTIVITY_MINUTES * 60 / scale.bin_seconds)))
    states = {"night": night, "activity": log_steps, "hr_missing": missing,
              "elevated_hr": elevated, "after_activity": after}
    assert tuple(states) == STATES
    return np.stack([np.broadcast_to(states[s], (b, num_steps)) for s in STATES],
                    axis=-1).astype(np.float32)


def states_at_steps(states: np.ndarray, num_layer_steps: int) -> np.ndarray:
    """States [b, T, S] at a layer's T_l steps: the mean over the input bins [j T / T_l,
    (j + 1) T / T_l) that step j covers (T_l <= T); the bin under each step when T_l > T."""
    num_steps = states.shape[1]
    if num_layer_steps == num_steps:
        return states
    if num_layer_steps > num_steps:
        return states[:, (np.arange(num_layer_steps) * num_steps) // num_layer_steps]
    edges = (np.arange(num_layer_steps + 1) * num_steps) // num_layer_steps
    cumulative = np.concatenate([np.zeros_like(states[:, :1]), np.cumsum(states, axis=1,
                                                                         dtype=np.float64)], 1)
    width = np.diff(edges)[None, :, None]
    return ((cumulative[:, edges[1:]] - cumulative[:, edges[:-1]]) / width).astype(np.float32)


class StateCorrelations:
    """Running sums for Pearson r of every unit of one layer with every state, per jackknife
    group of user-weeks; O(groups x units x states) memory whatever the sample size."""

    def __init__(self, units: int, states: Sequence[str] = STATES,
                 max_groups: int = MAX_GROUPS) -> None:
        self.states, num_states = tuple(states), len(states)
        self.max_groups = max_groups
        self.user_weeks = 0
        self.n = np.zeros(max_groups)
        self.sx, self.sxx = np.zeros((max_groups, units)), np.zeros((max_groups, units))
        self.sy = np.zeros((max_groups, num_states))
        self.syy = np.zeros((max_groups, num_states))
        self.sxy = np.zeros((max_groups, units, num_states))
        self.shift_x: np.ndarray | None = None  # the first user-week's means
        self.shift_y: np.ndarray | None = None
        self.low, self.high = np.full(units, np.inf), np.full(units, -np.inf)
        self.state_low, self.state_high = np.full(num_states, np.inf), np.full(num_states, -np.inf)

    def add(self, a: tf.Tensor, states: np.ndarray) -> None:
        """One batch: activations a [b, T_l, units], states [b, T_l, S] at the layer's steps."""
        s = tf.constant(states, dtype=tf.float32)
        a = tf.cast(a, tf.float32)
        mean_x, mean_y = tf.reduce_mean(a, axis=1), tf.reduce_mean(s, axis=1)  # [b, U], [b, S]
        cx, cy = a - mean_x[:, None], s - mean_y[:, None]
        within_xx = tf.reduce_sum(cx * cx, axis=1).numpy().astype(np.float64)  # [b, U]
        within_yy = tf.reduce_sum(cy * cy, axis=1).numpy().astype(np.float64)  # [b, S]
        within_xy = tf.einsum("btu,bts->bus", cx, cy).numpy().astype(np.float64)  # [b, U, S]
        mean_x, mean_y = mean_x.numpy().astype(np.float64), mean_y.numpy().astype(np.float64)
        if self.shift_x is None:
            self.shift_x, self.shift_y = mean_x[0].copy(), mean_y[0].copy()
        n = float(a.shape[1])
        dx, dy = mean_x - self.shift_x, mean_y - self.shift_y
        group = (self.user_weeks + np.arange(len(dx))) % self.max_groups
        np.add.at(self.n, group, n)
        np.add.at(self.sx, group, n * dx)
        np.add.at(self.sxx, group, within_xx + n * dx**2)
        np.add.at(self.sy, group, n * dy)
        np.add.at(self.syy, group, within_yy + n * dy**2)
        np.add.at(self.sxy, group, within_xy + n * dx[:, :, None] * dy[:, None, :])
        self.low = np.minimum(self.low, tf.reduce_min(a, axis=[0, 1]).numpy())
        self.high = np.maximum(self.high, tf.reduce_max(a, axis=[0, 1]).numpy())
        self.state_low = np.minimum(self.state_low, states.min(axis=(0, 1)))
        self.state_high = np.maximum(self.state_high, states.max(axis=(0, 1)))
        self.user_weeks += len(dx)

    def table(self, layer: str, tracks_nothing: np.ndarray, config: ActivationsConfig
              ) -> pd.DataFrame:
        """Rows of SEMANTIC_SCHEMA, one per unit x state; `tracks_nothing` [units] marks the
        dead and constant units, whose r is left null. `reported` is filled by
        `semantic_units`."""
        units, num_states = self.sxy.shape[1:]
        r = _pearson(np.asarray(self.n.sum()), self.sx.sum(0), self.sy.sum(0), self.sxx.sum(0),
                     self.syy.sum(0), self.sxy.sum(0))  # [U, S]
        scale = np.maximum(np.abs(self.low), np.abs(self.high))
        flat = (self.high - self.low <= config.constant_atol + config.constant_rtol * scale)
        r[flat | np.asarray(tracks_nothing, bool)] = np.nan
        r[:, self.state_high - self.state_low <= 0] = np.nan
        low, high = self._jackknife_interval(r)
        return pd.DataFrame({
            "layer": layer,
            "unit": np.repeat(np.arange(units, dtype=np.int32), num_states),
            "state": np.tile(np.array(self.states), units),
            "r": r.ravel(), "r_low": low.ravel(), "r_high": high.ravel(),
            "n": np.int64(self.user_weeks), "reported": False,
        })

    def _jackknife_interval(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        used = np.flatnonzero(self.n > 0)
        nan = np.full(r.shape, np.nan)
        if len(used) < 3:
            return nan, nan
        total = [x.sum(0) for x in (self.n, self.sx, self.sy, self.sxx, self.syy, self.sxy)]
        parts = [x[used] for x in (self.n, self.sx, self.sy, self.sxx, self.syy, self.sxy)]
        n, sx, sy, sxx, syy, sxy = (t - p for t, p in zip(total, parts, strict=True))
        left_out = _pearson(n, sx, sy, sxx, syy, sxy, groups=True)  # [G, U, S]
        with np.errstate(all="ignore"):
            z = np.arctanh(np.clip(left_out, -1 + 1e-12, 1 - 1e-12))  # [G, U, S]
            g = len(used)
            se = np.sqrt((g - 1) / g * np.sum((z - z.mean(0)) ** 2, axis=0))
            centre = np.arctanh(np.clip(r, -1 + 1e-12, 1 - 1e-12))
            q = stats.norm.ppf(0.5 + CONFIDENCE / 2)
            low, high = np.tanh(centre - q * se), np.tanh(centre + q * se)
        undefined = np.isnan(r) | np.isnan(left_out).any(axis=0)
        return np.where(undefined, np.nan, low), np.where(undefined, np.nan, high)


def semantic_units(tables: list[pd.DataFrame], config: ActivationsConfig
                   ) -> tuple[list[SemanticUnit], pd.DataFrame]:
    """Per layer and state, the `semantic_units` units of largest |r| at or above
    `semantic_threshold`, sorted by |r|; and the whole table with `reported` set."""
    table = (pd.concat(tables, ignore_index=True) if tables
             else pd.DataFrame({c: pd.Series(dtype=object) for c in SEMANTIC_SCHEMA.names}))
    strength = table["r"].abs()
    passing = table[strength >= config.semantic_threshold].assign(strength=strength)
    best = (passing.sort_values("strength", ascending=False, kind="stable")
            .groupby(["layer", "state"], sort=False).head(config.semantic_units))
    table["reported"] = table.index.isin(best.index)
    entries = [SemanticUnit(layer=row.layer, unit=int(row.unit), state=row.state,
                            r=float(row.r), n=int(row.n),
                            r_ci=None if np.isnan(row.r_low) else (float(row.r_low),
                                                                   float(row.r_high)))
               for row in best.itertuples()]
    return entries, table


def _pearson(n: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, syy: np.ndarray,
             sxy: np.ndarray, groups: bool = False) -> np.ndarray:
    """r [U, S] from sums (n scalar, sx [U], sy [S], sxx [U], syy [S], sxy [U, S]); with
    `groups` every argument has a leading axis G and so has r."""
    if groups:
        n, sx, sy, sxx, syy = n[:, None, None], sx[:, :, None], sy[:, None, :], \
            sxx[:, :, None], syy[:, None, :]
    else:
        sx, sy, sxx, syy = sx[:, None], sy[None, :], sxx[:, None], syy[None, :]
    with np.errstate(all="ignore"):
        cov = sxy - sx * sy / n
        var_x, var_y = sxx - sx**2 / n, syy - sy**2 / n
        r = cov / np.sqrt(var_x * var_y)
    return np.where((var_x > 0) & (var_y > 0), np.clip(r, -1.0, 1.0), np.nan)


def _local_hours(sequence: np.ndarray, scale: InputScale) -> np.ndarray:
    """Local time of day (hours) at each bin's centre: [b, T] from the time-of-day channels,
    else [T] from the bin's position in the week."""
    if scale.time_of_day and sequence.shape[-1] >= 5:
        angle = np.arctan2(sequence[:, :, 3], sequence[:, :, 4])  # sin, cos
        return (angle % (2 * np.pi)) * 24 / (2 * np.pi)
    centre = (np.arange(sequence.shape[1]) + 0.5) * scale.bin_seconds
    return (centre / 3600.0) % 24.0


def _in_window(hours: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    start, end = window
    if start <= end:
        return (hours >= start) & (hours < end)
    return (hours >= start) | (hours < end)  # across midnight, e.g. (22, 6)


def _after_bouts(active: np.ndarray, num_bins: int) -> np.ndarray:
    """[b, T]: not active, and at most `num_bins` bins after the last active bin (the end of a
    bout) of the same user-week."""
    steps = np.arange(active.shape[1])
    last = np.maximum.accumulate(np.where(active, steps, -1), axis=1)
    return ~active & (last >= 0) & (steps - last <= num_bins)
