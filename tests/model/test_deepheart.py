"""The network: shapes and layer names per variant, what raw_output depends on, save/load,
masked losses, and that a tiny fit learns a planted signal."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pydantic
import pytest
import tensorflow as tf

from stethoscope.model.config import ModelConfig, TaskSpec, head_name, inspected_layer_names
from stethoscope.model.deepheart import build_model, transfer_weights
from stethoscope.model.losses import MaskedBinaryCrossentropy, MaskedMeanSquaredError

T = 64
TASKS = [
    TaskSpec(name="diabetes", kind="classification"),
    TaskSpec(name="hr_std_day_minus_night", kind="regression", offset=0.5, scale=2.0),
]
VARIANTS = {
    "default": {},
    "relu": {"activation": "relu"},
    "lstm": {"recurrence": "lstm"},
    "bigru": {"recurrence": "bigru"},
    "gru": {"recurrence": "gru"},
    "none": {"recurrence": "none"},
    "dilated": {"dilated": True},
    "no_metadata": {"num_metadata": 0},
}


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(num_steps=T, conv_filters=(4, 4), units=4, **overrides)


def inputs(config: ModelConfig, batch: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    x = [rng.normal(size=(batch, config.num_steps, config.num_channels)).astype(np.float32)]
    if config.num_metadata:
        x.append(rng.normal(size=(batch, config.num_metadata)).astype(np.float32))
    return x


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_has_named_layers_and_the_documented_shapes(variant: str) -> None:
    config = tiny(**VARIANTS[variant])
    model = build_model(config, TASKS)
    names = {layer.name for layer in model.layers}

    assert set(inspected_layer_names(config)) <= names
    assert {"sequence", "conv_1", "conv_2", "raw_output", "pooled"} <= names
    assert ("metadata" in names) == ("initial_state" in names) == (config.num_metadata > 0)
    expected_mixer = {"none": "metadata_bias" if config.num_metadata else None}.get(
        config.recurrence, config.recurrence)
    assert expected_mixer is None or expected_mixer in names
    assert [i.name for i in model.inputs] == ["sequence", "metadata"][: len(model.inputs)]
    assert model.get_layer("raw_output").output.shape == (None, T, len(TASKS))
    outputs = model.predict(inputs(config), verbose=0)
    assert list(outputs) == ["head_diabetes", "head_hr_std_day_minus_night"]
    assert all(y.shape == (3, 1) for y in outputs.values())
    assert np.all((outputs["head_diabetes"] > 0) & (outputs["head_diabetes"] < 1))


def test_variant_knobs_reach_the_layers() -> None:
    relu_dilated = build_model(tiny(activation="relu", dilated=True), TASKS)
    assert relu_dilated.get_layer("conv_1").get_config()["activation"] == "relu"
    assert [relu_dilated.get_layer(f"conv_{i}").dilation_rate for i in (1, 2)] == [(1,), (2,)]
    default = build_model(tiny(), TASKS)
    assert default.get_layer("conv_1").get_config()["activation"] == "leaky_relu"
    assert isinstance(default.get_layer("bilstm"), keras.layers.Bidirectional)
    assert isinstance(build_model(tiny(recurrence="gru"), TASKS).get_layer("gru"), keras.layers.GRU)


def test_pooling_downsamples_raw_output_as_documented() -> None:
    config = tiny(pool_size=4)
    model = build_model(config, TASKS)
    assert config.output_steps == T // 16
    assert model.get_layer("raw_output").output.shape == (None, T // 16, len(TASKS))
    assert {"pool_1", "pool_2"} <= {layer.name for layer in model.layers}


def _input_gradient(model: keras.Model, x: list[np.ndarray], timestep: int) -> np.ndarray:
    """|d raw_output[:, timestep, 0] / d sequence| summed over batch and channels: [T]."""
    probe = keras.Model(model.inputs, model.get_layer("raw_output").output)
    sequence = tf.convert_to_tensor(x[0])
    with tf.GradientTape() as tape:
        tape.watch(sequence)
        raw = probe([sequence, *(tf.convert_to_tensor(a) for a in x[1:])])
        out = tf.reduce_sum(raw[:, timestep, 0])
    return np.abs(tape.gradient(out, sequence).numpy()).sum(axis=(0, 2))


@pytest.mark.parametrize(("dilated", "reach"), [(False, 4), (True, 6)])
def test_without_recurrence_raw_output_sees_exactly_its_receptive_field(dilated, reach) -> None:
    # kernel 5 -> 2 steps each side per block; dilation 1 then 2 -> 2 + 4 = 6
    config = tiny(recurrence="none", dilated=dilated, kernel_size=5)
    keras.utils.set_random_seed(0)
    gradient = _input_gradient(build_model(config, TASKS), inputs(config), T // 2)
    nonzero = np.flatnonzero(gradient > 0)
    assert (nonzero.min(), nonzero.max()) == (T // 2 - reach, T // 2 + reach)


def test_bidirectional_looks_both_ways_unidirectional_only_back() -> None:
    mid, reach = T // 2, 4  # the convolutions add 4 steps of look-ahead
    keras.utils.set_random_seed(0)
    for recurrence, future_visible in (("bilstm", True), ("lstm", False), ("gru", False)):
        config = tiny(recurrence=recurrence)
        gradient = _input_gradient(build_model(config, TASKS), inputs(config), mid)
        assert gradient[: mid - reach].max() > 0, recurrence
        assert (gradient[mid + reach + 1 :].max() > 0) == future_visible, recurrence


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "no_metadata"])
def test_metadata_reaches_the_output(variant: str) -> None:
    config = tiny(**VARIANTS[variant])
    keras.utils.set_random_seed(0)
    model = build_model(config, TASKS)
    sequence, metadata = inputs(config)
    before = model.predict([sequence, metadata], verbose=0)["head_diabetes"]
    after = model.predict([sequence, metadata + 1.0], verbose=0)["head_diabetes"]
    assert not np.allclose(before, after)


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_and_load_give_the_same_predictions(variant: str, tmp_path: Path) -> None:
    config = tiny(**VARIANTS[variant])
    model = build_model(config, TASKS)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = inputs(config)
    for head, y in model.predict(x, verbose=0).items():
        np.testing.assert_array_equal(loaded.predict(x, verbose=0)[head], y)
    # built from Keras' own layers and ops only: loadable without importing stethoscope
    with zipfile.ZipFile(path) as archive:
        assert "stethoscope" not in archive.read("config.json").decode()


def test_regression_head_speaks_target_units() -> None:
    config = tiny(recurrence="none")
    model = build_model(config, [TaskSpec(name="t", kind="regression", offset=3.0, scale=2.0)])
    x = inputs(config)
    raw = keras.Model(model.inputs, model.get_layer("raw_output").output).predict(x, verbose=0)
    expected = 3.0 + 2.0 * raw[:, :, 0].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict(x, verbose=0)["head_t"], expected, rtol=1e-5)


def test_a_tiny_fit_learns_a_planted_signal() -> None:
    keras.utils.set_random_seed(0)
    config = tiny()
    rng = np.random.default_rng(1)
    sequence, metadata = inputs(config, batch=64, seed=1)
    label = rng.integers(0, 2, 64).astype(np.float32)
    sequence[:, :, 0] += label[:, None]  # positives: heart rate shifted up
    label[::8] = np.nan  # some labels unknown
    model = build_model(config, TASKS[:1])
    model.compile(keras.optimizers.Adam(1e-2), loss={"head_diabetes": MaskedBinaryCrossentropy()})
    x, y = [sequence, metadata], {"head_diabetes": label[:, None]}
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert np.isfinite(after) and after < 0.5 * before


def _weight_gradients(model: keras.Model, x: list[np.ndarray], y: np.ndarray, loss) -> list:
    with tf.GradientTape() as tape:
        value = loss(y, model(x)["head_diabetes"])
    return [g.numpy() for g in tape.gradient(value, model.trainable_weights)], float(value)


@pytest.mark.parametrize("loss", [MaskedBinaryCrossentropy(), MaskedMeanSquaredError()])
def test_masked_labels_contribute_no_gradient(loss) -> None:
    config = tiny()
    keras.utils.set_random_seed(0)
    model = build_model(config, TASKS[:1])
    x = inputs(config, batch=4)
    y = np.array([[1.0], [0.0], [1.0], [np.nan]], np.float32)

    with_masked, loss_with = _weight_gradients(model, x, y, loss)
    without, loss_without = _weight_gradients(model, [a[:3] for a in x], y[:3], loss)
    other = [a.copy() for a in x]
    other[0][3] += 5.0  # the masked example's input changes: nothing may follow from it
    changed, _ = _weight_gradients(model, other, y, loss)
    all_masked, loss_all_masked = _weight_gradients(model, x, np.full_like(y, np.nan), loss)

    assert np.isfinite(loss_with) and loss_with == pytest.approx(loss_without, rel=1e-5)
    for a, b, c in zip(with_masked, without, changed, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-7)
    assert loss_all_masked == 0.0 and all(not np.any(g) for g in all_masked)


def test_masked_losses_are_the_mean_over_known_labels() -> None:
    y_true = np.array([[1.0], [np.nan], [0.0]], np.float32)
    y_pred = np.array([[0.8], [0.3], [0.4]], np.float32)
    known = [0, 2]
    bce = keras.losses.BinaryCrossentropy()(y_true[known], y_pred[known])
    mse = keras.losses.MeanSquaredError()(y_true[known], y_pred[known])
    assert float(MaskedBinaryCrossentropy()(y_true, y_pred)) == pytest.approx(float(bce), rel=1e-5)
    assert float(MaskedMeanSquaredError()(y_true, y_pred)) == pytest.approx(float(mse), rel=1e-5)
    restored = keras.losses.deserialize(json.loads(json.dumps(
        keras.losses.serialize(MaskedBinaryCrossentropy()))))
    assert isinstance(restored, MaskedBinaryCrossentropy)


def test_transfer_copies_every_shared_layer_but_the_task_specific_output() -> None:
    config = tiny()
    pretrained = build_model(config, [TaskSpec(name="t", kind="regression")])
    finetuned = build_model(config, TASKS)
    copied = transfer_weights(pretrained, finetuned)
    assert set(copied) == {"conv_1", "conv_2", "initial_state", "bilstm"}
    for name in copied:
        for a, b in zip(pretrained.get_layer(name).get_weights(),
                        finetuned.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_bad_configurations_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="at least one task"):
        build_model(tiny(), [])
    with pytest.raises(ValueError, match="duplicated: \\['a'\\]"):
        build_model(tiny(), [TaskSpec(name="a", kind="classification")] * 2)
    with pytest.raises(pydantic.ValidationError, match="lower pool_size"):
        ModelConfig(num_steps=64, pool_size=16, conv_filters=(4, 4))
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(recurrence="transformer")
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(unit=3)  # a typo is an error, not a silent default
    assert head_name("sleep_apnea") == "head_sleep_apnea"
