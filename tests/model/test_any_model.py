"""`audit-model` on the Keras models users actually have (issue #12): Sequential, functional
with a metadata input in any position and a per-step layer under another name, downsampling
stacks, nested and functional-subclass models, each audited with no options and checked against
answers known by construction; and the bad ones (subclassed, wrong C, no such layer) refused
with a typed error before anything is written.

The stage-level tests run exactly what the flow runs after its inspect stage (the inspect core,
then the two audit tasks with default configs) on a tiny store of T = 64 steps of 2.625 h; the
slow ones run the whole flow on a tiny simulated cohort through the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest
from keras import layers

from stethoscope.schemas.errors import DataContractError, UsageError
from stethoscope.tasks.audits.activations.config import ActivationsConfig, ActivationsResult
from stethoscope.tasks.audits.activations.task import activations_task
from stethoscope.tasks.audits.gradients.config import GradientsConfig, GradientsResult
from stethoscope.tasks.audits.gradients.task import gradients_task
from stethoscope.tasks.inspect.config import ModelShape
from stethoscope.tasks.inspect.shape import inspect_model
from stethoscope.tasks.shared.audited_model import input_feeds, model_inputs
from tests.model.conftest import write_array_store

T, C, M = 64, 3, 4
BIN_HOURS = 7 * 24 / T  # 2.625 h per step
ONES = {"kernel_initializer": "ones", "bias_initializer": "zeros"}


def _codes(findings) -> set[str]:
    return {f.code for f in findings}


# ---- the models --------------------------------------------------------------------------


def sequential_conv_lstm(seed: int = 0) -> keras.Sequential:
    """A plain Sequential model, auto-named layers: ReLU convolution (kernel 3, 'same') whose unit
    3 has zero weights and bias -1 (dead: ReLU(-1) = 0 everywhere), a unidirectional LSTM
    returning sequences, average pooling over time, a sigmoid unit."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((T, C)),
        layers.Conv1D(4, 3, padding="same", activation="relu"),
        layers.LSTM(4, return_sequences=True),
        layers.GlobalAveragePooling1D(),
        layers.Dense(1, activation="sigmoid"),
    ])
    kernel, bias = model.layers[0].get_weights()
    kernel[:, :, 3], bias[3] = 0.0, -1.0
    model.layers[0].set_weights([kernel, bias])
    return model


def functional_with_metadata() -> keras.Model:
    """Inputs in the order (metadata [4], sequence [T, 3], site [2]); an all-ones linear
    convolution (2 filters, kernel 5, 'same') and an all-ones per-step Dense named `scores`, so
    d scores[t_mid] / d x[t, c] = 2 (one path per filter) for |t - t_mid| <= 2, else 0; the
    metadata and the site join after the pooling."""
    metadata = keras.Input((M,), name="metadata")
    sequence = keras.Input((T, C), name="sequence")
    site = keras.Input((2,), name="site")
    x = layers.Conv1D(2, 5, padding="same", name="conv", **ONES)(sequence)
    scores = layers.Dense(1, name="scores", **ONES)(x)  # [batch, T, 1]
    pooled = layers.GlobalAveragePooling1D(name="pool")(scores)
    side = layers.Dense(1, name="meta_dense")(layers.Concatenate(name="side")([metadata, site]))
    head = layers.Activation("sigmoid", name="head")(layers.Add(name="logit")([pooled, side]))
    return keras.Model([metadata, sequence, site], head)


def downsampling_stack() -> keras.Sequential:
    """All-ones linear convolutions, kernel 3: 'same' stride 1, then stride 2 twice ('same'
    with stride 2 pads one step on the right only), so T' = T / 4 = 16 and output step 8
    reads input steps 2 (16 + j3) + j2 + j1 + ... = 31..39: its receptive field. Gradients are
    path counts: 2 x 2 filters times the number of (j3, j2, j1) reaching each input step."""
    return keras.Sequential([
        keras.Input((T, C)),
        layers.Conv1D(2, 3, padding="same", **ONES),
        layers.Conv1D(2, 3, strides=2, padding="same", **ONES),
        layers.Conv1D(2, 3, strides=2, padding="same", **ONES),
        layers.GlobalAveragePooling1D(),
        layers.Dense(1),
    ])


def nested_model(seed: int = 0) -> keras.Model:
    """A functional model around a nested Sequential `encoder` (a ReLU convolution with the same
    dead unit 3 as `sequential_conv_lstm`, and an LSTM), with a metadata input."""
    keras.utils.set_random_seed(seed)
    encoder = keras.Sequential([
        keras.Input((T, C)),
        layers.Conv1D(4, 3, padding="same", activation="relu", name="conv"),
        layers.LSTM(4, return_sequences=True, name="lstm"),
    ], name="encoder")
    kernel, bias = encoder.layers[0].get_weights()
    kernel[:, :, 3], bias[3] = 0.0, -1.0
    encoder.layers[0].set_weights([kernel, bias])
    sequence = keras.Input((T, C), name="sequence")
    metadata = keras.Input((M,), name="metadata")
    pooled = layers.GlobalAveragePooling1D(name="pool")(encoder(sequence))
    joined = layers.Concatenate(name="joined")([pooled, metadata])
    return keras.Model([sequence, metadata], layers.Dense(1, name="head")(joined))


@keras.saving.register_keras_serializable(package="stethoscope_tests")
class FunctionalSubclass(keras.Model):
    """A subclass built through the functional constructor: Keras keeps its graph."""

    def __init__(self, **kwargs):
        if "inputs" in kwargs:  # from_config
            super().__init__(**kwargs)
            return
        sequence = keras.Input((T, C), name="sequence")
        x = layers.Conv1D(2, 3, padding="same", name="conv", **ONES)(sequence)
        super().__init__(sequence, layers.Dense(1, name="per_step", **ONES)(x), **kwargs)


@keras.saving.register_keras_serializable(package="stethoscope_tests")
class PythonSubclass(keras.Model):
    """A subclass whose `call` is Python code: Keras has no graph of its layers."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv1D(2, 3, padding="same")
        self.out = layers.Dense(1)

    def call(self, inputs):
        return self.out(self.conv(inputs))


# ---- how the flow audits a model (after its inspect stage, with no options) -------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Six validation user-weeks of T = 64 steps (1 week / 64 per step) with metadata."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, T, C)).astype("float32")
    meta = rng.normal(size=(6, M)).astype("float32")
    write_array_store(tmp_path / "sequences", x, meta, bin_seconds=BIN_HOURS * 3600)
    return tmp_path / "sequences"


def audit(model: keras.Model, store: Path, gradients: GradientsConfig | None = None
          ) -> tuple[ModelShape, ActivationsResult, GradientsResult]:
    """Save `model`, inspect it and run both audit tasks on `store`, as audit-model does."""
    path = store.parent / f"{model.name}.keras"
    model.save(path)
    gradients = gradients or GradientsConfig()
    shape = inspect_model(path, output_layer=gradients.output_layer,
                          task_index=gradients.task_index)
    out = store.parent / "audits" / model.name
    activations = activations_task.fn(path, store, out / "activations", ActivationsConfig())
    return shape, activations, gradients_task.fn(path, store, out / "gradients", gradients)


def profile_of(result: GradientsResult) -> np.ndarray:
    """mean |g| [T, C] from profile.parquet."""
    table = pq.read_table(result.section.profile_file).to_pandas()
    return table.pivot(index="t", columns="channel", values="mean_abs").to_numpy()


# ---- known answers ------------------------------------------------------------------------


def test_sequential_conv_lstm_is_audited_with_no_options(store: Path):
    model = sequential_conv_lstm()
    conv, lstm, _, dense = (layer.name for layer in model.layers)

    shape, activations, gradients = audit(model, store)

    assert (shape.num_steps, shape.num_channels, shape.output_layer) == (T, C, lstm)
    assert [i.fed for i in shape.inputs] == ["sequence"]
    # the activation audit: every conv/recurrent/dense layer, the planted dead unit exactly
    assert [layer.name for layer in activations.layers] == [conv, lstm, dense]
    assert {layer.name: layer.dead_units for layer in activations.layers}[conv] == [3]
    dead = next(f for f in activations.findings if f.code == "DEAD_UNITS")
    assert f"{conv} 1/4 units [3]" in dead.message
    # the gradient audit: the LSTM is the last layer with a time axis; it is causal, and the
    # 'same' convolution (kernel 3) lets exactly one future step reach t_mid
    s = gradients.section
    assert (s.output_layer, s.timestep) == (lstm, T // 2)
    by_step = profile_of(gradients).sum(axis=1)
    assert by_step[T // 2 + 1] > 0 and not by_step[T // 2 + 2:].any()
    assert gradients.causal and s.horizon_steps_forward == 1 and s.horizon_steps_back > 1
    assert s.horizon_hours == pytest.approx(s.horizon_steps_back * BIN_HOURS)  # the past only
    assert "found: the last layer whose output keeps a time axis" in gradients.notes[0]


def test_functional_model_with_metadata_and_a_differently_named_per_step_layer(store: Path):
    model = functional_with_metadata()

    shape, activations, gradients = audit(model, store)

    assert [(i.name, i.shape, i.fed) for i in shape.inputs] == [
        ("metadata", [M], "metadata"), ("sequence", [T, C], "sequence"), ("site", [2], "zeros")]
    assert "'site' [2] <- zeros" in shape.inputs_note and "age_std" in shape.inputs_note
    assert shape.outcome().notes == [shape.inputs_note]  # in the report's data section
    assert [layer.name for layer in activations.layers] == ["conv", "scores", "meta_dense", "head"]
    s = gradients.section
    assert (s.output_layer, s.timestep) == ("scores", T // 2)
    expected = np.zeros((T, C))
    expected[T // 2 - 2 : T // 2 + 3] = 2.0  # two filters, one path each
    np.testing.assert_array_equal(profile_of(gradients), expected)
    assert (s.horizon_steps_back, s.horizon_steps_forward) == (2, 2)
    assert s.horizon_hours == pytest.approx(2 * BIN_HOURS)
    assert _codes(gradients.findings) == {"SHORT_MEMORY"}  # 5.25 h < 24 h
    norms = pq.read_table(gradients.weight_gradients_file).column("layer").to_pylist()
    assert norms == ["conv", "scores"]  # the metadata branch is not on the sequence path


def test_inputs_are_fed_by_role_not_position():
    model = functional_with_metadata()
    rng = np.random.default_rng(1)
    x, meta = rng.normal(size=(5, T, C)), rng.normal(size=(5, M))

    metadata, sequence, site = model_inputs((x, meta), model)

    np.testing.assert_array_equal(sequence, x.astype("float32"))
    np.testing.assert_array_equal(metadata, meta.astype("float32"))
    np.testing.assert_array_equal(site, np.zeros((5, 2), "float32"))
    assert [f.source for f in input_feeds(model, metadata_width=2)] == [
        "zeros", "sequence", "metadata"]  # the width decides, whatever the name


def test_downsampling_by_4_maps_the_horizon_back_to_input_steps(store: Path):
    model = downsampling_stack()

    shape, _, gradients = audit(model, store)

    s = gradients.section
    assert shape.output_layer == s.output_layer == model.layers[2].name
    assert s.timestep == 8  # the middle of T' = 16
    center = round((8 + 0.5) * 4 - 0.5)  # input step 34
    # path counts: 2 x 2 filters times the ways 2 j3 + j2 + j1 reaches t - 32, j1 in -1..1
    ways = np.convolve(np.convolve([1, 0, 1, 0, 1], [1, 1, 1]), [1, 1, 1])  # offsets -1..7
    expected = np.zeros(T)
    expected[31:40] = 4 * ways
    profile = profile_of(gradients)
    for c in range(C):
        np.testing.assert_array_equal(profile[:, c], expected)
    # the horizon, in input steps, is the receptive field 31..39 around input step 34
    assert (s.horizon_steps_back, s.horizon_steps_forward) == (center - 31, 39 - center) == (3, 5)
    assert s.horizon_steps_back + s.horizon_steps_forward + 1 == 9
    assert s.horizon_hours == pytest.approx(3 * BIN_HOURS)  # the shorter side of a symmetric model
    assert "t_mid = 8 is input step 34" in gradients.notes[0]


def test_nested_model_layers_are_audited_under_their_path(store: Path):
    shape, activations, gradients = audit(nested_model(), store)

    names = [layer.name for layer in activations.layers]
    assert names == ["encoder/conv", "encoder/lstm", "head"]
    assert activations.layers[0].dead_units == [3]
    assert sorted(p.name for p in activations.heatmap_files) == [
        "heatmap_encoder.conv.png", "heatmap_encoder.lstm.png"]
    assert shape.output_layer == gradients.section.output_layer == "encoder/lstm"
    assert [i.fed for i in shape.inputs] == ["sequence", "metadata"]
    assert gradients.causal and gradients.section.horizon_steps_forward == 1
    norms = pq.read_table(gradients.weight_gradients_file).column("layer").to_pylist()
    assert norms == ["encoder/conv", "encoder/lstm"]


def test_functional_subclass_is_audited_like_a_functional_model(store: Path):
    shape, activations, gradients = audit(FunctionalSubclass(name="subclassed"), store)

    assert shape.output_layer == "per_step"
    assert [layer.name for layer in activations.layers] == ["conv", "per_step"]
    assert (gradients.section.horizon_steps_back, gradients.section.horizon_steps_forward) == (1, 1)


def test_output_layer_and_index_override_the_search(store: Path):
    model = sequential_conv_lstm()
    conv = model.layers[0].name

    _, _, gradients = audit(model, store, GradientsConfig(output_layer=conv, task_index=2))

    assert gradients.section.output_layer == conv
    assert (gradients.section.horizon_steps_back, gradients.section.horizon_steps_forward) == (1, 1)
    assert "(gradients.output_layer), unit 2" in gradients.notes[0]


def test_a_model_without_a_per_step_output_still_gets_its_activation_audit(store: Path):
    model = keras.Sequential([keras.Input((T, C)), layers.Flatten(), layers.Dense(3, activation="relu"),
                              layers.Dense(1)])

    shape, activations, gradients = audit(model, store)

    assert shape.output_layer is None
    assert len(activations.layers) == 2 and activations.num_user_weeks == 6
    assert _codes(gradients.findings) == {"GRADIENTS_NOT_EVALUATED"}
    assert gradients.findings[0].severity == "info" and gradients.plot_file is None
    assert gradients.outcome().gradients.output_layer is None  # the report says "Not run."


# ---- refused before anything is written ---------------------------------------------------


def _saved(model: keras.Model, tmp_path: Path) -> Path:
    path = tmp_path / "model.keras"
    model.save(path)
    return path


def test_a_subclassed_model_is_a_contract_error(tmp_path: Path):
    model = PythonSubclass()
    model(np.zeros((1, T, C), "float32"))

    with pytest.raises(DataContractError) as error:
        inspect_model(_saved(model, tmp_path))

    assert error.value.problems[0].rule == "functional_model"
    assert "super().__init__(inputs, outputs)" in str(error.value)


def test_channels_that_do_not_match_the_cohort_are_a_contract_error_naming_both(tmp_path: Path):
    model = keras.Sequential([keras.Input((T, 5)), layers.Conv1D(2, 3, padding="same")])
    path = _saved(model, tmp_path)

    with pytest.raises(DataContractError) as error:
        inspect_model(path)

    (problem,) = error.value.problems
    assert problem.rule == "sequence_channels"
    assert "has 5 channels; the store has 3 (heart_rate, steps, heart_rate_missing)" in problem.message
    assert "sequences.time_of_day: true" in problem.fix
    assert inspect_model(path, time_of_day=True).num_channels == 5  # the cohort then has 5


def test_bad_output_options_are_contract_errors_listing_the_choices(tmp_path: Path):
    model = sequential_conv_lstm()
    path = _saved(model, tmp_path)
    conv, lstm = model.layers[0].name, model.layers[1].name

    with pytest.raises(DataContractError, match=rf"no layer 'conv1d_9'.*'{conv}', '{lstm}'"):
        inspect_model(path, output_layer="conv1d_9")
    with pytest.raises(DataContractError, match=r"output shape \(None, 1\); expected") as error:
        inspect_model(path, output_layer=model.layers[3].name)
    assert f"{conv}, {lstm}" in error.value.problems[0].fix
    with pytest.raises(DataContractError, match=r"--output-index\) is 4; .* has 4 unit"):
        inspect_model(path, task_index=4)


def test_activation_layers_that_are_not_inspectable_are_a_usage_error(store: Path):
    path = _saved(sequential_conv_lstm(), store.parent)
    with pytest.raises(UsageError, match=r"\['nope'\] are not inspectable"):
        activations_task.fn(path, store, store.parent / "a", ActivationsConfig(layers=("nope",)))


# ---- the whole flow, from the command line --------------------------------------------------


@pytest.fixture
def cli(prefect_server):
    """`stethoscope` as a function; the root logger's handlers are restored afterwards (the CLI
    points them at the sys.stderr of the moment, which pytest closes after the test)."""
    import logging

    from stethoscope.flows.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield main
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig

    root = tmp_path_factory.mktemp("cohort") / "c"
    simulate_cohort(SimulateConfig(users=8, weeks=1, seed=4), root)
    return root


@pytest.mark.slow
def test_audit_model_command_on_a_plain_sequential_model(cohort: Path, tmp_path: Path, cli):
    model = sequential_conv_lstm()
    conv, lstm = model.layers[0].name, model.layers[1].name

    code = cli(["audit-model", "--model", str(_saved(model, tmp_path)), "--data", str(cohort),
                 "--out", str(tmp_path / "run")])

    assert code in (0, 3)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["gradients"]["output_layer"] == lstm
    assert summary["gradients"]["timestep"] == T // 2
    assert {layer["name"]: layer["dead_units"] for layer in summary["activations"]["layers"]}[
        conv] == [3]
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Model inputs at the model&#39;s T = 64" in html and "found: the last layer" in html


@pytest.mark.slow
def test_audit_model_command_refuses_wrong_channels_with_exit_2_writing_nothing(
        cohort: Path, tmp_path: Path, capsys, cli):
    model = keras.Sequential([keras.Input((T, 5)), layers.Conv1D(2, 3, padding="same")])

    code = cli(["audit-model", "--model", str(_saved(model, tmp_path)), "--data", str(cohort),
                 "--out", str(tmp_path / "run")])

    assert code == 2
    assert "has 5 channels; the store has 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
