"""Minute signals of one simulated user: pure, vectorised numpy, no I/O.

`simulate_user_minutes` turns a `UserProfile` into that user's sensor-log columns. Everything
that a circadian rhythm depends on (sleep window, charging routine, whole days off) is placed
on the user's *local* wall clock; the sample grid itself is whole UTC minutes from local Monday
00:00 of `start_date` to local Monday 00:00 `weeks` later, so a spring-forward day holds 1,380
minutes and a fall-back day 1,500. The planted effects and their magnitudes are the constants
below; `tasks.cohorts.simulate.cohort`'s docstring explains them.

Random streams never depend on a condition or a device: every draw has a fixed size (per minute,
per night or per user) and happens whatever the profile, and effects are applied afterwards. So
toggling one condition of a profile with the same seed changes that condition's effect only,
which is what the counterfactual tests rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from stethoscope.schemas.devices import DEVICE_CATALOG

MINUTES_PER_DAY = 1440

# --- planted condition effects ------------------------------------------------------------
HYPERTENSION_RESTING_HR_BPM = 6.0  # added to every minute's heart rate
DIABETES_RECOVERY_FACTOR = 2.5  # post-activity recovery time constant x this
APNEA_EVENTS_PER_SLEEP_HOUR = 12.0  # arousal surges while asleep (x severity 0.6-1.4)
APNEA_SURGE_BPM = 8.0  # mean size of a surge, decaying over 3 minutes
APNEA_NIGHT_VARIABILITY_FACTOR = 1.6  # sleeping heart-rate variability x this
HIGH_CHOLESTEROL_BOUT_FACTOR = 0.75  # activity bouts per day x this (weak: users vary ~40%)

# --- planted device effects (by catalog generation) ------------------------------------------
GEN1_SLEEP_BIAS_BPM = 6.0  # generation-1 devices read this high while the wearer sleeps
GEN1_SLEEP_NOISE_BPM = 4.0  # ... with this measurement noise sd (low perfusion)
MEASUREMENT_NOISE_BPM = {1: 3.0, 2: 1.6, 3: 1.6}  # white noise sd; newer generations: 1.0
HR_DROPOUT_RUN_RATE = {1: 0.02, 2: 0.01, 3: 0.01}  # HR-missing runs (mean 4 min) per minute
MOTION_DROPOUT = {1: 0.10, 2: 0.05, 3: 0.05}  # HR missing per minute of >= 60 steps
NIGHT_OFF_PROB = {1: 0.10}  # nights the watch stays off (others: 0.05)
DAY_OFF_PROB = {1: 0.06}  # whole local days not worn (others: 0.03)

# --- physiology shared by everybody --------------------------------------------------------
_AR_PHI = 0.85  # minute-to-minute persistence of physiological variability
_AWAKE_VARIABILITY_BPM = 3.0
_SLEEP_VARIABILITY_BPM = 1.3
_ULTRADIAN_BPM, _ULTRADIAN_MINUTES = 1.5, 90.0  # sleep-stage cycle
_LEVEL_TAU_MINUTES = 8.0  # heart rate settles into sleep / wakes up over ~8 minutes
_RISE_KERNEL = np.array([0.45, 0.35, 0.2])  # heart rate reaches a bout's level over 3 minutes
_SEX_RESTING_BPM = {"F": 3.0, "U": 1.5}
_AWAKE_MINUTES_PER_DAY = 16 * 60
_CHARGE_ROUTINES = ("evening", "morning", "occasional")


@dataclass(frozen=True)
class UserProfile:
    """Who a simulated user is: metadata, true conditions and devices. Physiology (resting heart
    rate, sleep habits, activity) is drawn from the user's signal stream."""

    number: int  # position in the cohort; also selects the user's random streams
    user_id: str
    age: float
    sex: str
    timezone: str
    devices: tuple[str, ...]  # one, or two for a user who switches at local day `switch_day`
    switch_day: int | None
    conditions: frozenset[str]  # true conditions; signals follow these
    unknown_labels: frozenset[str]  # conditions written as null (unknown) in labels.parquet

    def has(self, condition: str) -> bool:
        return condition in self.conditions


@dataclass(frozen=True)
class UserMinutes:
    """One user's sensor-log columns, rows sorted by time; absent minutes are not rows."""

    timestamp_us: np.ndarray  # int64, whole UTC minutes
    heart_rate: np.ndarray  # float64 bpm, NaN = not measured
    steps: np.ndarray  # int64
    device_index: np.ndarray  # int8, index into profile.devices


def minute_grid(timezone: str, start_date: date, weeks: int) -> tuple[np.ndarray, np.ndarray]:
    """UTC seconds of every minute from local `start_date` 00:00 for `weeks` weeks, and each
    minute's local wall-clock minute counted from that local midnight (skips 60 at spring
    forward, repeats 60 at fall back)."""
    tz = ZoneInfo(timezone)
    first = datetime.combine(start_date, time(0), tzinfo=tz)
    last = datetime.combine(start_date + timedelta(weeks=weeks), time(0), tzinfo=tz)
    start_s, end_s = int(first.timestamp()), int(last.timestamp())
    utc_s = np.arange(start_s, end_s, 60, dtype=np.int64)
    local = pd.DatetimeIndex(utc_s * 1_000_000_000).tz_localize("UTC").tz_convert(tz)
    local_min = local.tz_localize(None).to_numpy().astype("datetime64[m]").astype(np.int64)
    origin = np.datetime64(start_date, "m").astype(np.int64)
    return utc_s, local_min - origin


def simulate_user_minutes(
    profile: UserProfile, start_date: date, weeks: int, rng: np.random.Generator
) -> UserMinutes:
    """The user's minute rows. `rng` is the user's own signal stream (see module docstring);
    the helpers below draw from it in this order."""
    utc_s, local = minute_grid(profile.timezone, start_date, weeks)
    body = _draw_physiology(profile, rng)
    onset, wake = _draw_nights(body, start_date, weeks, rng)
    night = _interval_index(local, onset, wake)  # [n] index of the night, -1 while awake
    asleep = night >= 0
    steps, response = _draw_activity(profile, body, asleep, rng)
    heart_rate = _draw_heart_rate(profile, body, local, onset, night, rng) + response

    device_index = np.zeros(local.size, np.int8)
    if profile.switch_day is not None:
        device_index[local // MINUTES_PER_DAY >= profile.switch_day] = 1
    generation = np.array([DEVICE_CATALOG[d].generation for d in profile.devices])[device_index]
    heart_rate = _measure(heart_rate, generation, asleep, steps, profile.age, rng)
    worn = ~_draw_unworn(body, local, onset, wake, night, int(generation[0]), rng)
    return UserMinutes(
        timestamp_us=utc_s[worn] * 1_000_000,
        heart_rate=heart_rate[worn],
        steps=steps[worn],
        device_index=device_index[worn],
    )


@dataclass(frozen=True)
class _Physiology:
    """A user's habits and body, drawn once per user (bpm, local minutes, per day)."""

    resting: float
    awake_lift: float
    sleep_dip: float
    circadian_amp: float
    bedtime: float  # minutes after local midnight; > 1440 is after midnight
    sleep_len: float
    recovery_tau: float  # minutes, before the diabetes effect
    bouts_per_day: float  # before the high-cholesterol effect
    run_share: float
    response_max: float
    apnea_severity: float
    charge_routine: str


def _draw_physiology(profile: UserProfile, rng: np.random.Generator) -> _Physiology:
    age = profile.age
    return _Physiology(
        resting=float(np.clip(61 + 6 * rng.standard_normal(), 45, 85))
        + _SEX_RESTING_BPM.get(profile.sex, 0.0),
        awake_lift=max(4.0, 9 + 2 * rng.standard_normal()),
        sleep_dip=max(2.0, 5 + 1.5 * rng.standard_normal()),
        circadian_amp=max(1.0, 2.5 + 0.7 * rng.standard_normal()),
        bedtime=float(np.clip(23 * 60 + 50 * rng.standard_normal(), 21 * 60, 25.5 * 60)),
        sleep_len=float(np.clip(7.4 * 60 + 36 * rng.standard_normal(), 5.5 * 60, 9.5 * 60)),
        recovery_tau=1.4 * (1 + 0.01 * (age - 40)) * rng.lognormal(0, 0.15),
        bouts_per_day=2.5 * rng.lognormal(0, 0.35) * max(0.4, 1 - 0.005 * (age - 45)),
        run_share=0.15 * rng.random() * (1.5 if age < 40 else 0.5),
        response_max=40 * rng.lognormal(0, 0.15),
        apnea_severity=rng.uniform(0.6, 1.4),
        charge_routine=_CHARGE_ROUTINES[int(rng.choice(3, p=[0.35, 0.25, 0.40]))],
    )


def _draw_nights(body: _Physiology, start_date: date, weeks: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sleep onset and wake of every night, in local minutes; night 0 is the evening before
    the first day. Later on Friday and Saturday nights."""
    evenings = np.arange(-1, 7 * weeks)
    weekend = np.isin((start_date.weekday() + evenings) % 7, (4, 5))
    onset = (evenings * MINUTES_PER_DAY + body.bedtime
             + 35 * rng.standard_normal(evenings.size) + 50 * weekend)
    wake = onset + body.sleep_len + 40 * rng.standard_normal(evenings.size)
    return onset, np.minimum(wake, np.append(onset[1:], np.inf))


def _draw_activity(profile: UserProfile, body: _Physiology, asleep: np.ndarray,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Steps per minute [n] (bouts + light movement, 0 asleep) and the heart-rate response."""
    n = asleep.size
    u_bout, bout_len = rng.random(n), np.clip(rng.lognormal(np.log(15), 0.6, n), 3, 120)
    running = rng.random(n) < body.run_share
    cadence = np.rint(np.where(running, rng.uniform(150, 175, n), rng.uniform(90, 125, n)))
    jitter, u_light, light = rng.normal(0, 5, n), rng.random(n), rng.integers(1, 30, n)
    bouts_per_day, tau = body.bouts_per_day, body.recovery_tau
    if profile.has("high_cholesterol"):
        bouts_per_day *= HIGH_CHOLESTEROL_BOUT_FACTOR
    if profile.has("diabetes"):
        tau *= DIABETES_RECOVERY_FACTOR
    starts = (u_bout < bouts_per_day / _AWAKE_MINUTES_PER_DAY) & ~asleep
    # Integer cadences keep the span sums exact, so a bout's end leaves exactly 0.
    bout = np.minimum(_span_sum(starts, bout_len.astype(np.int64), cadence), 200.0)
    bout = np.where(bout > 0, bout + jitter, 0.0)
    steps = np.where(asleep, 0, np.rint(bout + (u_light < 0.25) * light)).astype(np.int64)
    exertion = np.convolve(body.response_max * (1 - np.exp(-steps / 100.0)), _RISE_KERNEL)[:n]
    return steps, _peak_hold_decay(exertion, tau)


def _draw_heart_rate(profile: UserProfile, body: _Physiology, local: np.ndarray,
                     onset: np.ndarray, night: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """True heart rate [n] without activity: sleep/wake level, circadian and sleep cycles,
    AR(1) variability, apnea surges, hypertension."""
    n, asleep = local.size, night >= 0
    hour = (local % MINUTES_PER_DAY) / 60.0
    level = np.where(asleep, body.resting - body.sleep_dip, body.resting + body.awake_lift)
    level = level + body.circadian_amp * np.cos(2 * np.pi * (hour - 16.0) / 24.0)
    a = np.exp(-1.0 / _LEVEL_TAU_MINUTES)
    level = level[0] + lfilter([1 - a], [1, -a], level - level[0])
    since_onset = local - onset[np.maximum(night, 0)]
    level += asleep * _ULTRADIAN_BPM * np.sin(2 * np.pi * since_onset / _ULTRADIAN_MINUTES)

    innovation = rng.standard_normal(n)
    innovation[0] /= np.sqrt(1 - _AR_PHI**2)  # start the AR(1) process in its stationary law
    wander = lfilter([np.sqrt(1 - _AR_PHI**2)], [1, -_AR_PHI], innovation)  # unit variance
    surges = (rng.random(n) < body.apnea_severity * APNEA_EVENTS_PER_SLEEP_HOUR / 60) * rng.normal(
        APNEA_SURGE_BPM, 2.0, n)
    apnea = profile.has("sleep_apnea")
    sleep_sd = _SLEEP_VARIABILITY_BPM * (APNEA_NIGHT_VARIABILITY_FACTOR if apnea else 1.0)
    heart_rate = level + wander * np.where(asleep, sleep_sd, _AWAKE_VARIABILITY_BPM)
    if apnea:
        heart_rate += np.convolve(surges * asleep, [1.0, 0.7, 0.3])[:n]
    if profile.has("hypertension"):
        heart_rate += HYPERTENSION_RESTING_HR_BPM
    return heart_rate


def _measure(heart_rate: np.ndarray, generation: np.ndarray, asleep: np.ndarray,
             steps: np.ndarray, age: float, rng: np.random.Generator) -> np.ndarray:
    """What the device reports: bias and noise by generation, whole bpm, NaN in dropouts."""
    n = heart_rate.size
    gen1_asleep = (generation == 1) & asleep
    noise_sd = np.where(gen1_asleep, GEN1_SLEEP_NOISE_BPM,
                        _by_generation(generation, MEASUREMENT_NOISE_BPM, 1.0))
    measured = heart_rate + rng.standard_normal(n) * noise_sd + GEN1_SLEEP_BIAS_BPM * gen1_asleep
    measured = np.rint(np.clip(measured, 35.0, 225.0 - age))
    run_starts = rng.random(n) < _by_generation(generation, HR_DROPOUT_RUN_RATE, 0.005)
    run_len = rng.geometric(0.25, n)
    motion = (steps >= 60) & (rng.random(n) < _by_generation(generation, MOTION_DROPOUT, 0.02))
    measured[(_span_sum(run_starts, run_len, np.ones(n)) > 0) | motion] = np.nan
    return measured


def _draw_unworn(body: _Physiology, local: np.ndarray, onset: np.ndarray, wake: np.ndarray,
                 night: np.ndarray, first_generation: int, rng: np.random.Generator) -> np.ndarray:
    """Minutes without a worn device [n]: charging, short removals, nights and days off."""
    n, nights = local.size, onset.size
    before_bed, bed_len = rng.uniform(60, 150, nights), rng.uniform(40, 100, nights)
    after_wake, wake_len = rng.uniform(5, 45, nights), rng.uniform(30, 80, nights)
    u_charge, charge_len = rng.random(n), rng.integers(60, 150, n)
    u_off, off_len = rng.random(n), rng.integers(10, 90, n)
    u_night, u_day = rng.random(nights), rng.random(nights - 1)
    awake, routine = night < 0, body.charge_routine
    if routine == "occasional" and first_generation == 1:
        routine = "evening"  # a generation-1 battery does not last two days
    if routine == "evening":
        charging = _interval_index(local, onset - before_bed, onset - before_bed + bed_len) >= 0
    elif routine == "morning":
        charging = _interval_index(local, wake + after_wake, wake + after_wake + wake_len) >= 0
    else:  # about every 2.5 days, at any awake time
        charge_starts = awake & (u_charge < 1 / (2.5 * _AWAKE_MINUTES_PER_DAY))
        charging = _span_sum(charge_starts, charge_len, np.ones(n)) > 0
    removals = awake & (u_off < 0.5 / _AWAKE_MINUTES_PER_DAY)  # half a removal a day
    removed = _span_sum(removals, off_len, np.ones(n)) > 0
    night_off = (u_night < NIGHT_OFF_PROB.get(first_generation, 0.05))[np.maximum(night, 0)]
    day_off = (u_day < DAY_OFF_PROB.get(first_generation, 0.03))[local // MINUTES_PER_DAY]
    return charging | removed | (night_off & ~awake) | day_off


def _interval_index(values: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Index of the interval [starts[i], ends[i]) holding each value, -1 for none. Intervals are
    sorted and do not overlap; values may come in any order."""
    idx = np.searchsorted(starts, values, side="right") - 1
    inside = (idx >= 0) & (values < ends[np.maximum(idx, 0)])
    return np.where(inside, idx, -1)


def _span_sum(starts: np.ndarray, lengths: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per minute, the sum of weights[s] over the spans [s, s + lengths[s]) of each start s."""
    n = starts.size
    idx = np.flatnonzero(starts)
    diff = np.zeros(n + 1)
    np.add.at(diff, idx, weights[idx])
    np.add.at(diff, np.minimum(idx + lengths[idx], n), -weights[idx])
    return np.cumsum(diff[:-1])


def _peak_hold_decay(x: np.ndarray, tau: float) -> np.ndarray:
    """y[t] = max over s <= t of x[s] * exp(-(t - s) / tau): follows a rise at once, recovers
    exponentially. Computed as a running maximum in the log domain (x >= 0)."""
    t = np.arange(x.size) / tau
    with np.errstate(divide="ignore"):
        running = np.maximum.accumulate(np.log(x) + t)
    return np.exp(running - t)


def _by_generation(generation: np.ndarray, table: dict[int, float], default: float) -> np.ndarray:
    out = np.full(generation.shape, default)
    for gen, value in table.items():
        out[generation == gen] = value
    return out
