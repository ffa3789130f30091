"""Checkpoints of the train stage: what a retried run resumes from.

After every epoch `EpochCheckpoint` updates the early-stopping state (`CheckpointState`), saves
the model with its optimizer state to `checkpoints/epoch-NNN.keras`, then writes
`epoch-NNN.json`; the JSON comes last, so it marks a complete checkpoint (`Checkpoints.latest`).
Early stopping lives in that JSON because Keras' EarlyStopping and BackupAndRestore forget their
state on restart. A checkpoint resumes only a run with the same `run_fingerprint`
(architecture and heads of every phase). `save_model` writes a .keras file atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import keras

from stethoscope.model.config import ModelConfig
from stethoscope.schemas.atomic import write_json_atomic
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
        """The newest complete checkpoint (its JSON exists, so its model was saved first)."""
        for state_file in sorted(self.root.glob("epoch-*.json"), key=_epoch_of, reverse=True):
            state = json.loads(state_file.read_text())
            if self.model_path(state["epoch"]).exists():
                return CheckpointState(**{**state, "history": tuple(state["history"])})
        return None

    def save(self, model: keras.Model, state: CheckpointState) -> None:
        path = save_model(model, self.model_path(state.epoch))
        write_json_atomic(asdict(state), path.with_suffix(".json"))
        keep = {state.best_epoch, *sorted(self._epochs())[-self.keep:]}
        for epoch in self._epochs() - keep:
            self.model_path(epoch).with_suffix(".json").unlink(missing_ok=True)
            self.model_path(epoch).unlink(missing_ok=True)

    def _epochs(self) -> set[int]:
        return {_epoch_of(p) for p in self.root.glob("epoch-*.json")}


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
    """model.save, atomically (Keras insists on the .keras suffix, so no tasks.shared.io helper)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    model.save(partial)
    os.replace(partial, path)
    return path


def run_fingerprint(model_config: ModelConfig, phases: Sequence[Phase]) -> str:
    """What a checkpoint must agree with to be resumed: the architecture and the heads."""
    spec = {"model": model_config.model_dump(mode="json"),
            "phases": [[p.name, [t.model_dump(mode="json") for t in p.tasks]] for p in phases]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
