"""Configuration and result records of the activation audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.sequence_store import CHANNELS, OPTIONAL_CHANNELS, StoreStats
from stethoscope.schemas.summary import (
    ActivationsSection,
    Finding,
    LayerActivations,
    SemanticUnit,
)

STAGE = "activations"
UNITS_FILE = "units.parquet"
SEMANTIC_FILE = "semantic.parquet"
# The states of the semantic analysis (tasks/audits/activations/semantic.py), in this order.
STATES = ("night", "activity", "hr_missing", "elevated_hr", "after_activity")
HEATMAP_KINDS = ("convolutional", "recurrent", "activation")
NO_LAYERS_NOTE = ("The model has no convolutional, recurrent, dense or activation layer (built-in "
                  "Keras layers) whose units the activation audit could inspect.")

UNITS_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.string(), nullable=False),
        pa.field("unit", pa.int32(), nullable=False),
        pa.field("zero_share", pa.float64(), nullable=False),
        pa.field("temporal_std_mean", pa.float64()),  # null: the layer has no time axis
        pa.field("constant_share", pa.float64()),  # null: one user-week of a layer without time
        pa.field("saturated_share", pa.float64()),  # null: the output is unbounded
        pa.field("dead", pa.bool_(), nullable=False),
        pa.field("constant", pa.bool_(), nullable=False),
        pa.field("saturated", pa.bool_(), nullable=False),
    ]
)

SEMANTIC_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.string(), nullable=False),
        pa.field("unit", pa.int32(), nullable=False),
        pa.field("state", pa.string(), nullable=False),
        pa.field("r", pa.float64()),  # null: the unit or the state does not vary
        pa.field("r_low", pa.float64()),  # null: no interval (see semantic.py)
        pa.field("r_high", pa.float64()),
        pa.field("n", pa.int64(), nullable=False),  # user-weeks
        pa.field("reported", pa.bool_(), nullable=False),  # in summary.json
    ]
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class ActivationsConfig(StageConfig):
    """Sample, thresholds and heatmaps of the activation audit."""

    split: str = "val"
    max_user_weeks: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    layers: tuple[str, ...] | None = Field(None, description="None: every inspectable layer")
    dead_threshold: float = Field(0.99, gt=0, le=1, description="dead: exactly 0 on at least "
                                  "this share of (user-week, time) positions")
    constant_threshold: float = Field(0.99, gt=0, le=1, description="constant: flat over time "
                                      "on at least this share of user-weeks")
    constant_rtol: float = Field(1e-6, ge=0, description="flat: max - min <= atol + rtol max|a|")
    constant_atol: float = Field(1e-7, ge=0)
    saturation_margin: float = Field(0.01, gt=0, lt=0.5, description="saturated: within this "
                                     "of a tanh/sigmoid bound")
    saturated_threshold: float = Field(0.9, gt=0, le=1, description="saturated unit: on at "
                                       "least this share of positions")
    error_fraction: float = Field(0.5, gt=0, le=1, description="dead/constant share of a layer's "
                                  "units from which the finding is an error, not a warning")
    heatmap_user_weeks: int = Field(3, ge=0)
    night_hours: tuple[float, float] = Field((0.0, 6.0), description="local [start, end) hours")
    semantic: bool = Field(True, description="correlate every unit over time with the states "
                           "night, activity, hr_missing, elevated_hr and after_activity")
    semantic_threshold: float = Field(0.5, gt=0, le=1, description="report a unit for a state "
                                      "when |Pearson r| is at least this")
    semantic_units: int = Field(3, ge=1, description="at most this many units per layer and "
                                "state in summary.json (those with the largest |r|)")
    active_steps_per_minute: float = Field(20.0, gt=0, description="a bin is active (part of a "
                                           "bout) at this many steps per minute or more")


@dataclass(frozen=True)
class InputScale:
    """How to read the raw signals back from the store's channels (docs/architecture.md §4.6):
    heart rate = x0 * std + mean (bpm) where x2 (heart_rate_missing) is 0; log1p steps =
    x1 * std + mean where x1 != 0 (0.0 is where the bin had no steps sample); a bin is
    `bin_seconds` long and bin 0 starts at local Monday 00:00. With `time_of_day`, channels 3-4
    are sin and cos of the local time at each bin's centre."""

    bin_seconds: float
    heart_rate_mean: float = 0.0
    heart_rate_std: float = 1.0
    log_steps_mean: float = 0.0
    log_steps_std: float = 1.0
    time_of_day: bool = False

    @classmethod
    def of(cls, stats: StoreStats) -> InputScale | None:
        """The scale of a store; None when its channels are not the ones described above."""
        if tuple(stats.channels) not in (CHANNELS, CHANNELS + OPTIONAL_CHANNELS):
            return None
        return cls(bin_seconds=stats.bin_seconds, heart_rate_mean=stats.heart_rate_mean,
                   heart_rate_std=stats.heart_rate_std, log_steps_mean=stats.log_steps_mean,
                   log_steps_std=stats.log_steps_std,
                   time_of_day=len(stats.channels) > len(CHANNELS))


DEFAULT_CONFIG = ActivationsConfig()


@dataclass(frozen=True)
class ActivationAudit:
    """What the audit computed: per-layer records, the tidy per-unit table (UNITS_SCHEMA) and
    the first user-weeks' activations [n, T_l, units] of every heatmap layer."""

    layers: list[LayerActivations]
    units: pd.DataFrame
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    num_user_weeks: int = 0
    semantic: list[SemanticUnit] = field(default_factory=list)  # |r| >= threshold, by |r|
    semantic_table: pd.DataFrame | None = None  # SEMANTIC_SCHEMA; None: not computed


class ActivationsResult(BaseModel):
    """The task's small record: summary.json entries, findings and the files written."""

    model_config = ConfigDict(frozen=True)

    layers: list[LayerActivations]
    findings: list[Finding]
    num_user_weeks: int
    units_file: Path
    heatmap_files: list[Path]
    semantic: list[SemanticUnit] = []
    semantic_file: Path | None = None  # every unit x state, SEMANTIC_SCHEMA
    dead_history_file: Path | None = None  # DeadUnitMonitor's rows, when training wrote them
    dead_history_plot: Path | None = None  # dead share per layer per epoch
    notes: list[str] = []

    def outcome(self) -> StageOutcome:
        figures = [Figure("activations", f"Activations of {p.stem}", p,
                          "units x time for a few validation user-weeks; night shaded; units "
                          "that track a state labelled at their row")
                   for p in self.heatmap_files]
        if self.dead_history_plot is not None:
            figures.insert(0, Figure(
                "activations", "Dead units per epoch", self.dead_history_plot,
                "share of each layer's units that are dead, after every epoch"))
        return StageOutcome(stage="activations", findings=list(self.findings), figures=figures,
                            activations=ActivationsSection(layers=list(self.layers),
                                                            semantic=list(self.semantic)),
                            notes=list(self.notes))

