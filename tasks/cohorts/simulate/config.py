"""Configuration and result records of the simulated cohort."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import Field, field_validator

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.layout import CohortPaths


class SimulateConfig(StageConfig):
    users: int = Field(50, ge=1, description="number of users")
    weeks: int = Field(2, ge=1, le=104, description="local weeks of minute data per user")
    seed: int = Field(0, ge=0, description="same seed -> byte-identical cohort")
    start_date: date = Field(date(2024, 3, 4), description="a Monday; data start at local 00:00")
    users_per_file: int = Field(50, ge=1, description="users per sensor_logs Parquet file")
    gen1_share: float = Field(0.22, ge=0, le=1, description="users on a generation-1 device")
    device_switch_share: float = Field(0.06, ge=0, le=1,
                                       description="users who switch to a newer device")
    unknown_label_share: float = Field(0.04, ge=0, le=1,
                                       description="per user and condition: label null")

    @field_validator("start_date")
    @classmethod
    def _is_monday(cls, value: date) -> date:
        if value.weekday() != 0:
            raise ValueError(f"start_date {value} is a {value:%A}; user-weeks start on a Monday")
        return value


@dataclass(frozen=True)
class SimulateResult:
    """The small record the stage returns."""

    paths: CohortPaths
    num_users: int
    num_rows: int
    num_files: int
    sensor_log_files: tuple[Path, ...]
