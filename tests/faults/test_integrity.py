"""Files verified before they are trusted (issue #17): checkpoints, sequence-store shards and
model files that a disk, a copy or a person damaged are named, skipped or rebuilt, never a crash
(exit 1) nor a misleading message."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest

from stethoscope.flows.cli import EXIT_USAGE, main
from stethoscope.model.config import ModelConfig
from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.shared.audited_model import load_audit_model
from stethoscope.tasks.shared.store import open_store
from stethoscope.tasks.train.checkpoints import Checkpoints, CheckpointState
from stethoscope.tasks.train.config import TrainConfig
from stethoscope.tasks.train.training import train_model
from tests.model.conftest import make_store  # noqa: F401 (a fixture)

from .conftest import front_stages

TRAIN_MODEL = ModelConfig(num_steps=64, conv_filters=(4,), units=4)

# --- checkpoints ------------------------------------------------------------------------------


def _checkpoints(root: Path, epochs: int) -> Checkpoints:
    """`epochs` saved checkpoints of a tiny model, as training saves them."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, name="dense")])
    checkpoints = Checkpoints(root, keep=5, fingerprint="f")
    for epoch in range(1, epochs + 1):
        checkpoints.save(model, CheckpointState(fingerprint="f", phase_index=0, phase="supervised",
                                                phase_first_epoch=0, epoch=epoch))
    return checkpoints


@pytest.mark.parametrize("damage", ["truncate", "garbage_json", "flip_bytes"])
def test_a_broken_newest_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path, caplog, damage):
    checkpoints = _checkpoints(tmp_path / "checkpoints", epochs=3)
    newest = checkpoints.model_path(3)
    content = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(content[: len(content) // 2])
    elif damage == "garbage_json":
        newest.with_suffix(".json").write_text("{not json")
    else:  # same size, other bytes
        middle = len(content) // 2
        newest.write_bytes(content[:middle] + bytes(b ^ 0xFF for b in content[middle:middle + 64])
                           + content[middle + 64:])
    with caplog.at_level(logging.WARNING, logger="stethoscope.train"):
        state = checkpoints.latest()
    assert state is not None and state.epoch == 2
    assert "epoch-003.keras" in caplog.text and "broken" in caplog.text
    aside = tmp_path / "checkpoints" / "corrupt"
    assert sorted(p.name for p in aside.iterdir()) == ["epoch-003.json", "epoch-003.keras"]
    assert not newest.exists()  # moved, never deleted: it is in corrupt/


class BestEpochFirst(keras.callbacks.Callback):
    """Makes every epoch after the first look worse (its val_loss), so the first stays the
    best; at the end of the fit, `damage`s the best epoch's checkpoint, before training
    reloads it."""

    def __init__(self, checkpoint_dir: Path, damage: str) -> None:
        super().__init__()
        self.checkpoint_dir, self.damage = checkpoint_dir, damage

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch > 0:
            logs["val_loss"] = 1e6 + epoch

    def on_train_end(self, logs=None) -> None:
        best = self.checkpoint_dir / "epoch-001.keras"
        if self.damage == "truncate":
            best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
        else:  # deleted by hand
            best.unlink()


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_broken_best_checkpoint_is_set_aside_and_training_keeps_the_best_intact_epoch(
        make_store, tmp_path, caplog, damage):  # noqa: F811
    out = tmp_path / "model"
    config = TrainConfig(epochs=3, batch_size=8, patience=10, keep_checkpoints=2)
    with caplog.at_level(logging.WARNING, logger="stethoscope.train"):
        result = train_model(make_store(), out, config, TRAIN_MODEL,
                             callbacks=[BestEpochFirst(out / "checkpoints", damage)])
    assert "checkpoint" in caplog.text and "epoch-001.keras" in caplog.text
    assert "the best epoch (1, val_loss" in caplog.text and "keeping epoch 2" in caplog.text
    aside = sorted(p.name for p in (out / "checkpoints" / "corrupt").iterdir())
    assert aside == (["epoch-001.json", "epoch-001.keras"] if damage == "truncate"
                     else ["epoch-001.json"])
    # of the intact epochs (2, 3) the better one, 2, is what model.keras holds
    assert result.best_loss == pytest.approx(1e6 + 1)
    kept = keras.saving.load_model(out / "checkpoints" / "epoch-002.keras").get_weights()
    for a, b in zip(keras.saving.load_model(result.model_path).get_weights(), kept, strict=True):
        np.testing.assert_array_equal(a, b)


# --- sequence-store shards ----------------------------------------------------------------------


def test_a_truncated_shard_of_a_store_without_checksums_is_named(make_store):  # noqa: F811
    store = make_store()
    shard = sorted((store / "shards").glob("*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(DataContractError) as error:
        open_store(store, stage="train")
    assert "shard_unreadable" in str(error.value) and str(shard) in str(error.value)
    assert "mmap length" not in str(error.value).splitlines()[0]


def test_a_shard_that_no_longer_matches_its_checksum_is_named(tiny_cohort, tmp_path, prefect_server):
    run = tmp_path / "runs" / "r1"
    front_stages(tiny_cohort, run)
    shard = sorted((RunPaths(run).sequences / "shards").glob("*.npy"))[0]
    content = bytearray(shard.read_bytes())
    content[-8:] = b"\xff" * 8  # same size: only the checksum can tell
    shard.write_bytes(bytes(content))
    with pytest.raises(DataContractError) as error:
        open_store(RunPaths(run).sequences, stage="train")
    message = str(error.value)
    assert "rule shard_checksum" in message and f"file {shard}" in message
    assert "Delete the sequence store" in message


# --- model files ------------------------------------------------------------------------------


def test_a_truncated_model_file_is_named_as_such(tmp_path):
    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((8, 3)), keras.layers.Conv1D(2, 3, name="conv")]).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataContractError) as error:
        load_audit_model(path)
    assert f"model file {path} is truncated or not a Keras archive" in str(error.value)
    assert "Lambda" not in str(error.value)


def test_audit_model_on_a_truncated_model_exits_2(tiny_cohort, tmp_path, capsys, prefect_server):
    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a zip's first bytes, and nothing more
    code = main(["audit-model", "--model", str(path), "--data", str(tiny_cohort),
                 "--out", str(tmp_path / "runs" / "audit")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err
    assert f"model file {path} is truncated or not a Keras archive" in err
