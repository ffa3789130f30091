"""Checkpoints of the train stage: what a retried run resumes from.

After every epoch `EpochCheckpoint` updates the early-stopping state (`CheckpointState`), saves
the model with its optimizer state to `checkpoints/epoch-NNN.keras`, then writes
`epoch-NNN.json`; the JSON comes last, so it marks a complete checkpoint (`Checkpoints.latest`).
Early stopping lives in that JSON because Keras' EarlyStopping and BackupAndRestore forget their
state on restart. A checkpoint resumes only a run with the same `run_fingerprint`
(architecture and heads of every phase). `save_model` writes a .keras file atomically.

The JSON also records the size and sha256 of its model file. A checkpoint whose JSON cannot be
read, whose model file is missing, of another size or content, or not a zip archive (a disk
that lost the tail of a file, a copy cut short) is skipped for the newest intact one, with a
warning naming it, and moved aside to `checkpoints/corrupt/`, never deleted: it is evidence.
The best epoch's checkpoint, which training reloads at the end of a phase, is checked the same
way (`intact`); when it is broken, training keeps the best intact epoch instead (loop.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras

from stethoscope.model.config import ModelConfig
from stethoscope.schemas.atomic import atomic_path, write_json_atomic
from stethoscope.tasks.train.config import Phase

log = logging.getLogger("stethoscope.train")


@dataclass(frozen=True)
class CheckpointState:
    """Everything a retried run needs besides the weights; stored next to each checkpoint."""

    fingerprint: str
    phase_index: int
    phase: str
    phase_first_epoch: int  # global epochs completed before this phase began
    epoch: int  # global epochs completed
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped: bool = False
    history: tuple[dict[str, Any], ...] = ()

    def finished(self, phase: Phase) -> bool:
        return self.stopped or self.epoch >= self.phase_first_epoch + phase.max_epochs


class Checkpoints:
    """checkpoints/epoch-NNN.keras + epoch-NNN.json of one configuration (its fingerprint)."""

    def __init__(self, root: Path, keep: int, fingerprint: str) -> None:
        self.root, self.keep, self.fingerprint = Path(root), keep, fingerprint

    def model_path(self, epoch: int) -> Path:
        return self.root / f"epoch-{epoch:03d}.keras"

    def latest(self) -> CheckpointState | None:
        """The newest complete and intact checkpoint (its JSON exists, so its model was saved
        first, and the model file is the one the JSON records); broken ones are set aside."""
        for state_file in sorted(self.root.glob("epoch-*.json"), key=_epoch_of, reverse=True):
            state, problem = self._read(state_file)
            if state is not None:
                return state
            if problem is not None:
                self._set_aside(state_file, problem, "skipped for an older intact one")
        return None

    def intact(self, epoch: int, instead: str) -> bool:
        """Whether epoch `epoch`'s checkpoint is there and as it was saved (the best epoch's,
        before training reloads it); a broken one is set aside with a warning that says what
        is done `instead`."""
        state_file = self.model_path(epoch).with_suffix(".json")
        if state_file.exists():
            state, problem = self._read(state_file)
            if state is not None:
                return True
            why = problem or f"{self.model_path(epoch).name} is missing"
        else:
            why = f"{state_file.name} is missing"
        self._set_aside(state_file, why, instead)
        return False

    def save(self, model: keras.Model, state: CheckpointState) -> None:
        path = save_model(model, self.model_path(state.epoch))
        write_json_atomic({**asdict(state), "model_file": {
            "bytes": path.stat().st_size, "sha256": _sha256(path)}}, path.with_suffix(".json"))
        keep = {state.best_epoch, *sorted(self._epochs())[-self.keep:]}
        for epoch in self._epochs() - keep:
            self.model_path(epoch).with_suffix(".json").unlink(missing_ok=True)
            self.model_path(epoch).unlink(missing_ok=True)

    def _epochs(self) -> set[int]:
        return {_epoch_of(p) for p in self.root.glob("epoch-*.json")}

    def _read(self, state_file: Path) -> tuple[CheckpointState | None, str | None]:
        """(state, None) when intact; (None, why) when broken; (None, None) when its model was
        never saved (an epoch of an older run, pruned)."""
        try:
            state = json.loads(state_file.read_text())
            recorded = state.pop("model_file", None)
            checkpoint = CheckpointState(**{**state, "history": tuple(state["history"])})
        except (OSError, ValueError, TypeError, KeyError) as exc:
            return None, f"its state file cannot be read ({type(exc).__name__}: {exc})"
        model = self.model_path(checkpoint.epoch)
        if not model.exists():
            return None, None
        if recorded and model.stat().st_size != recorded["bytes"]:
            return None, (f"{model.name} has {model.stat().st_size} bytes, "
                          f"{recorded['bytes']} were saved")
        if not zipfile.is_zipfile(model):
            return None, f"{model.name} is truncated or not a Keras archive"
        if recorded and _sha256(model) != recorded["sha256"]:
            return None, f"{model.name} changed since it was saved (checksum)"
        return checkpoint, None

    def _set_aside(self, state_file: Path, problem: str, instead: str) -> None:
        """Move a broken checkpoint's files to checkpoints/corrupt/ (kept, never deleted)."""
        aside = self.root / "corrupt"
        aside.mkdir(exist_ok=True)
        for path in (state_file, state_file.with_suffix(".keras")):
            if path.exists():
                os.replace(path, aside / path.name)
        log.warning("train: checkpoint %s is broken (%s): %s; moved to %s",
                    state_file.with_suffix(".keras"), problem, instead, aside)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _epoch_of(state_file: Path) -> int:
    return int(state_file.stem.split("-")[1])  # epoch-NNN.json; numeric, so 1000 follows 999


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch: resumable early stopping, a checkpoint, one log line."""

    def __init__(self, checkpoints: Checkpoints, state: CheckpointState, monitor: str,
                 patience: int, phase: Phase) -> None:
        super().__init__()
        self.checkpoints, self.state = checkpoints, state
        self.monitor, self.patience, self.phase = monitor, patience, phase

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        value, state = logs.get(self.monitor, math.nan), self.state
        improved = math.isfinite(value) and (state.best is None or value < state.best)
        wait = 0 if improved else state.wait + 1
        self.state = state = replace(
            state,
            epoch=epoch + 1,
            best=value if improved else state.best,
            best_epoch=epoch + 1 if improved else state.best_epoch,
            wait=wait,
            stopped=wait >= self.patience,
            history=(*state.history, {"epoch": epoch + 1, "phase": state.phase, **logs}),
        )
        self.model.stop_training = state.stopped
        self.checkpoints.save(self.model, state)
        log.info("epoch %d (%s, ends by %d): %s=%.4f best=%.4f%s", epoch + 1, state.phase,
                 state.phase_first_epoch + self.phase.max_epochs, self.monitor, value,
                 state.best if state.best is not None else math.nan,
                 " -> early stop" if state.stopped else "")

def save_model(model: keras.Model, path: Path) -> Path:
    """model.save, atomically (schemas/atomic.py: a killed save leaves no file that lasts)."""
    with atomic_path(path, suffix=".keras") as partial:
        model.save(partial)
    return path


def run_fingerprint(model_config: ModelConfig, phases: Sequence[Phase]) -> str:
    """What a checkpoint must agree with to be resumed: the architecture and the heads."""
    spec = {"model": model_config.model_dump(mode="json"),
            "phases": [[p.name, [t.model_dump(mode="json") for t in p.tasks]] for p in phases]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
