"""The training stage on a tiny fabricated store: outputs, modes, the data stream, resumption."""

from __future__ import annotations

import importlib.util
import json
import logging

import keras
import numpy as np
import pyarrow.parquet as pq
import pytest

from stethoscope.model.config import ModelConfig, TaskSpec
from stethoscope.schemas.errors import DataContractError, UsageError
from stethoscope.schemas.tables import PREDICTIONS
from stethoscope.tasks.shared.datasets import epoch_order
from stethoscope.tasks.train.config import PREDICTION_COLUMNS, TrainConfig
from stethoscope.tasks.train.training import (
    _dataset,
    _open_store,
    _task_specs,
    plan_phases,
    train_model,
)
from tests.model.conftest import CONDITIONS, TARGETS

MODEL = ModelConfig(num_steps=64, conv_filters=(8, 8), units=8)


def config(**overrides) -> TrainConfig:
    options = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-2, "patience": 10}
    return TrainConfig(**{**options, **overrides})


class CrashAtEpoch(keras.callbacks.Callback):
    """Kill the run when epoch `epoch` (1-based) starts, as a lost worker would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        if epoch + 1 == self.epoch:
            raise RuntimeError("simulated crash")


class RecordWeights(keras.callbacks.Callback):
    """conv_1 weights and val_loss at the start of every fit and after every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.at_start: list[list[np.ndarray]] = []
        self.after_epoch: dict[int, tuple[list[np.ndarray], float]] = {}

    def on_train_begin(self, logs=None) -> None:
        self.at_start.append(self.model.get_layer("conv_1").get_weights())

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        self.after_epoch[epoch + 1] = (self.model.get_layer("conv_1").get_weights(),
                                       logs["val_loss"])


def test_supervised_run_writes_model_history_and_predictions(make_store, tmp_path) -> None:
    store = make_store()
    result = train_model(store, tmp_path / "model", config(epochs=4), MODEL,
                         predictions_path=tmp_path / "predictions" / "predictions.parquet")

    assert result.mode == "supervised" and result.tasks == CONDITIONS
    assert result.resumed_from_epoch is None and result.epochs_completed == 4
    history = json.loads(result.history_path.read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # the planted heart-rate shift is learnt: the diabetes loss falls well below chance
    assert history[-1]["val_head_diabetes_loss"] < 0.8 * history[0]["val_head_diabetes_loss"]
    assert result.best_loss == min(h["val_loss"] for h in history)

    table = pq.read_table(result.predictions_path)
    assert table.schema.names[: len(PREDICTIONS)] == PREDICTIONS.names
    assert table.schema.equals(PREDICTION_COLUMNS)
    frame = table.to_pandas()
    assert set(frame["split"]) == {"val", "test"} and set(frame["task"]) == set(CONDITIONS)
    index = pq.read_table(store / "index.parquet").to_pandas()
    held_out = index[index["split"].isin(["val", "test"])]
    assert len(frame) == result.num_predictions == int(held_out[list(CONDITIONS)].notna().sum().sum())
    assert frame["y_score"].between(0, 1).all() and frame["y_true"].isin([0, 1]).all()

    # model.keras: the best weights, no compile state, reproduces the predictions
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    assert not model.compiled
    row = held_out[(held_out["split"] == "val") & held_out["diabetes"].notna()].iloc[0]
    sequence = np.load(store / "shards" / row["shard"])[row["row"]]
    metadata = np.asarray(row["metadata"], np.float32)
    score = model.predict([sequence[None], metadata[None]], verbose=0)["head_diabetes"][0, 0]
    written = frame[(frame["task"] == "diabetes") & (frame["user_id"] == row["user_id"])
                    & (frame["week_start"] == row["week_start"])]["y_score"]
    assert len(written) == 1 and score == pytest.approx(written.iloc[0], rel=1e-5)
    assert sorted(p.name for p in result.checkpoint_dir.glob("*.json"))[-1] == "epoch-004.json"


@pytest.mark.slow
def test_a_run_killed_after_an_epoch_resumes_from_its_checkpoint(make_store, tmp_path) -> None:
    store = make_store()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_model(store, tmp_path / "crashed", config(), MODEL, callbacks=[CrashAtEpoch(2)])
    assert (tmp_path / "crashed" / "checkpoints" / "epoch-001.keras").exists()
    assert not (tmp_path / "crashed" / "model.keras").exists()

    resumed = train_model(store, tmp_path / "crashed", config(), MODEL)
    straight = train_model(store, tmp_path / "straight", config(), MODEL)

    assert resumed.resumed_from_epoch == 1 and resumed.epochs_completed == 3
    history = json.loads(resumed.history_path.read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # same data order per epoch, same optimizer state: the same model as an uninterrupted run
    a = keras.saving.load_model(resumed.model_path).get_weights()
    b = keras.saving.load_model(straight.model_path).get_weights()
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_pretrain_then_finetune_starts_from_the_best_pretrained_layers(make_store, tmp_path):
    store = make_store()
    record = RecordWeights()
    result = train_model(store, tmp_path / "model", config(mode="pretrain_finetune", pretrain_epochs=2, epochs=2), MODEL,
                         callbacks=[record])

    assert result.mode == "pretrain_finetune" and result.tasks == CONDITIONS
    history = json.loads(result.history_path.read_text())
    assert [(h["epoch"], h["phase"]) for h in history] == [
        (1, "pretrain"), (2, "pretrain"), (3, "finetune"), (4, "finetune")]
    best = min((1, 2), key=lambda epoch: record.after_epoch[epoch][1])
    for start, pretrained in zip(record.at_start[1], record.after_epoch[best][0], strict=True):
        np.testing.assert_array_equal(start, pretrained)


@pytest.mark.slow
def test_pretraining_records_its_r2_per_target_for_the_synthetic_audit(make_store, tmp_path):
    store = make_store()
    result = train_model(store, tmp_path / "model",
                         config(mode="pretrain_finetune", pretrain_epochs=2, epochs=1), MODEL)

    assert result.pretrain_record == tmp_path / "model" / "pretrain_r2.json"
    record = json.loads(result.pretrain_record.read_text())
    val = _open_store(store, MODEL).splits["val"]
    assert (record["phase"], record["epochs"], record["max_epochs"]) == ("pretrain", 2, 2)
    assert record["best_epoch"] in (1, 2) and record["model"] == MODEL.model_dump(mode="json")
    assert record["val_users"] == sorted(set(val.rows.column("user_id").to_pylist()))
    (target,) = TARGETS
    scores = record["targets"][target]
    assert scores["n_val"] == int(np.sum(~np.isnan(val.labels[target])))
    assert isinstance(scores["r2"], float) and isinstance(scores["baseline_r2"], float)

    supervised = train_model(store, tmp_path / "supervised", config(epochs=1), MODEL)
    assert supervised.pretrain_record is None
    assert not (tmp_path / "supervised" / "pretrain_r2.json").exists()


@pytest.mark.slow
def test_a_crash_between_phases_resumes_into_finetuning(make_store, tmp_path) -> None:
    store = make_store()
    options = config(mode="pretrain_finetune", pretrain_epochs=2, epochs=1)
    with pytest.raises(RuntimeError):
        train_model(store, tmp_path / "model", options, MODEL, callbacks=[CrashAtEpoch(3)])
    result = train_model(store, tmp_path / "model", options, MODEL)
    assert result.resumed_from_epoch == 2 and result.epochs_completed == 3
    phases = [h["phase"] for h in json.loads(result.history_path.read_text())]
    assert phases == ["pretrain", "pretrain", "finetune"]


def test_without_labels_it_trains_on_the_synthetic_targets(make_store, tmp_path, caplog) -> None:
    store = make_store(conditions=())
    with caplog.at_level(logging.WARNING, logger="stethoscope.train"):
        result = train_model(store, tmp_path / "model", config(epochs=1), MODEL)
    assert "synthetic targets alone" in caplog.text
    assert result.mode == "synthetic" and result.tasks == TARGETS
    table = pq.read_table(result.predictions_path)
    assert table.num_rows == result.num_predictions == 0
    assert table.schema.equals(PREDICTION_COLUMNS)
    model = keras.saving.load_model(result.model_path, safe_mode=True)
    assert model.output_names == ["head_hr_std_day_minus_night"]


@pytest.mark.slow
def test_early_stopping_ends_a_phase_and_keeps_the_best_epoch(make_store, tmp_path) -> None:
    store = make_store()
    result = train_model(store, tmp_path / "model", config(epochs=8, patience=1,
                                                            learning_rate=0.3), MODEL)
    history = json.loads(result.history_path.read_text())
    losses = [h["val_loss"] for h in history]
    best = int(np.argmin(losses))
    assert result.epochs_completed == len(history) == best + 2 < 8  # stopped one epoch after
    assert result.best_loss == pytest.approx(losses[best])
    best_model = keras.saving.load_model(result.checkpoint_dir / f"epoch-{best + 1:03d}.keras")
    for a, b in zip(best_model.get_weights(),
                    keras.saving.load_model(result.model_path).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_modes_fall_back_to_what_the_store_holds() -> None:
    condition = TaskSpec(name="diabetes", kind="classification")
    target = TaskSpec(name="hr_std_day_minus_night", kind="regression")
    phases = plan_phases(config(mode="pretrain_finetune", pretrain_epochs=2), [condition], [target])
    assert [(p.name, p.tasks, p.max_epochs) for p in phases] == [
        ("pretrain", (target,), 2), ("finetune", (condition,), 3)]
    assert [p.name for p in plan_phases(config(mode="pretrain_finetune"), [condition], [])] == [
        "supervised"]
    assert [p.name for p in plan_phases(config(mode="supervised"), [], [target])] == ["synthetic"]
    with pytest.raises(DataContractError, match="nor condition labels"):
        plan_phases(config(), [], [])
    with pytest.raises(DataContractError, match="'synthetic' needs a synthetic target"):
        plan_phases(config(mode="synthetic"), [condition], [])


def test_the_stream_reads_every_row_once_per_epoch_in_a_resumable_order(make_store) -> None:
    store = _open_store(make_store(shard_size=4), MODEL)
    train = store.splits["train"]
    conditions, _ = _task_specs(store, config())
    data = _dataset(store, train, conditions, 5, use_metadata=True, seed=7, epochs=range(2, 4))
    steps = -(-len(train) // 5)
    batches = list(data)
    assert len(batches) == 2 * steps

    orders = []
    for epoch, first in ((2, 0), (3, steps)):
        order = np.asarray(epoch_order(len(train), 7, epoch))
        np.testing.assert_array_equal(np.sort(order), np.arange(len(train)))
        orders.append(order)
        got = np.concatenate([b[0]["sequence"].numpy() for b in batches[first:first + steps]])
        expected = store.read(train.shard_ids[order], train.shard_rows[order])
        np.testing.assert_array_equal(got, expected)
        labels = np.concatenate([b[1]["head_diabetes"].numpy()[:, 0]
                                 for b in batches[first:first + steps]])
        np.testing.assert_array_equal(labels, train.labels["diabetes"][order])
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch


def test_store_rows_come_from_the_right_shard(make_store) -> None:
    root = make_store(shard_size=3)
    store = _open_store(root, MODEL)
    index = pq.read_table(root / "index.parquet").to_pandas()
    test = index[index["split"] == "test"]
    got = store.read(store.splits["test"].shard_ids, store.splits["test"].shard_rows)
    expected = np.stack([np.load(root / "shards" / s)[r] for s, r in zip(test["shard"], test["row"],
                                                                          strict=True)])
    np.testing.assert_array_equal(got, expected)


def test_changed_architecture_refuses_to_resume(make_store, tmp_path) -> None:
    store = make_store()
    train_model(store, tmp_path / "model", config(epochs=1), MODEL)
    with pytest.raises(UsageError, match="different model"):
        train_model(store, tmp_path / "model", config(epochs=1),
                    MODEL.model_copy(update={"units": 4}))


def test_store_and_model_disagreements_name_the_fix(make_store, tmp_path) -> None:
    store = make_store()
    with pytest.raises(UsageError, match="num_steps=64"):
        train_model(store, tmp_path / "a", config(), ModelConfig(num_steps=128))
    with pytest.raises(UsageError, match="not in the store"):
        train_model(store, tmp_path / "b", config(conditions=("asthma",)), MODEL)
    (store / "stats.json").unlink()
    with pytest.raises(DataContractError, match="stats.json does not exist"):
        train_model(store, tmp_path / "c", config(), MODEL)


def test_tensorboard_logs_when_the_package_is_installed(make_store, tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="stethoscope.train"):
        result = train_model(make_store(), tmp_path / "model", config(epochs=1), MODEL)
    events = list(result.tensorboard_dir.rglob("events.out.tfevents.*"))
    if importlib.util.find_spec("tensorboard") is None:
        assert not events and "tensorboard is not installed" in caplog.text
    else:
        assert {p.parent.name for p in events} == {"train", "validation"}
