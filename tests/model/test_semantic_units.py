"""Semantic units of the activation audit (issue #15, item 2): states derived from hand-built
weeks, the streaming correlations against numpy over the whole tensor, a hand-weighted model
whose units copy the steps channel, the missing-heart-rate mask and heart rate (plus a
bias-only unit that tracks nothing), and clean cases that must stay quiet."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy.ndimage import uniform_filter1d

from stethoscope.tasks.audits.activations.audit import audit_activations
from stethoscope.tasks.audits.activations.config import (
    SEMANTIC_SCHEMA,
    STATES,
    ActivationsConfig,
    InputScale,
)
from stethoscope.tasks.audits.activations.plots import plot_heatmaps, semantic_labels
from stethoscope.tasks.audits.activations.semantic import (
    StateCorrelations,
    input_states,
    states_at_steps,
)
from stethoscope.tasks.audits.activations.task import activations_task
from tests.model.conftest import healthy_audit_model, write_array_store

T = 336  # 30-minute bins
BIN = 7 * 86400 / T
SCALE = InputScale(bin_seconds=BIN, heart_rate_mean=70.0, heart_rate_std=12.0,
                   log_steps_mean=2.0, log_steps_std=2.5)
HOURS = ((np.arange(T) + 0.5) * BIN / 3600) % 24


def weeks(n: int, seed: int = 0, diurnal: bool = True) -> np.ndarray:
    """n standardised user-weeks [n, T, 3] like a watch's: resting heart rate 55-70 bpm (5 bpm
    lower at night when `diurnal`), 5-11 walking bouts of 30-90 min (60-120 steps/min, +40 bpm,
    +15 bpm in the half hour after), idle bins < 7 steps/min, 1-4 gaps of 1-4 h without heart
    rate. Bouts fall in 08-21 h when `diurnal`, at any hour otherwise."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, T, 3), np.float32)
    for i in range(n):
        steps = rng.integers(0, 200, T).astype(float)
        bout = np.zeros(T, bool)
        for _ in range(rng.integers(5, 12)):
            start = rng.integers(0, T - 3)
            if not diurnal or 8 <= HOURS[start] < 21:
                bout[start:start + rng.integers(1, 4)] = True
        steps[bout] = rng.uniform(60, 120, bout.sum()) * 30
        heart_rate = rng.uniform(55, 70) + rng.normal(0, 3, T) - 5.0 * (diurnal & (HOURS < 6))
        heart_rate[bout] += 40
        heart_rate[np.r_[False, bout[:-1]] & ~bout] += 15
        missing = np.zeros(T, bool)
        for _ in range(rng.integers(1, 5)):
            start = rng.integers(0, T - 8)
            missing[start:start + rng.integers(2, 8)] = True
        out[i, :, 0] = np.where(missing, 0.0, (heart_rate - 70.0) / 12.0)
        out[i, :, 1] = (np.log1p(steps) - 2.0) / 2.5
        out[i, :, 2] = missing
    return out


def _batches(x: np.ndarray, size: int):
    for start in range(0, len(x), size):
        yield x[start:start + size]


def copying_model() -> keras.Model:
    """conv_1 (kernel 1, linear): unit 0 = the steps channel, unit 1 = the missing-heart-rate
    mask, unit 2 = heart rate, unit 3 = its bias 0.3 only. conv_2 copies conv_1 after an
    average pooling by 4 (a layer with T / 4 steps)."""
    sequence = keras.Input((T, 3), name="sequence")
    conv_1 = keras.layers.Conv1D(4, 1, name="conv_1")
    conv_2 = keras.layers.Conv1D(4, 1, name="conv_2")
    pooled = keras.layers.AveragePooling1D(4, name="pool")(conv_1(sequence))
    model = keras.Model(sequence, conv_2(pooled))
    kernel = np.zeros((1, 3, 4))
    kernel[0, 1, 0] = kernel[0, 2, 1] = kernel[0, 0, 2] = 1.0
    conv_1.set_weights([kernel, np.array([0.0, 0.0, 0.0, 0.3])])
    conv_2.set_weights([np.eye(4)[None], np.zeros(4)])
    return model


def test_states_of_a_hand_built_week():
    """One day of 30-minute bins: a walk 10:00-11:00, heart rate 60 bpm at rest and 95 during
    the walk, missing 20:00-21:00."""
    x = np.zeros((1, T, 3), np.float32)
    steps = np.zeros(T)
    walk = (HOURS >= 10) & (HOURS < 11) & (np.arange(T) < 48)  # the first Monday only
    steps[walk] = 3000.0  # 100 steps/min
    steps[25] = 300.0  # 10 steps/min: some steps, not a bout
    heart_rate = np.where(walk, 95.0, 60.0)
    missing = (HOURS >= 20) & (HOURS < 21)
    x[0, :, 0] = np.where(missing, 0.0, (heart_rate - 70) / 12)
    x[0, :, 1] = np.where(steps > 0, (np.log1p(steps) - 2.0) / 2.5, (0 - 2.0) / 2.5)
    x[0, :, 2] = missing

    states = dict(zip(STATES, np.moveaxis(input_states(x, SCALE, (0.0, 6.0), 20.0)[0], -1, 0),
                      strict=True))

    np.testing.assert_array_equal(states["night"], HOURS < 6)
    assert states["night"].sum() == 7 * 12
    np.testing.assert_allclose(states["activity"], np.log1p(steps), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(states["hr_missing"], missing)
    np.testing.assert_array_equal(states["elevated_hr"], walk)  # 95 > 60 + 20
    after = np.flatnonzero(states["after_activity"])
    assert after.tolist() == [22, 23]  # the walk is bins 20-21: the hour after it, two bins


def test_local_time_comes_from_the_time_of_day_channels_when_the_store_has_them():
    """A week shifted by 3 h (a user-week starting at 03:00 local, say): the channels win."""
    x = np.zeros((1, T, 5), np.float32)
    hours = (HOURS + 3.0) % 24
    x[0, :, 3], x[0, :, 4] = np.sin(2 * np.pi * hours / 24), np.cos(2 * np.pi * hours / 24)
    scale = InputScale(bin_seconds=BIN, time_of_day=True)
    night = input_states(x, scale, (0.0, 6.0), 20.0)[0, :, STATES.index("night")]
    np.testing.assert_array_equal(night, hours < 6)


def test_states_at_a_shorter_time_axis_are_means_over_the_bins_each_step_covers():
    states = np.arange(2 * 10 * 1, dtype=np.float32).reshape(2, 10, 1)
    got = states_at_steps(states, 3)  # steps cover bins [0, 3), [3, 6), [6, 10)
    np.testing.assert_allclose(got[0, :, 0], [1.0, 4.0, 7.5])
    np.testing.assert_allclose(got[1, :, 0], [11.0, 14.0, 17.5])
    assert states_at_steps(states, 10) is states


def test_streaming_correlations_match_numpy_and_the_jackknife_left_out_by_hand():
    """13 user-weeks in batches of 5, 5, 3: pooled r equals np.corrcoef over all positions; the
    interval equals the Fisher-z jackknife computed by leaving out each user-week by hand."""
    rng = np.random.default_rng(4)
    a = rng.normal(size=(13, 40, 3)).astype(np.float32) + 7.0  # offset: shifted sums matter
    s = (rng.random((13, 40, 2)) < 0.3).astype(np.float32)
    a[:, :, 0] += 0.8 * s[:, :, 0]
    acc = StateCorrelations(3, states=("a", "b"))
    for start in range(0, 13, 5):
        acc.add(a[start:start + 5], s[start:start + 5])
    table = acc.table("layer", np.zeros(3, bool), ActivationsConfig())
    assert list(table.columns) == SEMANTIC_SCHEMA.names and (table["n"] == 13).all()
    table = table.set_index(["unit", "state"])
    for unit in range(3):
        for state in range(2):
            x, y = a[:, :, unit].astype(float), s[:, :, state].astype(float)
            full = np.corrcoef(x.ravel(), y.ravel())[0, 1]
            row = table.loc[(unit, "ab"[state])]
            assert row["r"] == pytest.approx(full, abs=1e-6)
            z = np.arctanh([np.corrcoef(np.delete(x, w, 0).ravel(), np.delete(y, w, 0).ravel())
                            [0, 1] for w in range(13)])
            se = np.sqrt(12 / 13 * np.sum((z - z.mean()) ** 2))
            expected = np.tanh(np.arctanh(full) + np.array([-1, 1]) * 1.959964 * se)
            np.testing.assert_allclose([row["r_low"], row["r_high"]], expected, atol=1e-5)


def test_units_copying_steps_missing_mask_and_heart_rate_are_named_the_bias_unit_is_not():
    x = weeks(24)
    audit = audit_activations(copying_model(), _batches(x, 8), ActivationsConfig(), SCALE)

    best = {}
    for entry in audit.semantic:  # sorted by |r|: the first of a (layer, state) is its best
        best.setdefault((entry.layer, entry.state), entry)
    for layer in ("conv_1", "conv_2"):
        assert best[(layer, "activity")].unit == 0
        assert best[(layer, "hr_missing")].unit == 1
        assert best[(layer, "elevated_hr")].unit == 2
    assert best[("conv_1", "activity")].r > 0.99 and best[("conv_1", "hr_missing")].r > 0.99
    assert best[("conv_1", "elevated_hr")].r > 0.6
    assert all(e.unit != 3 for e in audit.semantic)  # bias only: tracks nothing
    assert all(e.n == 24 and abs(e.r) >= 0.5 for e in audit.semantic)
    assert [abs(e.r) for e in audit.semantic] == sorted((abs(e.r) for e in audit.semantic),
                                                        reverse=True)
    elevated = best[("conv_1", "elevated_hr")]
    assert elevated.r_ci is not None and elevated.r_ci[0] < elevated.r < elevated.r_ci[1]
    table = audit.semantic_table.set_index(["layer", "unit", "state"])
    assert table.loc[("conv_1", 3), "r"].isna().all()
    assert table["reported"].sum() == len(audit.semantic)
    assert not any(e.state == "night" for e in audit.semantic)  # no unit reads the clock

    labels = semantic_labels(audit.semantic, "conv_1")
    assert labels[0].startswith("activity r=1.00") and 3 not in labels
    figure = plot_heatmaps("conv_1", audit.samples["conv_1"], HOURS, unit_labels=labels)
    texts = [t.get_text() for t in figure.axes[1].texts]
    assert any(t.startswith("u2: elevated_hr r=0.") for t in texts)


def test_the_analysis_can_be_switched_off_and_needs_the_input_scale():
    x = weeks(4)
    off = audit_activations(copying_model(), _batches(x, 4), ActivationsConfig(semantic=False),
                            SCALE)
    unknown = audit_activations(copying_model(), _batches(x, 4))
    for audit in (off, unknown):
        assert audit.semantic == [] and audit.semantic_table is None


def test_units_of_pure_noise_stay_quiet():
    """Units that know nothing of the input: random walks smoothed over a few hours, like a
    recurrent unit's drift, against the states of real-looking weeks. Over 30 samples of 24
    user-weeks no unit reaches |r| 0.5 on any state, and the 95% intervals exclude 0 about as
    often as they should."""
    config = ActivationsConfig()
    reported, excluded, total = 0, 0, 0
    for seed in range(30):
        rng = np.random.default_rng(100 + seed)
        states = input_states(weeks(24, seed=seed), SCALE, (0.0, 6.0), 20.0)
        noise = rng.normal(size=(24, T, 8))
        noise = uniform_filter1d(noise, 8, axis=1)  # 4-hour mean: autocorrelated like states
        acc = StateCorrelations(8)
        for start in range(0, 24, 8):
            acc.add(noise[start:start + 8].astype(np.float32), states[start:start + 8])
        table = acc.table("noise", np.zeros(8, bool), config).dropna(subset=["r_low"])
        reported += int((table["r"].abs() >= config.semantic_threshold).sum())
        excluded += int(((table["r_low"] > 0) | (table["r_high"] < 0)).sum())
        total += len(table)
    assert reported == 0
    assert total == 30 * 8 * len(STATES)
    assert excluded / total < 0.1  # nominal 0.05


def test_a_random_network_on_weeks_without_a_daily_rhythm_names_nothing_for_night():
    """Nothing in these inputs follows the clock, so no unit of a network at random
    initialisation can track night; units that read heart rate or steps may track activity."""
    x = weeks(24, seed=7, diurnal=False)
    model = healthy_audit_model(T, units=4, seed=3)
    meta = np.zeros((24, 4), np.float32)
    audit = audit_activations(model, ((x[i:i + 8], meta[i:i + 8]) for i in range(0, 24, 8)),
                              ActivationsConfig(), SCALE)
    assert audit.semantic_table is not None
    assert not any(e.state == "night" for e in audit.semantic)
    night = audit.semantic_table[audit.semantic_table["state"] == "night"]["r"].abs()
    assert night.max() < 0.3


def test_task_writes_the_semantic_table_and_reports_the_entries(tmp_path: Path):
    x = weeks(6)
    write_array_store(tmp_path / "sequences", x, np.zeros((6, 4), np.float32), bin_seconds=BIN)
    copying_model().save(tmp_path / "model.keras")

    result = activations_task.fn(tmp_path / "model.keras", tmp_path / "sequences",
                                 tmp_path / "out", ActivationsConfig(batch_size=4))

    table = pq.read_table(result.semantic_file)
    assert table.schema.equals(SEMANTIC_SCHEMA)
    assert table.num_rows == 2 * 4 * len(STATES)
    assert {(e.layer, e.unit, e.state) for e in result.semantic} >= {
        ("conv_1", 0, "activity"), ("conv_1", 1, "hr_missing")}
    section = result.outcome().activations
    assert section is not None and section.semantic == result.semantic
