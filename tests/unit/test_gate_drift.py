"""The gate's data drift on seeded user-week tables with known answers: nothing between equal
profiles, a +15 bpm resting heart rate flagged, a +0.3 bpm shift significant yet too small to
matter, a device mix and a quarantine rate that move, strata too small to compare, the profile's
JSON form, and the false-alarm rate between independent nights of one population."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stethoscope.schemas.devices import DEVICE_CATALOG
from stethoscope.tasks.gate.drift import (
    Drift,
    DriftThresholds,
    compare_profiles,
    ks_distance,
    quantile_cdf,
)
from stethoscope.tasks.gate.profile import (
    ALL,
    FEATURES,
    QUANTILE_LEVELS,
    UNKNOWN_DEVICE,
    DataProfile,
    generation_stratum,
    profile_frame,
    profile_run,
    read_profile,
    summarise,
    write_profile,
)

GENERATIONS = {g: sorted(k for k, d in DEVICE_CATALOG.items() if d.generation == g)
               for g in range(1, 11)}
RULES = ("missing_value", "heart_rate_out_of_range", "duplicate_timestamp")


def user_weeks(num_users: int, seed: int, weeks: int | tuple[int, int] = 2,
               hr_shift: float = 0.0, generation_shares: dict[int, float] | None = None,
               num_unknown: int = 0) -> pd.DataFrame:
    """A user-week table: per-user traits plus weekly noise, a device per user drawn by
    generation (default: generations 1-4 equally), `num_unknown` extra users on an uncatalogued
    device. `hr_shift` moves every heart rate, so the resting heart rate moves by as much."""
    rng = np.random.default_rng(seed)
    shares = generation_shares or {1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25}
    users = num_users + num_unknown
    per_user = (np.full(users, weeks) if isinstance(weeks, int)
                else rng.integers(weeks[0], weeks[1] + 1, users))
    user = np.repeat(np.arange(users), per_user)
    n = len(user)
    generation = rng.choice(list(shares), size=num_users, p=list(shares.values()))
    devices = [str(rng.choice(GENERATIONS[g])) for g in generation] + ["acme_band"] * num_unknown
    recovery = rng.gamma(4.0, 7.0, n)
    recovery[rng.random(n) < 0.03] = np.nan  # too few bouts that week
    frame = pd.DataFrame({
        "user_id": [f"u{seed}-{u}" for u in user],
        "device": np.asarray(devices)[user],
        "device_generation": pd.array(
            [DEVICE_CATALOG[d].generation if d in DEVICE_CATALOG else None
             for d in np.asarray(devices)[user]], dtype="Int16"),
        "coverage": rng.beta(18, 2, n),
        "hr_std_day_minus_night": rng.normal(1.8, 1.5, users)[user] + rng.normal(0, 0.8, n),
        "mean_daily_steps": rng.lognormal(np.log(7500), 0.35, users)[user]
        * rng.lognormal(0, 0.2, n),
        "resting_heart_rate": rng.normal(62, 6.5, users)[user] + rng.normal(0, 2, n) + hr_shift,
        "hr_recovery_minutes": recovery,
        "night_resting_hr_change": rng.normal(0, 0.4, n),
    })
    return frame


def with_quarantine(profile: DataProfile, rows_in: int, rows: dict[str, int]) -> DataProfile:
    return DataProfile(profile.features, profile.device_mix, rows_in, dict(rows),
                       profile.user_weeks, profile.users)


def find(drifts: list[Drift], name: str, stratum: str = ALL) -> Drift:
    [found] = [d for d in drifts if d.name == name and d.stratum == stratum]
    return found


# --- the distribution drawn from quantiles --------------------------------------------------

def test_the_cdf_from_quantiles_inverts_them_and_keeps_point_masses():
    q = np.quantile(np.r_[np.zeros(30), np.linspace(1, 2, 70)], QUANTILE_LEVELS)
    assert quantile_cdf(q, np.array([-1.0, 3.0])).tolist() == [0.0, 1.0]
    # 30% sits at 0: the CDF jumps there, from 0 (left limit) to 0.3
    assert quantile_cdf(q, np.array([0.0]), left=True)[0] == 0.0
    assert 0.29 <= quantile_cdf(q, np.array([0.0]))[0] <= 0.30  # type 7: x[29] = 0 is level 0.29
    levels = np.asarray(QUANTILE_LEVELS)[40:]
    np.testing.assert_allclose(quantile_cdf(q, q[40:]), levels, atol=1e-12)


def test_ks_distance_from_quantiles_is_close_to_the_samples():
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 4000), rng.normal(0.2, 1.3, 3000)
    drawn = ks_distance(np.asarray(summarise(a).quantiles), np.asarray(summarise(b).quantiles))
    assert drawn == pytest.approx(stats.ks_2samp(a, b).statistic, abs=0.01)


# --- known answers ------------------------------------------------------------------------------

def test_identical_profiles_show_nothing_at_all():
    profile = with_quarantine(profile_frame(user_weeks(300, seed=1, num_unknown=40)),
                              2_000_000, {"missing_value": 120, "heart_rate_out_of_range": 0})
    drifts = compare_profiles(profile, profile, DriftThresholds())
    assert {d.kind for d in drifts} == {"feature", "device_mix", "quarantine"}
    assert not any(d.drifted for d in drifts)
    for d in drifts:
        assert (d.statistic, d.effect, d.p_value, d.p_adjusted) == (0.0, 0.0, 1.0, 1.0), d
        if d.kind != "device_mix":
            assert d.shift == 0.0
        if d.kind == "feature":
            assert d.psi == 0.0


def test_a_heart_rate_15_bpm_higher_is_drift_where_it_moved_only():
    reference = profile_frame(user_weeks(400, seed=10))
    current = profile_frame(user_weeks(400, seed=11, hr_shift=15.0))
    drifts = compare_profiles(reference, current, DriftThresholds())
    strata = [ALL] + [generation_stratum(g) for g in range(1, 5)]
    for stratum in strata:
        moved = find(drifts, "resting_heart_rate", stratum)
        assert moved.drifted, moved
        assert moved.shift == pytest.approx(15.0, abs=1.5)
        assert moved.effect > 1.5 and moved.psi > 1  # ~2 standard deviations
    unmoved = [d for d in drifts if d.name != "resting_heart_rate"]
    assert not any(d.drifted for d in unmoved), [d for d in unmoved if d.drifted]
    for name in ("mean_daily_steps", "coverage"):
        assert find(drifts, name).effect < 0.1


def test_a_shift_of_a_third_of_a_bpm_is_significant_but_too_small_to_matter():
    # D ~ 0.4 * 0.3 / 7 = 0.017: KS needs ~n m / (n + m) >= 30,000 users for p ~ 1e-7, which
    # survives Holm over ~60 comparisons (20,000 user-weeks a night give p ~ 0.006, too few).
    base = user_weeks(60_000, seed=20, weeks=1)
    shifted = base.assign(resting_heart_rate=base["resting_heart_rate"] + 0.3)
    drifts = compare_profiles(profile_frame(base), profile_frame(shifted), DriftThresholds())
    moved = find(drifts, "resting_heart_rate")
    assert moved.p_adjusted < 1e-3
    assert moved.shift == pytest.approx(0.3)
    assert moved.effect < 0.05 and moved.psi < 0.01
    assert not any(d.drifted for d in drifts)


def test_more_first_generation_devices_is_a_device_mix_drift():
    reference = profile_frame(user_weeks(400, seed=30, generation_shares={1: 0.1, 2: 0.45,
                                                                          3: 0.45}))
    current = profile_frame(user_weeks(400, seed=31, generation_shares={1: 0.4, 2: 0.3,
                                                                        3: 0.3}))
    drifts = compare_profiles(reference, current, DriftThresholds())
    mix = find(drifts, "device mix")
    assert mix.drifted, mix
    assert mix.effect == pytest.approx(0.3, abs=0.06)  # 30 points of share moved
    assert not any(d.drifted for d in drifts if d.kind != "device_mix")


def test_a_rule_that_starts_quarantining_is_drift_a_tiny_change_is_not():
    profile = profile_frame(user_weeks(200, seed=40))
    reference = with_quarantine(profile, 1_000_000, {"missing_value": 0, "duplicate_timestamp":
                                                     1_000})
    current = with_quarantine(profile, 1_000_000, {"missing_value": 50_000,
                                                   "duplicate_timestamp": 1_200})
    drifts = compare_profiles(reference, current, DriftThresholds())
    started = find(drifts, "missing_value")
    assert started.drifted and started.effect == pytest.approx(0.05)
    assert (started.reference_value, started.current_value) == (0.0, 0.05)
    tiny = find(drifts, "duplicate_timestamp")
    assert tiny.p_adjusted < 0.05 and not tiny.drifted  # 0.1% -> 0.12%: real, and harmless
    assert [d.name for d in drifts if d.drifted] == ["missing_value"]


def test_a_stratum_below_min_n_is_noted_not_compared():
    reference = profile_frame(user_weeks(200, seed=50, num_unknown=5))
    current = profile_frame(user_weeks(200, seed=51, num_unknown=5, hr_shift=15.0))
    drifts = compare_profiles(reference, current, DriftThresholds(min_n=30))
    small = [d for d in drifts if d.stratum == UNKNOWN_DEVICE]
    assert len(small) == len(FEATURES)
    for d in small:
        assert d.n_reference == 10 and not d.drifted
        assert (d.p_value, d.p_adjusted, d.effect) == (None, None, None)
        assert "min_n" in d.note
    assert find(drifts, "resting_heart_rate").drifted  # the rest is compared


def test_a_stratum_in_one_run_only_is_noted():
    reference = profile_frame(user_weeks(200, seed=52))
    current = profile_frame(user_weeks(200, seed=53, num_unknown=50))
    drifts = compare_profiles(reference, current, DriftThresholds())
    new = find(drifts, "resting_heart_rate", UNKNOWN_DEVICE)
    assert (new.n_reference, new.n_current, new.drifted) == (0, 100, False)
    assert "min_n" in new.note


# --- the profile's file -------------------------------------------------------------------------

def test_profile_json_round_trip(tmp_path: Path):
    profile = with_quarantine(profile_frame(user_weeks(150, seed=60, num_unknown=3)),
                              1_234_567, {"missing_value": 3, "steps_negative": 0})
    path = write_profile(profile, tmp_path / "gate" / "profile.json")
    assert read_profile(path) == profile
    assert json.loads(path.read_text())["version"] == 1
    assert path.stat().st_size < 200_000  # small, whatever the cohort


def test_a_profile_of_another_version_is_refused(tmp_path: Path):
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"version": 99, "features": {}}))
    with pytest.raises(ValueError, match="version 99"):
        read_profile(path)
    path.write_text(json.dumps({"version": 1}))
    with pytest.raises(ValueError, match="malformed"):
        read_profile(path)


def test_profile_run_reads_the_user_week_table_and_the_validation_report(tmp_path: Path):
    frame = user_weeks(100, seed=70, num_unknown=2)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.append_column("num_samples", pa.array(np.ones(len(frame), "int64"))),
                   tmp_path / "user_weeks.parquet")
    (tmp_path / "report.json").write_text(json.dumps({
        "rows_in": 5000, "rows_in_rejected_files": 0,
        "rules": {"missing_value": {"rows": 7, "expected": "...", "fix": "..."}}}))
    profile = profile_run(tmp_path / "user_weeks.parquet", tmp_path / "report.json")
    assert profile == with_quarantine(profile_frame(frame), 5000, {"missing_value": 7,
                                                                   "files_set_aside": 0})
    assert profile.users == 102 and profile.user_weeks == 204
    assert set(profile.features) == {ALL, UNKNOWN_DEVICE, *(generation_stratum(g)
                                                             for g in range(1, 5))}
    assert profile.features[ALL]["hr_recovery_minutes"].missing > 0
    assert profile_run(tmp_path / "user_weeks.parquet", None).rows_in is None


def test_a_night_that_loses_a_file_drifts_on_files_set_aside(tmp_path: Path):
    """One of four files set aside whole (a quarter of the rows, estimated from its bytes when
    unreadable) against a reference that read every file: the rows it could not read count
    like a rule's quarantine, so the gate sees them."""
    frame = user_weeks(200, seed=71)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.append_column("num_samples", pa.array(np.ones(len(frame), "int64"))),
                   tmp_path / "user_weeks.parquet")
    profiles = {}
    for night, (counted, estimated) in {"reference": (0, 0), "tonight": (0, 250_000)}.items():
        (tmp_path / f"{night}.json").write_text(json.dumps({
            "rows_in": 1_000_000 - estimated, "rows_in_rejected_files": counted,
            "rows_in_rejected_files_estimated": estimated,
            "rules": {"missing_value": {"rows": 100}}}))
        profiles[night] = profile_run(tmp_path / "user_weeks.parquet", tmp_path / f"{night}.json")
    assert profiles["tonight"].rows_in == 1_000_000
    drift = find(compare_profiles(profiles["reference"], profiles["tonight"], DriftThresholds()),
                 "files_set_aside")
    assert drift.drifted and drift.current_value == pytest.approx(0.25)
    same = find(compare_profiles(profiles["reference"], profiles["reference"], DriftThresholds()),
                "files_set_aside")
    assert not same.drifted
    from stethoscope.schemas.summary import DriftEntry, ReferenceRun
    from stethoscope.tasks.gate.findings import drift_findings

    reference = ReferenceRun(run_id="n1", path="/runs/n1", chosen="last_good")
    (finding,) = drift_findings([DriftEntry(**drift.__dict__)], reference)
    assert finding.message.startswith("rows in files set aside whole (unreadable or breaking "
                                      "the schema): 0.00% → 25.00% of rows against n1")


# --- false alarms ------------------------------------------------------------------------------

def test_independent_nights_of_one_population_rarely_raise_a_drift():
    """40 pairs of independent cohorts from one population (200-5,000 user-weeks, 1-4 weeks a
    user, all ten generations, binomial quarantines): the gate's family-wise rate is 5% per
    pair, so at most 2 of 40 pairs may show any drift."""
    sizes = np.random.default_rng(80).integers(100, 2_000, 40)
    shares = {g: 1 / len(GENERATIONS) for g in GENERATIONS}
    alarms = []
    for pair, num_users in enumerate(sizes):
        profiles = []
        for night in range(2):
            seed = 1_000 + 2 * pair + night
            frame = user_weeks(int(num_users), seed=seed, weeks=(1, 4), generation_shares=shares,
                               num_unknown=int(num_users) // 50)
            rows_in = 9_000 * len(frame)
            rng = np.random.default_rng(seed)
            profiles.append(with_quarantine(profile_frame(frame), rows_in, {
                rule: int(rng.binomial(rows_in, rate))
                for rule, rate in zip(RULES, (1e-4, 1e-3, 0.0), strict=True)}))
        drifted = [d for d in compare_profiles(*profiles, DriftThresholds()) if d.drifted]
        if drifted:
            alarms.append((pair, int(num_users), drifted))
    assert len(alarms) <= 2, alarms
