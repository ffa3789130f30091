"""Configuration and result records of the labels stage."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import StageOutcome
from stethoscope.schemas.summary import DataSection


class LabelsConfig(StageConfig):
    """Windows are [start, end) in local hours of the day; start > end wraps midnight."""

    day_window: tuple[float, float] = Field((8.0, 20.0), description="local hours [start, end)")
    night_window: tuple[float, float] = Field((0.0, 6.0), description="local hours [start, end)")
    min_window_samples: int = Field(30, ge=1, description="fewer samples in a window -> null")
    num_bins: int = Field(4096, ge=1, description="bins per week for coverage (= sequence T)")
    rest_minutes: float = Field(10.0, gt=0, le=1440, description="no steps for this long = rest")
    bout_min_steps: float = Field(60.0, gt=0, description="steps of a sample within a bout")
    recovery_margin_bpm: float = Field(10.0, ge=0, description="recovered = resting HR + this")
    max_recovery_minutes: float = Field(120.0, gt=0, description="longer recoveries do not count")
    min_bouts: int = Field(3, ge=1, description="fewer counted bout ends -> null")
    chunk_rows: int = Field(1_000_000, ge=1, description="rows per chunk of whole users")
    workers: int = Field(2, ge=1, description="threads computing chunks")

    @model_validator(mode="after")
    def _windows(self) -> LabelsConfig:
        for name in ("day_window", "night_window"):
            start, end = getattr(self, name)
            if not (0 <= start <= 24 and 0 <= end <= 24) or start == end:
                raise ValueError(f"{name}={start, end}: expected two different hours in [0, 24]")
        return self


class LabelsResult(BaseModel):
    """What the stage returns: the table's path and a few counts."""

    model_config = ConfigDict(frozen=True)

    path: Path
    num_rows: int
    num_users: int
    num_user_weeks: int
    num_bins: int
    non_null_targets: dict[str, int]

    def describe(self) -> str:
        targets = ", ".join(f"{k} {v}" for k, v in self.non_null_targets.items())
        return (f"user-week table {self.path}: {self.num_user_weeks:,} user-weeks of "
                f"{self.num_users:,} users from {self.num_rows:,} rows; non-null: {targets}")

    def outcome(self) -> StageOutcome:
        return StageOutcome(stage="data", notes=[self.describe()],
                            data=DataSection(user_weeks=self.num_user_weeks))

