"""Configuration and result records of the activation audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import ActivationsSection, Finding, LayerActivations

STAGE = "activations"
UNITS_FILE = "units.parquet"
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


DEFAULT_CONFIG = ActivationsConfig()


@dataclass(frozen=True)
class ActivationAudit:
    """What the audit computed: per-layer records, the tidy per-unit table (UNITS_SCHEMA) and
    the first user-weeks' activations [n, T_l, units] of every heatmap layer."""

    layers: list[LayerActivations]
    units: pd.DataFrame
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    num_user_weeks: int = 0


class ActivationsResult(BaseModel):
    """The task's small record: summary.json entries, findings and the files written."""

    model_config = ConfigDict(frozen=True)

    layers: list[LayerActivations]
    findings: list[Finding]
    num_user_weeks: int
    units_file: Path
    heatmap_files: list[Path]
    dead_history_file: Path | None = None  # DeadUnitMonitor's rows, when training wrote them
    dead_history_plot: Path | None = None  # dead share per layer per epoch
    notes: list[str] = []

    def outcome(self) -> StageOutcome:
        figures = [Figure("activations", f"Activations of {p.stem}", p,
                          "units x time for a few validation user-weeks; night shaded")
                   for p in self.heatmap_files]
        if self.dead_history_plot is not None:
            figures.insert(0, Figure(
                "activations", "Dead units per epoch", self.dead_history_plot,
                "share of each layer's units that are dead, after every epoch"))
        return StageOutcome(stage="activations", findings=list(self.findings), figures=figures,
                            activations=ActivationsSection(layers=list(self.layers)),
                            notes=list(self.notes))

