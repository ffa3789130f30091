"""Configuration and records of the variant comparison (docs/architecture.md §7.5)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from stethoscope.schemas.config import StageConfig

COMPARISON_JSON = "comparison.json"
COMPARISON_HTML = "comparison.html"
DATA_RUN = "data"  # <out>/data: the data stages, run once for every variant


class VariantsConfig(StageConfig):
    """How variants are told apart: AUROC differences with paired user-level bootstrap
    intervals against the best variant; with several seeds, the spread over seeds."""

    alpha: float = Field(0.05, gt=0, lt=0.5, description="intervals at level 1 - alpha")
    num_bootstrap: int = Field(1000, ge=100, le=100_000, description="user-level resamples")
    seed: int = Field(0, description="seed of the resamples")


class VariantRun(BaseModel):
    """One trained variant (one seed): where its run directory is."""

    model_config = ConfigDict(frozen=True)

    name: str
    seed: int
    run_dir: Path
    config: dict = Field(default_factory=dict)  # the sections the variant overrides


class LayerShare(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    dead_fraction: float
    constant_fraction: float


class Measure(BaseModel):
    """One measure of one variant: its value (the mean over seeds), the values of each seed,
    and how it stands against the best variant of that measure."""

    model_config = ConfigDict(frozen=True)

    measure: str  # "auroc <task>", "synthetic r2 <target>", "horizon hours", "dead share <layer>"
    value: float | None
    seeds: list[float | None] = Field(default_factory=list)
    best: bool = False
    delta_vs_best: float | None = None
    delta_ci: tuple[float, float] | None = None
    beyond_noise: bool | None = None  # None: the data give no way to tell


class VariantSummary(BaseModel):
    """A variant in comparison.json."""

    model_config = ConfigDict(frozen=True)

    name: str
    config: dict
    run_dirs: list[Path]
    status: list[str]
    layers: list[LayerShare]
    horizon_hours: float | None
    synthetic: dict[str, float | None]
    auroc: dict[str, float | None]
    measures: list[Measure]


class ComparisonResult(BaseModel):
    """What the flow returns: the comparison's files and, per variant, its summary."""

    model_config = ConfigDict(frozen=True)

    variants: list[VariantSummary]
    comparison_json: Path
    comparison_html: Path
    figures: list[Path] = Field(default_factory=list)
    method: str = ""
