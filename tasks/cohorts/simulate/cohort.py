"""Simulate stage: write a realistic synthetic cohort with planted, documented effects.

Owns a cohort directory (docs/architecture.md §4, `schemas.layout.CohortPaths`): `sensor_logs/
part-NNNNN.parquet` (one file per chunk of `users_per_file` users, users in order, rows sorted by
(user_id, timestamp)), `users.parquet` and `labels.parquet`, each in its `schemas.tables` schema.
The cohort is built in a hidden sibling directory and renamed into place when complete, so a
failed run leaves nothing half-written; an existing non-empty directory is never touched.

Sensor logs. One row per whole UTC minute that the device was worn, from local Monday 00:00 of
`start_date` (default 2024-03-04: the US switches to daylight time on 2024-03-10, Europe on
2024-03-31) for `weeks` local weeks. Sleep, charging and days off follow the user's local wall
clock, DST-correct. Minutes without a worn device (charging, removals, nights and days off) are
**absent rows**, never all-null rows; `steps` is never null; `heart_rate` is null in sensor
dropouts (HR missing, steps present). Typical cohort: ~10% of minutes absent, ~4% of rows
HR-null. Timezones include DST ones (America/New_York, Europe/Berlin, Australia/Sydney, ...) and
non-DST ones (Asia/Tokyo, Asia/Kolkata UTC+5:30, Pacific/Honolulu UTC-10, Pacific/Tongatapu
UTC+13); ages 18-85 (median ~46), sexes F/M/U 48/48/4%.

Physiology (per user, then per night/minute). Resting heart rate ~ N(61, 6) bpm (+3 for F);
awake +9 bpm, asleep -5 bpm, a circadian cosine of ~2.5 bpm peaking at local 16:00, a 90-minute
sleep-stage cycle of 1.5 bpm; variability is an AR(1) process of sd 3.0 bpm awake and 1.3 bpm
asleep, so night is lower and steadier. Sleep starts ~23:00 local (user sd 50 min, night sd
35 min, 50 min later on Friday/Saturday) and lasts ~7.4 h. Activity bouts (~2.5 a day, fewer
with age; 3-120 min, walking 90-125 or running 150-175 steps/min; ~8,000 steps a day) raise
heart rate by up to ~40 bpm, reached within 3 minutes and recovering exponentially with a time
constant of ~1.4 min (longer with age).

Planted condition effects (constants in `tasks.cohorts.simulate.signals`; "night" = local
00:00-06:00; deltas are the same user with and without the condition):
- hypertension: heart rate +6 bpm on every minute, day and night.
- diabetes: recovery after activity 2.5x slower (time constant ~1.4 -> ~3.5 min): 2-5 minutes
  after a bout, heart rate is ~6 bpm higher.
- sleep_apnea: while asleep, arousal surges of +8 bpm (12 an hour x severity 0.6-1.4, decaying
  over 3 minutes) and sleeping variability x1.6: night heart-rate std 4.1 -> 5.6 bpm,
  minute-to-minute (successive difference) std 1.8 -> 4.1 bpm, night median +2.5 bpm.
- high_cholesterol (the weak one): 25% fewer activity bouts, ~15% fewer daily steps, against a
  between-user spread of ~40%; no heart-rate effect.
Prevalence is logistic in age (and sex): logit p = a + b (age - 50) + c male (`PREVALENCE`; U
counts half). For F at ages 30/50/70: hypertension 13/29/51%, diabetes 4/10/22%, sleep_apnea
8/15/25% (M 14/24/38%), high_cholesterol 15/25/38%. Each label is unknown (null) with
probability `unknown_label_share` (4%).

Planted device effect. Generation-1 devices (`gen1_share` 22% of users: apple_watch_1st_gen,
fitbit_charge_hr, garmin_forerunner_235, wearos_moto_360) read +6 bpm high while the wearer
sleeps, with measurement noise sd 4.0 bpm asleep and 3.0 awake (generations 2-3: 1.6, newer:
1.0): night median +6 bpm, night minute-to-minute std 1.8 -> 5.6 bpm, daytime unchanged. A
generation-1 night thus looks like a hypertensive, apnoeic one, and a model's predictions are
worse on that stratum. Older devices also drop out more (HR-missing runs ~8% of minutes for
generation 1, ~4% for 2-3, ~2% newer; more during motion), charge daily and are left off more
often (~5% fewer rows). Devices are drawn independently of age and conditions;
`device_switch_share` (6%) of users upgrade to a newer device at a local midnight mid-cohort.

Determinism. User i draws from two streams, `SeedSequence(seed, spawn_key=(i, 0))` for its
profile and `(i, 1)` for its signals, so the same seed gives byte-identical files, and user i is
the same whatever the cohort size or `users_per_file`.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from stethoscope.schemas.atomic import staging_dir, write_parquet_atomic
from stethoscope.schemas.errors import UsageError
from stethoscope.schemas.layout import CohortPaths
from stethoscope.schemas.tables import DEFAULT_CONDITIONS, LABELS, SENSOR_LOGS, USERS
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig, SimulateResult
from stethoscope.tasks.cohorts.simulate.signals import UserProfile, simulate_user_minutes
from stethoscope.tasks.shared.progress import track

log = logging.getLogger("stethoscope.simulate")


TIMEZONES: dict[str, float] = {  # IANA name -> share of users
    "America/New_York": 0.18, "America/Los_Angeles": 0.10, "America/Sao_Paulo": 0.06,
    "Europe/London": 0.08, "Europe/Berlin": 0.14, "Asia/Kolkata": 0.06, "Asia/Tokyo": 0.10,
    "Australia/Sydney": 0.10, "Pacific/Honolulu": 0.08, "Pacific/Tongatapu": 0.10,
}
GEN1_DEVICES: dict[str, float] = {
    "apple_watch_1st_gen": 0.55, "fitbit_charge_hr": 0.25, "garmin_forerunner_235": 0.12,
    "wearos_moto_360": 0.08,
}
NEWER_DEVICES: dict[str, float] = {
    **dict.fromkeys(("apple_watch_series_2", "apple_watch_series_3", "apple_watch_series_4",
                     "apple_watch_series_5", "apple_watch_series_6", "apple_watch_series_7",
                     "apple_watch_series_8", "apple_watch_series_9", "apple_watch_series_10",
                     "apple_watch_ultra_2"), 0.045),
    **dict.fromkeys(("fitbit_charge_2", "fitbit_charge_3", "fitbit_charge_4", "fitbit_charge_5",
                     "fitbit_charge_6", "fitbit_versa_2", "fitbit_sense_2"), 0.25 / 7),
    **dict.fromkeys(("garmin_forerunner_245", "garmin_forerunner_265", "garmin_vivoactive_3",
                     "garmin_vivoactive_5", "garmin_fenix_7"), 0.03),
    **dict.fromkeys(("wearos_galaxy_watch_4", "wearos_galaxy_watch_6",
                     "wearos_pixel_watch_3"), 0.05),
}
# condition -> (intercept, per year of age over 50, male); sex U counts half male.
PREVALENCE: dict[str, tuple[float, float, float]] = {
    "hypertension": (-0.9, 0.048, 0.2),
    "diabetes": (-2.2, 0.047, 0.2),
    "sleep_apnea": (-1.75, 0.033, 0.6),
    "high_cholesterol": (-1.1, 0.03, 0.1),
}
_SEXES: dict[str, float] = {"F": 0.48, "M": 0.48, "U": 0.04}


def draw_user_profiles(config: SimulateConfig) -> list[UserProfile]:
    """Every user's profile (cheap: no signals), user i from its own profile stream."""
    width = max(5, len(str(config.users - 1)))
    return [_draw_profile(i, width, config) for i in range(config.users)]


def sensor_log_table(profiles: list[UserProfile], config: SimulateConfig) -> pa.Table:
    """The sensor-log rows of `profiles` (in order), in SENSOR_LOGS, sorted by (user_id,
    timestamp). One chunk per user, so that memory holds the table and one user's arrays."""
    return pa.concat_tables([_user_table(profile, config) for profile in profiles])


def users_table(profiles: list[UserProfile]) -> pa.Table:
    return pa.Table.from_pydict(
        {"user_id": [p.user_id for p in profiles], "age": [p.age for p in profiles],
         "sex": [p.sex for p in profiles], "timezone": [p.timezone for p in profiles]},
        schema=USERS,
    )


def labels_table(profiles: list[UserProfile]) -> pa.Table:
    columns: dict[str, list] = {"user_id": [p.user_id for p in profiles]}
    for condition in DEFAULT_CONDITIONS:
        columns[condition] = [None if condition in p.unknown_labels else int(p.has(condition))
                              for p in profiles]
    return pa.Table.from_pydict(columns, schema=LABELS)


def simulate_cohort(config: SimulateConfig, out: Path) -> SimulateResult:
    """Write a synthetic cohort to `out` (absent or empty), one sensor-log file per chunk of
    users; memory is bounded by one chunk."""
    out = Path(out)
    _refuse_non_empty(out)
    profiles = draw_user_profiles(config)
    chunks = [profiles[i : i + config.users_per_file]
              for i in range(0, len(profiles), config.users_per_file)]
    staging = staging_dir(out, "simulate")
    try:
        staged = CohortPaths(staging)
        names: list[str] = []
        num_rows = 0
        for number, chunk in enumerate(track(chunks, len(chunks), "simulate: users")):
            table = sensor_log_table(chunk, config)
            names.append(f"part-{number:05d}.parquet")
            write_parquet_atomic(table, staged.sensor_logs / names[-1], compression="zstd")
            num_rows += table.num_rows
        write_parquet_atomic(users_table(profiles), staged.users)
        write_parquet_atomic(labels_table(profiles), staged.labels)
        staging.chmod(0o755)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    paths = CohortPaths(out)
    log.info("simulated %d users, %d rows, %d files into %s", len(profiles), num_rows,
             len(names), out)
    return SimulateResult(paths=paths, num_users=len(profiles), num_rows=num_rows,
                          num_files=len(names),
                          sensor_log_files=tuple(paths.sensor_logs / n for n in names))


def _draw_profile(i: int, width: int, config: SimulateConfig) -> UserProfile:
    """User i's metadata, devices and conditions: a fixed number of draws in a fixed order."""
    rng = _rng(config.seed, i, 0)
    age = float(np.rint(18 + 67 * rng.beta(1.5, 2.0)))
    sex = _pick(rng, _SEXES)
    timezone = _pick(rng, TIMEZONES)
    gen1 = rng.random() < config.gen1_share
    first = _pick(rng, GEN1_DEVICES), _pick(rng, NEWER_DEVICES)
    switches, switch_fraction, upgrade = (rng.random() < config.device_switch_share,
                                          rng.uniform(0.2, 0.8), _pick(rng, NEWER_DEVICES))
    device = first[0] if gen1 else first[1]
    if upgrade == device:  # an upgrade is a different device
        newer = list(NEWER_DEVICES)
        upgrade = newer[(newer.index(upgrade) + 1) % len(newer)]
    switch_day = max(1, round(switch_fraction * 7 * config.weeks)) if switches else None
    male = {"M": 1.0, "U": 0.5}.get(sex, 0.0)
    u_condition, u_unknown = rng.random(len(PREVALENCE)), rng.random(len(PREVALENCE))
    conditions = {
        name for (name, (a, b, c)), u in zip(PREVALENCE.items(), u_condition, strict=True)
        if u < 1 / (1 + math.exp(-(a + b * (age - 50) + c * male)))
    }
    unknown = {name for name, u in zip(PREVALENCE, u_unknown, strict=True)
               if u < config.unknown_label_share}
    return UserProfile(
        number=i, user_id=f"u{i:0{width}d}", age=age, sex=sex, timezone=timezone,
        devices=(device, upgrade) if switches else (device,), switch_day=switch_day,
        conditions=frozenset(conditions), unknown_labels=frozenset(unknown),
    )


def _user_table(profile: UserProfile, config: SimulateConfig) -> pa.Table:
    minutes = simulate_user_minutes(profile, config.start_date, config.weeks,
                                    _rng(config.seed, profile.number, 1))
    num_rows = minutes.timestamp_us.size
    arrays = [
        pa.array([profile.user_id], pa.string()).take(np.zeros(num_rows, np.int32)),
        pa.array(minutes.timestamp_us, pa.timestamp("us", tz="UTC")),
        pa.array(minutes.heart_rate, pa.float64(), mask=np.isnan(minutes.heart_rate)),
        pa.array(minutes.steps, pa.int64()),
        pa.array(profile.devices, pa.string()).take(minutes.device_index),
    ]
    return pa.Table.from_arrays(arrays, schema=SENSOR_LOGS)


def _rng(seed: int, user: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(user, stream)))


def _pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys])
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _refuse_non_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a non-empty directory"
        raise UsageError(
            f"simulate: output path {out} is {what}; the simulator writes a new cohort and never "
            f"overwrites or mixes with existing data. Fix: pass a new --out path (or an empty "
            f"directory), or delete {out} first."
        )
