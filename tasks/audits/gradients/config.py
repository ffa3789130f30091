"""Configuration and result records of the gradient audit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import Finding, GradientsSection

PROFILE_FILE = "profile.parquet"
PLOT_FILE = "profile.png"
WEIGHT_GRADIENTS_FILE = "weight_gradients.parquet"
WEEK_SECONDS = 7 * 24 * 3600.0

PROFILE_SCHEMA = pa.schema(
    [
        pa.field("t", pa.int32(), nullable=False),
        pa.field("offset", pa.int32(), nullable=False),  # t - t_mid, in input steps
        pa.field("channel", pa.string(), nullable=False),
        pa.field("mean_abs", pa.float64(), nullable=False),
        pa.field("mean_signed", pa.float64(), nullable=False),
    ]
)

if TYPE_CHECKING:
    import pandas as pd


class GradientsConfig(StageConfig):
    """Sample, probed output and thresholds of the gradient audit."""

    split: str = "val"
    max_user_weeks: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    output_layer: str | None = Field(
        None, description="per-step layer differentiated (CLI --output-layer; 'encoder/conv_1' "
        "for a layer inside a nested model); None: raw_output when the model has it, else the "
        "last layer whose output keeps a time axis")
    task_index: int = Field(0, ge=0, description="unit (task) of the output layer "
                            "differentiated (CLI --output-index)")
    timestep: int | None = Field(None, ge=0, description="output layer step; None: the middle")
    decades: float = Field(3.0, gt=0, description="k: horizon threshold = peak x 10^-k")
    required_context_hours: float = Field(24.0, ge=0)
    bin_seconds: float | None = Field(None, gt=0, description="None: the store's, else 1 week / T")
    causal: bool | None = Field(None, description="None: detect from exactly-zero gradients")
    vanishing_ratio: float = Field(1e-3, gt=0)
    exploding_ratio: float = Field(1e3, gt=0)


DEFAULT_CONFIG = GradientsConfig()


@dataclass(frozen=True)
class Horizon:
    back: int
    forward: int
    back_open: bool
    forward_open: bool
    peak: float
    threshold: float
    decades: float

    @property
    def effective(self) -> int:
        """min over the open sides (see the module docstring); 0 when no side is open."""
        sides = [s for s, is_open in ((self.back, self.back_open),
                                      (self.forward, self.forward_open)) if is_open]
        return min(sides) if sides else 0


@dataclass(frozen=True)
class GradientAudit:
    profile: GradientProfile
    horizon: Horizon
    horizon_hours: float
    bin_seconds: float
    ratio: float | None  # RMS of the first layer / RMS of the last; None when undefined

    @property
    def weight_gradients(self) -> pd.DataFrame:
        return self.profile.weight_gradients


class GradientsResult(BaseModel):
    """The task's small record: the summary.json section, findings and the files written."""

    model_config = ConfigDict(frozen=True)

    section: GradientsSection
    findings: list[Finding]
    causal: bool
    first_last_ratio: float | None
    plot_file: Path | None  # None: not evaluated (no per-step output)
    weight_gradients_file: Path | None
    notes: list[str] = []  # which output was differentiated, and why

    def outcome(self) -> StageOutcome:
        figures = [] if self.plot_file is None else [Figure(
            "gradients", "Input-gradient profile around t_mid", self.plot_file,
            f"mean |d {self.section.output_layer}[t_mid] / d input[t]| on a log scale; horizon "
            "marked")]
        return StageOutcome(stage="gradients", findings=list(self.findings), figures=figures,
                            gradients=self.section, notes=list(self.notes))



@dataclass(frozen=True)
class GradientProfile:
    """Mean |g| and mean g [T, C] over `num_user_weeks` of d output_layer[t_mid, task] /
    d input; `timestep` is t_mid in the output's `output_steps` steps, `center` the same step in
    input steps; `weight_gradients` the per-layer norms (WEIGHT_GRADIENTS_SCHEMA, sequence
    input first)."""

    mean_abs: np.ndarray
    mean_signed: np.ndarray
    timestep: int
    center: int
    num_user_weeks: int
    weight_gradients: pd.DataFrame
    output_layer: str = "raw_output"
    output_steps: int | None = None  # T' (None: as many as the input's T)

    @property
    def by_step(self) -> np.ndarray:
        """p[t] = sum over channels of mean |g|: [T]."""
        return self.mean_abs.sum(axis=1)
