"""Configuration and result records of the validate stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import Field

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import StageOutcome
from stethoscope.schemas.summary import DataSection, Finding

# The rows of users.parquet set aside for bad metadata, as they came plus rule, column, value
# (under RunPaths.validation; docs/architecture.md §4.2).
REJECTED_USERS_FILE = "rejected_users.parquet"


class ValidateConfig(StageConfig):
    heart_rate_min: float = Field(25.0, description="lowest plausible heart rate, bpm")
    heart_rate_max: float = Field(250.0, description="highest plausible heart rate, bpm")
    max_steps_per_minute: float = Field(250.0, gt=0, description="highest plausible cadence")
    earliest: datetime = Field(datetime(2010, 1, 1, tzinfo=UTC),
                               description="samples before this are quarantined")
    future_tolerance_minutes: float = Field(
        60.0, ge=0, description="samples later than now + this are quarantined")
    max_quarantine_share: float = Field(
        0.05, ge=0, le=1, description="fail when more than this share of rows is quarantined")
    great_expectations: bool = Field(True, description="run the GX suites and write Data Docs")
    gx_sample_rows: int = Field(100_000, ge=1000, description="rows in the GX sample")
    max_rows_in_memory: int = Field(20_000_000, ge=10_000,
                                    description="most rows held at once, over all workers")
    workers: int = Field(0, ge=0, description="units checked at once on threads (0: one per CPU core)")
    now: datetime | None = Field(None, description="'now' for the future check (default: wall clock)")


@dataclass(frozen=True)
class ValidationResult:
    """The small record the stage returns; details are in report.json."""

    run_dir: Path
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    rows_in_rejected_files: int
    quarantined_share: float
    users: int
    files_read: int
    files_rejected: list[str]
    unknown_devices: dict[str, int]
    gx_success: bool | None
    warnings: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)  # validate/findings.py
    # rows probably held by files that could not be read at all (their share of the cohort's
    # bytes); counted in quarantined_share, never in rows_in
    rows_in_rejected_files_estimated: int = 0
    # users.parquet rows set aside for bad metadata (their sensor rows are quarantined under
    # `bad_user_metadata`): per rule the rows, and a few described ("user 'u3' (timezone
    # 'Mars/Olympus')", data text quoted)
    users_set_aside: int = 0
    users_set_aside_by_rule: dict[str, int] = field(default_factory=dict)
    users_set_aside_examples: list[str] = field(default_factory=list)

    @property
    def rejected_users(self) -> Path:
        return RunPaths(self.run_dir).validation / REJECTED_USERS_FILE

    @property
    def report(self) -> Path:
        return RunPaths(self.run_dir).validation_report

    @property
    def clean_dir(self) -> Path:
        return RunPaths(self.run_dir).clean

    def describe(self) -> str:
        paths = RunPaths(self.run_dir)
        lines = [
            f"validated {self.files_read} files: {self.rows_in:,} rows in, {self.rows_clean:,} clean, "
            f"{self.rows_quarantined:,} quarantined ({self.quarantined_share:.2%}), {self.users} users",
            f"  clean:      {paths.clean}",
            f"  quarantine: {paths.quarantine if self.rows_quarantined else '(none)'}",
            f"  report:     {paths.validation_report}",
        ]
        if self.users_set_aside:
            lines.append(f"  users set aside for bad metadata ({self.users_set_aside}): "
                         f"{self.rejected_users}")
            lines += [f"    {example}" for example in self.users_set_aside_examples]
        if self.gx_success is not None:
            lines.append(f"  data docs:  {paths.data_docs / 'index.html'} "
                         f"(great-expectations: {'pass' if self.gx_success else 'expectations failed'})")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def outcome(self) -> StageOutcome:
        """The data counts, validation's findings and its first warnings, for the report."""
        data = DataSection(rows_in=self.rows_in, rows_clean=self.rows_clean,
                           rows_quarantined=self.rows_quarantined, users=self.users)
        return StageOutcome(stage="data", findings=list(self.findings), data=data,
                            notes=self.warnings[:10])

