"""Configuration and result records of the sequences stage."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import StageOutcome
from stethoscope.schemas.sequence_store import SPLITS


class SequencesConfig(StageConfig):
    num_steps: int = Field(4096, ge=8, le=1_000_000, description="T: bins per user-week")
    min_coverage: float = Field(0.5, ge=0, le=1, description="least share of bins with HR")
    time_of_day: bool = Field(False, description="add local time-of-day sin/cos channels")
    split_fractions: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="train, val, test shares of users")
    split_seed: int = Field(0, ge=0, description="same seed -> same split of every user")
    shard_size: int = Field(256, ge=1, description="user-weeks per shard file")
    chunk_rows: int = Field(1_000_000, ge=1, description="rows per chunk of whole users")
    workers: int = Field(2, ge=1, description="threads binning chunks")

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) < 0 or abs(sum(value) - 1) > 1e-9:
            raise ValueError(f"split_fractions={value}: expected three shares >= 0 summing to 1")
        return value


class SequencesResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    store_dir: Path
    num_included: int
    num_excluded: int
    excluded_file: Path
    counts: dict[str, int]  # included user-weeks per split
    num_users: dict[str, int]  # users with included user-weeks, per split
    num_shards: int
    targets: list[str]
    conditions: list[str]

    def describe(self) -> str:
        splits = ", ".join(f"{s} {self.counts[s]} ({self.num_users[s]} users)" for s in SPLITS)
        return (f"sequence store {self.store_dir}: {self.num_included:,} user-weeks ({splits}), "
                f"{self.num_excluded:,} excluded for low coverage ({self.excluded_file})")

    def outcome(self) -> StageOutcome:
        return StageOutcome(stage="data", notes=[self.describe()])

