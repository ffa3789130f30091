"""The train stage's Prefect task: train, then publish progress as a Prefect artifact."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast
from uuid import UUID

import keras
from prefect import task

from stethoscope.model.callbacks import DeadUnitMonitor
from stethoscope.model.config import ModelConfig
from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.shared.store import iter_store_batches
from stethoscope.tasks.train.config import DEAD_UNITS_FILE, TrainConfig, TrainResult
from stethoscope.tasks.train.plots import plot_history
from stethoscope.tasks.train.training import train_model

log = logging.getLogger("stethoscope.train")


class _ProgressArtifact(keras.callbacks.Callback):
    """A Prefect progress artifact, moved after every epoch."""

    def __init__(self, total_epochs: int) -> None:
        super().__init__()
        from prefect.artifacts import create_progress_artifact

        self.total = total_epochs
        # cast: called from sync code, prefect's async_dispatch returns the id, not a coroutine
        self.artifact = cast(UUID, create_progress_artifact(0.0, key="training-progress",
                                                            description="Training epochs"))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.move_to(100.0 * (epoch + 1) / self.total)

    def move_to(self, percent: float) -> None:
        from prefect.artifacts import update_progress_artifact

        update_progress_artifact(self.artifact, min(100.0, percent))


@task(name="train")
def train_task(run_dir: Path, config: TrainConfig, model_config: ModelConfig,
               callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train from `<run>/sequences` into `<run>/model`, predictions to `<run>/predictions`."""
    paths = RunPaths(Path(run_dir))
    total = config.epochs + (config.pretrain_epochs if config.mode == "pretrain_finetune" else 0)
    progress = _ProgressArtifact(total)  # an early stop ends a phase before its budget
    sample = list(iter_store_batches(paths.sequences, "val", max_user_weeks=32, batch_size=32,
                                     stage="train"))
    monitor = DeadUnitMonitor([sample[0][0], sample[0][1]], path=paths.model_dir / DEAD_UNITS_FILE)
    result = train_model(paths.sequences, paths.model_dir, config, model_config,
                         predictions_path=paths.predictions, callbacks=[*callbacks, monitor, progress])
    progress.move_to(100.0)
    plot = plot_history(result.history_path, result.history_path.with_suffix(".png"))
    result = result.model_copy(update={"history_plot": plot})
    log.info("trained %s (%s), %d epochs, best %s %.4f; %d predictions", result.tasks,
             result.mode, result.epochs_completed, result.monitor, result.best_loss or math.nan,
             result.num_predictions)
    return result
