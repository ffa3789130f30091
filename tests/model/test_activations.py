"""The activation audit against hand-weighted models whose dead, constant and saturated units
are known exactly, a healthy model that must stay quiet, a full-tensor reference for the
streaming statistics, the dead-share callback and the task shell on a tiny store."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest

from stethoscope.model.callbacks import DeadUnitMonitor, activation_layers, build_probe
from stethoscope.tasks.audits.activations.audit import audit_activations
from stethoscope.tasks.audits.activations.config import UNITS_SCHEMA, ActivationsConfig
from stethoscope.tasks.audits.activations.findings import activation_findings
from stethoscope.tasks.audits.activations.plots import plot_heatmaps
from stethoscope.tasks.audits.activations.task import activations_task
from tests.model.conftest import healthy_audit_model, write_array_store

T, C, M = 64, 3, 4


def _codes(findings) -> set[str]:
    return {f.code for f in findings}


def _batches(x: np.ndarray, size: int, metadata: np.ndarray | None = None):
    for start in range(0, len(x), size):
        part = x[start : start + size]
        yield part if metadata is None else (part, metadata[start : start + size])


def planted_model(seed: int = 0) -> keras.Model:
    """conv_1 units 1, 4 and dense_1 unit 2: weights 0, bias -1 -> ReLU(-1) = 0, dead.
    conv_2 units 0, 3 read only conv_1 units 1, 4 -> ReLU(bias 0.5), constant.
    Every other unit has a positive bias and reads a varying input, so it is neither."""
    rng = np.random.default_rng(seed)
    sequence = keras.Input((T, C), name="sequence")
    conv_1 = keras.layers.Conv1D(6, 3, padding="same", activation="relu", name="conv_1")
    conv_2 = keras.layers.Conv1D(5, 3, padding="same", activation="relu", name="conv_2")
    dense_1 = keras.layers.Dense(4, activation="relu", name="dense_1")
    raw = keras.layers.Dense(2, name="raw_output")
    model = keras.Model(sequence, raw(dense_1(conv_2(conv_1(sequence)))))

    kernel, bias = rng.normal(0, 0.5, (3, C, 6)), np.full(6, 0.1)
    kernel[:, :, [1, 4]], bias[[1, 4]] = 0.0, -1.0
    conv_1.set_weights([kernel, bias])
    kernel, bias = rng.normal(0, 0.5, (3, 6, 5)), np.full(5, 0.1)
    for unit in (0, 3):
        kernel[:, :, unit] = 0.0
        kernel[:, [1, 4], unit] = 1.0  # reads the dead units only
        bias[unit] = 0.5
    conv_2.set_weights([kernel, bias])
    kernel, bias = rng.normal(0, 0.3, (5, 4)), np.full(4, 0.5)
    kernel[0, :] = 2.0  # every live unit also reads conv_2 unit 0 (0.5): mostly positive
    kernel[:, 2], bias[2] = 0.0, -1.0
    dense_1.set_weights([kernel, bias])
    return model


def healthy_model(seed: int = 0) -> keras.Model:
    """A DeepHeart-shaped network at random initialisation (see healthy_audit_model)."""
    return healthy_audit_model(T, units=4, seed=seed, channels=C, metadata_size=M)


def _data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, T, C)).astype("float32"), rng.normal(size=(n, M)).astype("float32")


def test_planted_dead_and_constant_units_are_found_exactly():
    x, _ = _data(20)
    audit = audit_activations(planted_model(), _batches(x, 8))

    by_name = {layer.name: layer for layer in audit.layers}
    assert list(by_name) == ["conv_1", "conv_2", "dense_1", "raw_output"]
    assert by_name["conv_1"].dead_units == [1, 4]
    assert by_name["conv_1"].dead_fraction == pytest.approx(2 / 6)
    assert by_name["conv_1"].constant_units == []  # dead units are not also reported constant
    assert by_name["conv_2"].dead_units == []
    assert by_name["conv_2"].constant_units == [0, 3]
    assert by_name["dense_1"].dead_units == [2]
    assert by_name["dense_1"].constant_units == []
    assert by_name["raw_output"].dead_units == by_name["raw_output"].constant_units == []
    assert all(layer.saturated_fraction == 0.0 for layer in audit.layers)

    units = audit.units.set_index(["layer", "unit"])
    assert units.loc[("conv_1", 1), "zero_share"] == 1.0
    assert units.loc[("conv_2", 0), "constant_share"] == 1.0
    assert units.loc[("conv_2", 0), "temporal_std_mean"] == pytest.approx(0.0, abs=1e-7)
    assert units["saturated_share"].isna().all()  # ReLU and linear outputs are unbounded

    findings = activation_findings(audit.layers)
    assert _codes(findings) == {"DEAD_UNITS", "CONSTANT_UNITS"}
    dead = next(f for f in findings if f.code == "DEAD_UNITS")
    assert "conv_1 2/6 units [1, 4]" in dead.message and "dense_1 1/4 units [2]" in dead.message
    assert dead.severity == "warning" and "Leaky ReLU" in dead.recommendation


def test_dead_finding_is_an_error_from_the_configured_share():
    x, _ = _data(8)
    audit = audit_activations(planted_model(), _batches(x, 8))
    findings = activation_findings(audit.layers, ActivationsConfig(error_fraction=0.25))
    assert {f.code: f.severity for f in findings}["DEAD_UNITS"] == "error"  # conv_1: 2/6


def test_healthy_model_has_no_findings():
    x, meta = _data(12)
    audit = audit_activations(healthy_model(), _batches(x, 5, meta))

    assert {layer.name for layer in audit.layers} == {
        "conv_1", "conv_2", "initial_state", "bilstm", "raw_output", "head_a"}
    assert activation_findings(audit.layers) == []
    assert all(not layer.dead_units and not layer.constant_units for layer in audit.layers)


def test_layers_without_time_axis_are_constant_across_user_weeks_only():
    """initial_state and the head have one position per user-week: with one user-week there is
    nothing to compare (no finding); metadata that is the same for everyone leaves every unit of
    initial_state flat, which says nothing about the units (no finding either); a unit whose
    weights are zero emits its bias while the others follow the metadata: constant."""
    x, meta = _data(4)
    model = healthy_model()
    one = audit_activations(model, _batches(x[:1], 1, meta[:1]))
    assert activation_findings(one.layers) == []
    assert one.units.set_index("layer").loc["initial_state", "constant_share"].isna().all()
    same_metadata = np.repeat(meta[:1], 4, axis=0)
    flat = audit_activations(model, _batches(x, 2, same_metadata))
    by_name = {layer.name: layer for layer in flat.layers}
    assert by_name["initial_state"].constant_units == []
    assert flat.units.set_index("layer").loc["initial_state", "constant_share"].isna().all()
    assert by_name["head_a"].constant_units == []  # the head still sees the sequences
    kernel, bias = model.get_layer("initial_state").get_weights()
    kernel[:, 3], bias[3] = 0.0, 0.5  # unit 3 now emits tanh(0.5) whatever the metadata
    model.get_layer("initial_state").set_weights([kernel, bias])
    varied = audit_activations(model, _batches(x, 2, meta))
    assert {layer.name: layer for layer in varied.layers}["initial_state"].constant_units == [3]


def test_saturated_units_are_counted_for_bounded_outputs_only():
    """tanh unit 0 and sigmoid unit 1 get weight 50 on inputs with |x| in [0.5, 1]: always
    within 0.01 of a bound. The other units (weight 0.1) never are."""
    rng = np.random.default_rng(2)
    sequence = keras.Input((T, 1), name="sequence")
    tanh = keras.layers.Dense(3, activation="tanh", name="tanh_1")
    sigmoid = keras.layers.Dense(2, activation="sigmoid", name="sigmoid_1")
    model = keras.Model(sequence, [tanh(sequence), sigmoid(sequence)])
    tanh.set_weights([np.array([[50.0, 0.1, 0.1]]), np.zeros(3)])
    sigmoid.set_weights([np.array([[0.1, -50.0]]), np.zeros(2)])
    x = (rng.uniform(0.5, 1.0, (6, T, 1)) * rng.choice([-1, 1], (6, T, 1))).astype("float32")

    audit = audit_activations(model, _batches(x, 4))

    shares = audit.units.set_index(["layer", "unit"])["saturated_share"]
    assert shares.to_dict() == {("tanh_1", 0): 1.0, ("tanh_1", 1): 0.0, ("tanh_1", 2): 0.0,
                                ("sigmoid_1", 0): 0.0, ("sigmoid_1", 1): 1.0}
    assert [layer.saturated_fraction for layer in audit.layers] == [pytest.approx(1 / 3), 0.5]
    assert _codes(activation_findings(audit.layers)) == {"SATURATED_UNITS"}


def test_streaming_statistics_match_the_full_tensor_and_hold_two_batches_at_most():
    """11 user-weeks in batches of 4, 4, 3 (3 of them all-zero, so every conv unit is constant
    on exactly those); the result equals numpy over the whole activation tensor, and a batch is
    released before the batch after next is requested."""
    keras.utils.set_random_seed(3)
    sequence = keras.Input((T, C), name="sequence")
    metadata = keras.Input((M,), name="metadata")
    x = keras.layers.Conv1D(6, 3, padding="same", activation="relu", name="conv_1")(sequence)
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm")(x)
    init = keras.layers.Dense(3, activation="relu", name="meta_dense")(metadata)  # no time axis
    model = keras.Model([sequence, metadata], [x, init])
    xs, meta = _data(11, seed=4)
    xs[[2, 5, 9]] = 0.0

    alive: list[weakref.ref] = []

    def generator():
        for start in range(0, 11, 4):
            assert all(ref() is None for ref in alive[:-1]), "the audit kept an old batch"
            part = xs[start : start + 4].copy()
            alive.append(weakref.ref(part))
            yield part, meta[start : start + 4]

    config = ActivationsConfig(heatmap_user_weeks=2)
    audit = audit_activations(model, generator(), config)
    assert audit.num_user_weeks == 11 and len(alive) == 3

    layers = activation_layers(model)
    full = build_probe(model, layers).predict([xs, meta], verbose=0)
    units = audit.units.set_index(["layer", "unit"])
    for layer, a in zip(layers, full, strict=True):
        got = units.loc[layer.name]
        np.testing.assert_array_equal(got["zero_share"], (a == 0).mean(axis=tuple(range(a.ndim - 1))))
        if a.ndim == 3:
            flat = np.ptp(a, axis=1) <= 1e-7 + 1e-6 * np.abs(a).max(axis=1)
            np.testing.assert_array_equal(got["constant_share"], flat.mean(axis=0))
            np.testing.assert_allclose(got["temporal_std_mean"], a.std(axis=1).mean(axis=0),
                                       rtol=1e-4, atol=1e-7)
            np.testing.assert_array_equal(audit.samples[layer.name], a[:2])
        else:
            assert got["temporal_std_mean"].isna().all()
            np.testing.assert_array_equal(got["constant_share"], (np.ptp(a, axis=0) == 0) * 1.0)
    assert units.loc["conv_1", "constant_share"].min() >= 3 / 11  # the three all-zero weeks
    assert units.loc["lstm", "saturated_share"].notna().all()  # LSTM outputs are tanh-bounded
    np.testing.assert_array_equal(
        units.loc["lstm", "saturated_share"], (np.abs(full[1]) > 0.99).mean(axis=(0, 1)))
    assert set(audit.samples) == {"conv_1", "lstm"}  # heatmaps: convolutional and recurrent


def test_heatmap_marks_night_or_says_it_cannot():
    sample = np.random.default_rng(0).normal(size=(2, T, 4))
    hours = (np.arange(T) * 7 * 24 / T) % 24
    with_night = plot_heatmaps("conv_1", sample, hours)
    without = plot_heatmaps("conv_1", sample, None)
    assert len(with_night.axes) == len(without.axes) == 2 * 2 + 2  # strip + panel (+ colorbar)
    strip = with_night.axes[0]
    night = strip.images[0].get_array()
    assert night.shape == (1, T) and night.sum() == ((hours < 6).sum())
    assert "night not marked" in without.axes[0].texts[0].get_text()


def test_dead_unit_monitor_records_when_units_died(tmp_path: Path):
    """dense_1 is alive at initialisation; one SGD step of size 100 on a loss that pushes its
    (positive-input) outputs down drives weights and bias negative: dead from epoch 1 on, and the
    frozen raw_output then emits its bias 0.5 only."""
    sequence = keras.Input((T, C), name="sequence")
    dense_1 = keras.layers.Dense(4, activation="relu", name="dense_1")
    raw = keras.layers.Dense(1, name="raw_output")
    model = keras.Model(sequence, raw(dense_1(sequence)))
    dense_1.set_weights([np.full((C, 4), 0.1), np.full(4, 0.1)])
    raw.set_weights([np.ones((4, 1)), np.full(1, 0.5)])
    raw.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=100.0), loss="mae")
    x = np.random.default_rng(0).uniform(0.5, 1.0, (8, T, C)).astype("float32")
    path = tmp_path / "dead_units.json"

    monitor = DeadUnitMonitor(x[:4], path=path)
    history = model.fit(x, np.zeros((8, T, 1), "float32"), batch_size=8, epochs=2, verbose=0,
                        callbacks=[monitor])

    rows = json.loads(path.read_text())
    dense = [(r["epoch"], r["dead_fraction"], r["dead_units"]) for r in rows
             if r["layer"] == "dense_1"]
    assert dense == [(0, 0.0, []), (1, 1.0, [0, 1, 2, 3]), (2, 1.0, [0, 1, 2, 3])]
    assert history.history["dead_fraction/dense_1"] == [1.0, 1.0]
    assert history.history["dead_fraction/raw_output"] == [0.0, 0.0]

    x_val = np.random.default_rng(1).uniform(0.5, 1.0, (4, T, C)).astype("float32")
    audit = audit_activations(model, _batches(x_val, 4))
    findings = activation_findings(audit.layers, dead_history=rows)
    assert _codes(findings) == {"DEAD_UNITS", "CONSTANT_UNITS"}  # raw_output now emits its bias
    assert "first dead after epoch 1 of 2" in findings[0].message
    assert findings[0].severity == "error"  # 4/4 units dead


def test_dead_unit_monitor_replaces_the_epochs_a_resumed_run_repeats(tmp_path: Path):
    """An attempt that recorded epochs 0-2 died before epoch 2's checkpoint: the next attempt
    fits from epoch 1 (initial_epoch=1) and its epoch 2 replaces the dead attempt's, never a
    third epoch of a two-epoch run. A run from scratch in the same file starts it anew."""
    sequence = keras.Input((T, C), name="sequence")
    model = keras.Model(sequence, keras.layers.Dense(1, name="raw_output")(
        keras.layers.Dense(4, activation="relu", name="dense_1")(sequence)))
    model.compile(optimizer="sgd", loss="mae")
    x, y = np.ones((4, T, C), "float32"), np.zeros((4, T, 1), "float32")
    path = tmp_path / "dead_units.json"
    model.fit(x, y, epochs=2, verbose=0, callbacks=[DeadUnitMonitor(x, path=path)])
    epochs = lambda: [r["epoch"] for r in json.loads(path.read_text()) if r["layer"] == "dense_1"]  # noqa: E731
    assert epochs() == [0, 1, 2]

    model.fit(x, y, initial_epoch=1, epochs=2, verbose=0, callbacks=[DeadUnitMonitor(x, path=path)])
    assert epochs() == [0, 1, 2]
    model.fit(x, y, epochs=1, verbose=0, callbacks=[DeadUnitMonitor(x, path=path)])
    assert epochs() == [0, 1]


def test_task_writes_units_table_and_heatmaps(tmp_path: Path):
    x, meta = _data(7)
    write_array_store(tmp_path / "sequences", x, meta, bin_seconds=7 * 24 * 3600 / T)
    healthy_model().save(tmp_path / "model.keras")
    out = tmp_path / "audits" / "activations"

    result = activations_task.fn(tmp_path / "model.keras", tmp_path / "sequences", out,
                                 ActivationsConfig(batch_size=3, max_user_weeks=5))

    assert result.num_user_weeks == 5 and result.findings == []
    table = pq.read_table(result.units_file)
    assert table.schema.equals(UNITS_SCHEMA)
    assert set(table.column("layer").to_pylist()) == {layer.name for layer in result.layers}
    assert sorted(p.name for p in result.heatmap_files) == [
        "heatmap_bilstm.png", "heatmap_conv_1.png", "heatmap_conv_2.png"]
    assert all(p.stat().st_size > 0 for p in result.heatmap_files)
