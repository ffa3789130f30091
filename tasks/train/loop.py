"""The fit loop of the train stage: every phase of a run, resumed where a crash left it.

`train_phases` runs (or finishes) each phase: a fresh phase builds its network (a fine-tuning
phase copies the pre-trained shared layers) and compiles it with masked losses
(`compile_model`); a resumed phase reloads its newest checkpoint. Each `fit` runs from the
state's epoch to the phase's budget or an early stop, then the best epoch's weights are loaded
(`restore_best`: from its checkpoint once verified; a broken one falls back to the best intact
epoch) and handed to `after_phase` (training records what the synthetic-target phase learned).
`resumable_state` refuses checkpoints of another configuration.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import keras

from stethoscope.model.config import ModelConfig
from stethoscope.model.deepheart import build_model, compile_model, transfer_weights
from stethoscope.schemas.errors import UsageError
from stethoscope.tasks.shared.datasets import make_dataset, without_autotune
from stethoscope.tasks.shared.store import Store
from stethoscope.tasks.train.checkpoints import Checkpoints, CheckpointState, EpochCheckpoint
from stethoscope.tasks.train.config import Phase, TrainConfig
from stethoscope.tasks.train.distribute import scope, strategy_for

log = logging.getLogger("stethoscope.train")


@dataclass(frozen=True)
class TrainRun:
    """What every phase of one training run shares."""

    store: Store
    config: TrainConfig
    model_config: ModelConfig
    out_dir: Path
    checkpoints: Checkpoints
    callbacks: tuple[keras.callbacks.Callback, ...]
    monitor: str

    @property
    def use_metadata(self) -> bool:
        return self.model_config.num_metadata > 0


def resumable_state(checkpoints: Checkpoints) -> CheckpointState | None:
    """The newest checkpoint's state, after checking that it belongs to this configuration."""
    state = checkpoints.latest()
    if state is not None and state.fingerprint != checkpoints.fingerprint:
        raise UsageError(
            f"train: the checkpoints in {checkpoints.root} come from a different model or task "
            "set than this configuration, so they cannot be resumed. Delete that directory or "
            "train into a new run directory."
        )
    if state is not None:
        log.info("resuming from checkpoint epoch %d (%s)", state.epoch, state.phase)
    return state


AfterPhase = Callable[[Phase, keras.Model, CheckpointState], None]


def train_phases(run: TrainRun, phases: Sequence[Phase], resumed: CheckpointState | None,
                 after_phase: AfterPhase | None = None) -> tuple[keras.Model, CheckpointState]:
    """Run (or finish) every phase; returns the last phase's model with its best weights.
    `after_phase` sees each phase this attempt ran or finished, its best weights loaded (not
    the phases a resumed run skips: they ended in an earlier attempt)."""
    model, state = None, resumed
    strategy = strategy_for(run.config.distribute)
    for index, phase in enumerate(phases):
        if state is not None and state.phase_index > index:
            continue  # finished before the crash; its weights live on in the later phase
        if state is not None and state.phase_index == index:
            with scope(strategy):
                model = keras.saving.load_model(run.checkpoints.model_path(state.epoch),
                                                safe_mode=True)
        else:
            keras.utils.set_random_seed(run.config.seed + index)  # same init fresh or resumed
            with scope(strategy):
                previous, model = model, build_model(run.model_config, phase.tasks,
                                                     seed=run.config.seed + index)
                if previous is not None:
                    log.info("fine-tuning from pre-trained layers %s",
                             transfer_weights(previous, model))
                compile_model(model, phase.tasks, run.config.learning_rate)
            first = state.epoch if state is not None else 0
            state = CheckpointState(run.checkpoints.fingerprint, index, phase.name, first, first,
                                    history=state.history if state is not None else ())
        if not state.finished(phase):
            state = _fit(run, model, phase, state)
        state = restore_best(run, model, state)
        if after_phase is not None:
            after_phase(phase, model, state)
    if model is None or state is None:
        raise ValueError("train_phases: no phase ran (no phases, or a checkpoint past the last)")
    return model, state


def restore_best(run: TrainRun, model: keras.Model, state: CheckpointState) -> CheckpointState:
    """Early stopping keeps the phase's best epoch: load its checkpoint into `model`, which
    holds the phase's last epoch (`state.epoch`). A best checkpoint that is broken (§6.1) is
    set aside, and the phase keeps, of its epochs whose checkpoint is intact and its last, the
    one with the best monitored value; the state returned says which."""
    best = state.best_epoch
    if best is None or best == state.epoch:
        return state  # the weights in `model` are the best epoch's
    if run.checkpoints.intact(best, "the phase keeps its best intact epoch instead"):
        model.load_weights(run.checkpoints.model_path(best))
        return state
    scores = {row["epoch"]: float(row.get(run.monitor, math.nan)) for row in state.history}

    def score(epoch: int) -> float:  # lower is better; unknown or diverged last
        value = scores.get(epoch, math.nan)
        return value if math.isfinite(value) else math.inf

    intact = [epoch for epoch in range(state.phase_first_epoch + 1, state.epoch)
              if epoch != best and run.checkpoints.model_path(epoch).exists()
              and run.checkpoints.intact(epoch, "not a candidate for the best epoch")]
    kept = min([*intact, state.epoch], key=lambda epoch: (score(epoch), -epoch))
    if kept != state.epoch:
        model.load_weights(run.checkpoints.model_path(kept))
    log.warning("train: %s phase: the best epoch (%d, %s %.4f) is lost with its checkpoint; "
                "keeping epoch %d (%s %.4f). To train the best epoch again, delete %s and run "
                "again.", state.phase, best, run.monitor, scores.get(best, math.nan), kept,
                run.monitor, scores.get(kept, math.nan), run.checkpoints.root)
    return replace(state, best=score(kept) if math.isfinite(score(kept)) else None,
                   best_epoch=kept)


def _fit(run: TrainRun, model: keras.Model, phase: Phase, state: CheckpointState
         ) -> CheckpointState:
    """model.fit from the state's epoch to the end of the phase (or an early stop)."""
    last = state.phase_first_epoch + phase.max_epochs
    train, val = run.store.splits["train"], run.store.splits["val"]
    batch_size, metadata = run.config.batch_size, run.use_metadata
    train_data = without_autotune(make_dataset(
        run.store, train, phase.tasks, batch_size, use_metadata=metadata, seed=run.config.seed,
        epochs=range(state.epoch, last)))
    val_data = (without_autotune(make_dataset(run.store, val, phase.tasks, batch_size,
                                              use_metadata=metadata)) if len(val) else None)
    checkpoint = EpochCheckpoint(run.checkpoints, state, run.monitor, run.config.patience, phase)
    tensorboard = _tensorboard(run.out_dir / "tensorboard" / phase.name)
    model.fit(train_data, validation_data=val_data, initial_epoch=state.epoch, epochs=last,
              steps_per_epoch=math.ceil(len(train) / batch_size),
              callbacks=[*run.callbacks, checkpoint, *tensorboard], shuffle=False, verbose=0)
    return checkpoint.state


def _tensorboard(log_dir: Path) -> list[keras.callbacks.Callback]:
    """The TensorBoard callback; none (and a warning) when the tensorboard package is absent,
    since Keras would only fail at the end of the first epoch."""
    if importlib.util.find_spec("tensorboard") is None:
        log.warning("tensorboard is not installed, so no TensorBoard logs are written to %s; "
                    "`pip install tensorboard` to get them", log_dir)
        return []
    return [keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False)]
