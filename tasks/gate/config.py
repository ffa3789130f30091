"""Configuration and result record of the gate stage (docs/architecture.md §7.4)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import ComparisonSection, Finding

PROFILE_FILE = "profile.json"  # <run>/gate/: this run's data statistics, for later runs
COMPARISON_FILE = "comparison.json"  # <run>/gate/: the whole comparison, for people and tools
BLESSED_FILE = "blessed.json"  # <runs>/: the run blessed as reference, per flow


class GateConfig(StageConfig):
    """What counts as a regression or a drift against the reference run. An AUROC or AUPRC
    regression is an `error` when its interval excludes no change and the worsening exceeds its
    tolerance, `info` (the data cannot tell) when only the point estimate does (findings.py);
    a drift needs a corrected test below `alpha` and an effect over its threshold."""

    enabled: bool = Field(True, description="compare this run with a reference run")
    auroc_tolerance: float = Field(0.02, ge=0, le=1, description="AUROC drop that matters")
    auprc_tolerance: float = Field(0.02, ge=0, le=1, description="AUPRC drop that matters")
    r2_tolerance: float = Field(0.1, ge=0, description="synthetic-target R² drop that matters")
    dead_share_tolerance: float = Field(
        0.05, ge=0, le=1, description="rise of a layer's share of dead (or constant) units "
        "that matters")
    horizon_tolerance: float = Field(
        0.5, gt=0, le=1, description="a gradient horizon shorter than this share of the "
        "reference's is a regression")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="intervals at 1 - alpha; test level")
    num_bootstrap: int = Field(1000, ge=100, le=100_000, description="user-level resamples")
    seed: int = Field(0, description="seed of the resamples")
    min_paired_share: float = Field(
        0.8, gt=0, le=1, description="compare AUROCs paired by user-week when at least this "
        "share of each run's scored user-weeks is in both; else unpaired")
    drift_wasserstein: float = Field(
        0.1, ge=0, description="normalised Wasserstein distance (by the reference's std) of a "
        "feature that matters")
    drift_psi: float = Field(0.2, ge=0, description="population stability index that matters")
    drift_device_mix: float = Field(
        0.1, ge=0, le=1, description="total-variation distance of the device mix that matters")
    drift_quarantine_rate: float = Field(
        0.01, ge=0, le=1, description="change of a rule's quarantined share of rows that matters")
    drift_min_n: int = Field(30, ge=2, description="fewer user-weeks in a stratum: not compared")


class GateResult(BaseModel):
    """What the gate hands to the report: the comparison, its findings and figures."""

    model_config = ConfigDict(frozen=True)

    comparison: ComparisonSection
    findings: list[Finding] = Field(default_factory=list)
    figures: list[tuple[str, Path, str]] = Field(default_factory=list)  # (title, png, caption)
    notes: list[str] = Field(default_factory=list)
    profile: Path | None = None
    comparison_file: Path | None = None

    def outcome(self) -> StageOutcome:
        return StageOutcome(
            stage="comparison", findings=list(self.findings), comparison=self.comparison,
            figures=[Figure("comparison", title, path, caption)
                     for title, path, caption in self.figures],
            notes=list(self.notes))
