"""The gradient audit against models whose dependency horizon is known exactly (convolution
stacks with all-ones weights), the ordering LSTM < global path, exact weight-gradient ratios on
a scalar chain, a healthy model that must stay quiet, the model contract and the task shell."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stethoscope.schemas.errors import DataContractError
from stethoscope.tasks.audits.gradients.audit import audit_gradients, dependency_horizon
from stethoscope.tasks.audits.gradients.config import PROFILE_SCHEMA, GradientsConfig
from stethoscope.tasks.audits.gradients.findings import gradient_findings
from stethoscope.tasks.audits.gradients.profile import gradient_profile
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.shared.audited_model import load_audit_model
from stethoscope.tasks.shared.store import iter_store_batches
from tests.model.conftest import healthy_audit_model, write_array_store

C, M = 3, 4


def _codes(findings) -> set[str]:
    return {f.code for f in findings}


def _data(n: int, steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, steps, C)).astype("float32"), rng.normal(size=(n, M)).astype(
        "float32")


def _batches(x: np.ndarray, meta: np.ndarray, size: int):
    for start in range(0, len(x), size):
        yield x[start : start + size], meta[start : start + size]


def conv_stack(kernels: tuple[int, ...], padding: str = "same", steps: int = 64) -> keras.Model:
    """Linear Conv1D layers with all-ones kernels: every gradient is a positive integer (a count
    of paths) inside the receptive field and exactly 0 outside it."""
    sequence = keras.Input((steps, C), name="sequence")
    x = sequence
    for i, k in enumerate(kernels, start=1):
        x = keras.layers.Conv1D(2, k, padding=padding, kernel_initializer="ones",
                                name=f"conv_{i}")(x)
    raw = keras.layers.Dense(1, kernel_initializer="ones", name="raw_output")(x)
    return keras.Model(sequence, raw)


def global_path_model(steps: int, seed: int = 0) -> keras.Model:
    """A local convolution plus the time average of its output broadcast back to every step:
    raw_output[t_mid] depends on every input step."""
    keras.utils.set_random_seed(seed)
    sequence = keras.Input((steps, C), name="sequence")
    local = keras.layers.Conv1D(8, 3, padding="same", name="conv_1")(sequence)
    pooled = keras.layers.GlobalAveragePooling1D(name="global_pool")(local)
    broadcast = keras.layers.RepeatVector(steps, name="broadcast")(pooled)
    x = keras.layers.Concatenate(name="local_and_global")([local, broadcast])
    return keras.Model(sequence, keras.layers.Dense(1, name="raw_output")(x))


def recurrent_model(steps: int, bidirectional: bool, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    sequence = keras.Input((steps, C), name="sequence")
    metadata = keras.Input((M,), name="metadata")
    lstm = keras.layers.LSTM(8, return_sequences=True, name="lstm")
    rnn = keras.layers.Bidirectional(lstm, name="bilstm") if bidirectional else lstm
    x = rnn(sequence)
    return keras.Model([sequence, metadata], keras.layers.Dense(1, name="raw_output")(x))


def healthy_model(steps: int, seed: int = 0) -> keras.Model:
    """A DeepHeart-shaped network at random initialisation (see healthy_audit_model)."""
    return healthy_audit_model(steps, units=8, seed=seed, channels=C, metadata_size=M)


@pytest.mark.parametrize(
    ("kernels", "padding", "back", "forward"),
    [
        ((5, 3, 7), "same", 6, 6),  # odd kernels: (k - 1) / 2 on each side, summed
        ((4, 5), "same", 3, 4),  # even kernel 4 under 'same': 1 step back, 2 forward
        ((5, 3, 7), "causal", 12, 0),  # causal: sum(k - 1) back, nothing forward
    ],
)
def test_horizon_equals_the_receptive_field_of_a_conv_stack(kernels, padding, back, forward):
    x, meta = _data(10, 64)
    config = GradientsConfig(decades=30, bin_seconds=3600.0)  # every nonzero gradient counts

    audit = audit_gradients(conv_stack(kernels, padding), _batches(x, meta, 4), config)

    h, p = audit.horizon, audit.profile
    assert (p.timestep, p.center, p.num_user_weeks) == (32, 32, 10)
    assert (h.back, h.forward) == (back, forward)
    inside = np.arange(64)[(np.arange(64) >= 32 - back) & (np.arange(64) <= 32 + forward)]
    assert (p.by_step[inside] > 0).all() and p.by_step.sum() == p.by_step[inside].sum()
    np.testing.assert_array_equal(p.mean_abs, np.round(p.mean_abs))  # integer path counts
    np.testing.assert_array_equal(p.mean_signed, p.mean_abs)  # all weights positive
    assert h.forward_open is (padding == "same")
    assert audit.horizon_hours == (min(back, forward) if padding == "same" else back)
    assert _codes(gradient_findings(audit, config)) == {"SHORT_MEMORY"}  # < 24 h


def test_horizon_threshold_counts_decades_below_the_peak():
    by_step = np.array([1e-5, 1e-4, 1e-3, 1e-2, 1.0, 1e-1, 1e-3, 2e-4, 0.0])
    assert (dependency_horizon(by_step, 4, decades=3).back,
            dependency_horizon(by_step, 4, decades=3).forward) == (2, 2)
    h = dependency_horizon(by_step, 4, decades=4)
    assert (h.back, h.forward, h.effective) == (3, 3, 3)
    causal = dependency_horizon(np.array([1e-2, 1e-1, 1.0, 0.0, 0.0]), 2, decades=3)
    assert (causal.back, causal.forward, causal.forward_open, causal.effective) == (2, 0, False, 2)
    declared = dependency_horizon(np.array([1e-2, 1e-1, 1.0, 0.5, 0.0]), 2, causal=True)
    assert declared.effective == 2  # the forward side is ignored when declared causal
    assert dependency_horizon(np.zeros(5), 2).effective == 0


def test_lstm_horizon_is_shorter_than_a_global_path():
    steps = 256
    x, meta = _data(8, steps)
    audits = {
        name: audit_gradients(model, _batches(x, meta, 4))
        for name, model in [("lstm", recurrent_model(steps, bidirectional=False)),
                            ("bilstm", recurrent_model(steps, bidirectional=True)),
                            ("global", global_path_model(steps))]
    }
    lstm, bilstm, global_ = (audits[k].horizon for k in ("lstm", "bilstm", "global"))

    assert (global_.back, global_.forward) == (128, 127)  # the whole sequence
    assert (lstm.forward, lstm.forward_open) == (0, False)  # causal: the future never reaches
    assert 0 < lstm.back < global_.back
    assert bilstm.back_open and bilstm.forward_open
    assert 0 < bilstm.effective < global_.effective
    assert audits["lstm"].horizon_hours < audits["global"].horizon_hours
    config = GradientsConfig(required_context_hours=72.0)  # global: 127 steps x 0.66 h
    assert _codes(gradient_findings(audits["global"], config)) == set()
    short = gradient_findings(audits["lstm"], config)
    assert _codes(short) == {"SHORT_MEMORY"} and "causal" in short[0].message


def test_unidirectional_lstm_behind_same_convolutions_counts_as_causal():
    """'same' convolutions (kernel 5, twice) in front of an LSTM leak 4 steps of the future; the
    model is still causal for memory purposes, so the effective horizon is the past's."""
    keras.utils.set_random_seed(0)
    sequence = keras.Input((128, C), name="sequence")
    x = keras.layers.Conv1D(4, 5, padding="same", name="conv_1")(sequence)
    x = keras.layers.Conv1D(4, 5, padding="same", name="conv_2")(x)
    x = keras.layers.LSTM(8, return_sequences=True, name="lstm")(x)
    model = keras.Model(sequence, keras.layers.Dense(1, name="raw_output")(x))
    x_data, meta = _data(4, 128)

    audit = audit_gradients(model, _batches(x_data, meta, 4), GradientsConfig(decades=30))
    h = audit.horizon
    assert h.forward == 4 and not h.forward_open and h.effective == h.back > 4
    both = audit_gradients(model, _batches(x_data, meta, 4),
                           GradientsConfig(decades=30, causal=False)).horizon
    assert both.forward_open and both.effective == 4


def test_probed_timestep_and_task():
    x, meta = _data(4, 64)
    profile = gradient_profile(conv_stack((5, 3, 7)), _batches(x, meta, 4), timestep=2)
    h = dependency_horizon(profile.by_step, profile.center, decades=30)
    assert (profile.center, h.back, h.forward) == (2, 2, 6)  # the left edge cuts the field
    with pytest.raises(ValueError, match="task_index 1 is out of range"):
        gradient_profile(conv_stack((3,)), _batches(x, meta, 4), task_index=1)


@pytest.mark.parametrize(("weights", "ratio", "code"), [
    ((100.0, 1.0, 1.0, 0.01), 1e-4, "VANISHING_GRADIENTS"),
    ((0.01, 1.0, 1.0, 100.0), 1e4, "EXPLODING_GRADIENTS"),
    ((1.0, 2.0, 0.5, 1.0), 1.0, None),
])
def test_weight_gradient_ratio_is_exact_on_a_scalar_chain(weights, ratio, code):
    """y = w_1 ... w_n x, L = mean_u y[u, t_mid]: dL/dw_i = mean_u x[u, t_mid] prod_{j != i} w_j,
    so the first/last ratio is w_n / w_1 exactly."""
    sequence = keras.Input((16, 1), name="sequence")
    x = sequence
    names = [f"dense_{i}" for i in range(1, len(weights))] + ["raw_output"]
    for name, w in zip(names, weights, strict=True):
        layer = keras.layers.Dense(1, use_bias=False, name=name)
        x = layer(x)
        layer.set_weights([np.full((1, 1), w)])
    model = keras.Model(sequence, x)
    data = np.random.default_rng(0).uniform(0.5, 1.0, (4, 16, 1)).astype("float32")

    audit = audit_gradients(model, [data], GradientsConfig(required_context_hours=0))

    assert audit.weight_gradients["layer"].tolist() == names
    assert audit.ratio == pytest.approx(ratio, rel=1e-5)
    assert _codes(gradient_findings(audit, GradientsConfig(required_context_hours=0))) == (
        {code} if code else set())


def test_healthy_model_has_no_findings():
    x, meta = _data(6, 64)
    audit = audit_gradients(healthy_model(64), _batches(x, meta, 4))
    # the metadata branch (initial_state) is not on the sequence path
    assert audit.weight_gradients["layer"].tolist() == ["conv_1", "conv_2", "bilstm", "raw_output"]
    assert audit.horizon.back_open and audit.horizon.forward_open
    assert gradient_findings(audit) == []


def test_model_without_the_output_layer_is_a_contract_error_listing_its_layers(tmp_path: Path):
    sequence = keras.Input((64, 5), name="sequence")
    x = keras.layers.Conv1D(2, 3, padding="same", name="conv_1")(sequence)
    keras.Model(sequence, keras.layers.Dense(1, name="scores")(x)).save(tmp_path / "m.keras")

    with pytest.raises(DataContractError) as error:
        load_audit_model(tmp_path / "m.keras")

    message = str(error.value)
    assert "no layer 'raw_output'" in message and "['sequence', 'conv_1', 'scores']" in message
    assert "has 5 channels; the store has 3" in message  # every problem at once
    with pytest.raises(DataContractError, match="cannot load model"):
        load_audit_model(tmp_path / "missing.keras")


def test_store_batches_read_one_split_in_index_order(tmp_path: Path):
    x, meta = _data(7, 64)
    write_array_store(tmp_path, x, meta, ["val", "train", "val", "val", "test", "val", "val"])
    batches = list(iter_store_batches(tmp_path, "val", max_user_weeks=4, batch_size=3))
    assert [b[0].shape for b in batches] == [(3, 64, C), (1, 64, C)]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x[[0, 2, 3, 5]])
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), meta[[0, 2, 3, 5]])


def test_task_writes_profile_plot_and_weight_gradients(tmp_path: Path):
    x, meta = _data(5, 64)
    write_array_store(tmp_path / "sequences", x, meta, ["val"] * 5)
    conv_stack((5, 3, 7)).save(tmp_path / "model.keras")
    out = tmp_path / "audits" / "gradients"

    result = gradients_task.fn(tmp_path / "model.keras", tmp_path / "sequences", out,
                               GradientsConfig(batch_size=2, decades=30), task_names=["apnea"])

    s = result.section
    assert (s.output_layer, s.task, s.timestep) == ("raw_output", "apnea", 32)
    assert (s.horizon_steps_back, s.horizon_steps_forward, s.horizon_hours) == (6, 6, 6.0)
    profile = pq.read_table(s.profile_file)
    assert profile.schema.equals(PROFILE_SCHEMA) and profile.num_rows == 64 * C
    assert set(profile.column("channel").to_pylist()) == {"heart_rate", "steps",
                                                          "heart_rate_missing"}
    assert profile.filter(pa.compute.equal(profile["offset"], 7))["mean_abs"].to_pylist() == [0.0] * C
    assert result.plot_file.stat().st_size > 0 and not result.causal
    assert pq.read_table(result.weight_gradients_file).column("layer").to_pylist() == [
        "conv_1", "conv_2", "conv_3", "raw_output"]
    assert _codes(result.findings) == {"SHORT_MEMORY"}  # 6 h (bin width 1 h from stats.json)
