"""Files verified before they are trusted (issue #17): checkpoints, sequence-store shards and
model files that a disk, a copy or a person damaged are named, skipped or rebuilt, never a crash
(exit 1) nor a misleading message."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import pytest

from stethoscope.flows.cli import EXIT_USAGE, main
from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.shared.audited_model import load_audit_model
from stethoscope.tasks.shared.store import open_store
from stethoscope.tasks.train.checkpoints import Checkpoints, CheckpointState
from tests.model.conftest import make_store  # noqa: F401 (a fixture)

from .conftest import front_stages

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
