"""Configuration and result records of the train stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from stethoscope.model.config import TaskSpec
from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.tables import PREDICTIONS

DEAD_UNITS_FILE = "dead_units.json"  # DeadUnitMonitor's rows: dead share per layer per epoch
Mode = Literal["supervised", "pretrain_finetune", "synthetic"]
# predictions.parquet: the documented columns (docs/architecture.md §4.7), then extra metadata for strata and loss patterns
PREDICTION_COLUMNS = pa.schema([*PREDICTIONS, pa.field("coverage", pa.float64())])


class TrainConfig(StageConfig):
    """How to train. Defaults: supervised, Adam 1e-3, up to 20 epochs, patience 3."""

    mode: Mode = "supervised"
    epochs: int = Field(20, ge=1, description="maximum epochs on the labels (or the targets)")
    pretrain_epochs: int = Field(5, ge=1, description="maximum epochs of pre-training")
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(3, ge=1, description="epochs without a better val loss before stopping")
    seed: int = 0
    conditions: tuple[str, ...] | None = Field(None, description="None = every store condition")
    targets: tuple[str, ...] | None = Field(None, description="None = every synthetic target")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (+ the best)")
    distribute: Literal["auto", "none", "mirrored", "multi_worker"] = Field(
        "auto", description="devices to train on: auto (mirrored when more than one GPU is "
        "visible), none, mirrored (every GPU, else every logical CPU), multi_worker (TF_CONFIG)")


class TrainResult(BaseModel):
    """What training produced: paths and a few numbers, cheap to pass between tasks."""

    model_config = ConfigDict(frozen=True)

    model_path: Path
    history_path: Path
    predictions_path: Path
    checkpoint_dir: Path
    tensorboard_dir: Path
    mode: Mode  # as trained, after any fallback
    tasks: tuple[str, ...]  # heads of the saved model
    epochs_completed: int  # over all phases and attempts
    monitor: str  # "val_loss", or "loss" when the store has no validation split
    best_loss: float | None  # best monitored value of the last phase
    resumed_from_epoch: int | None  # None = started fresh
    num_predictions: int
    history_plot: Path | None = None  # loss per epoch (train/plots.py)
    # R² per synthetic target of the phase trained on them (train/pretrain_record.py); None
    # when no phase was, or it ended in an earlier attempt that wrote no record
    pretrain_record: Path | None = None

    def outcome(self) -> StageOutcome:
        best = "n/a" if self.best_loss is None else f"{self.best_loss:.4g}"
        notes = [f"trained {', '.join(self.tasks)} ({self.mode}) for {self.epochs_completed} "
                 f"epochs; best {self.monitor} {best}"
                 + (f"; resumed from epoch {self.resumed_from_epoch}"
                    if self.resumed_from_epoch else "")]
        caption = ("train and validation loss; pre-training (synthetic targets) ends at the "
                   "dashed line" if self.mode == "pretrain_finetune" else
                   "train and validation loss")
        figures = ([Figure("training", "Loss per epoch", self.history_plot, caption)]
                   if self.history_plot is not None else [])
        return StageOutcome(stage="training", notes=notes, figures=figures)



@dataclass(frozen=True)
class Phase:
    """One `fit`: its name, its heads and its epoch budget."""

    name: Literal["supervised", "synthetic", "pretrain", "finetune"]
    tasks: tuple[TaskSpec, ...]
    max_epochs: int
