"""Configuration and result records of the analyze stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import (
    Finding,
    PredictionsSection,
    StratumMetrics,
    TaskMetrics,
    TopLoss,
)

if TYPE_CHECKING:
    import pandas as pd

AGE_BAND = "age_band"  # derived from `age` with AnalyzeConfig.age_band_edges
NO_METADATA = "no-metadata"  # baseline_fit of a table with neither age nor sex


class AnalyzeConfig(StageConfig):
    """How predictions are analysed. Intervals are BCa over user-level bootstrap resamples at
    level 1 - alpha (95% by default); a warning needs an interval or a corrected test that
    excludes "no difference" (docs/architecture.md §7)."""

    eval_splits: tuple[str, ...] = Field(("val", "test"), min_length=1)
    train_split: str = Field("train", description="rows that fit the baseline; else cross-fit")
    num_bootstrap: int = Field(1000, ge=100, le=100_000, description="user-level resamples")
    min_class_users: int = Field(
        5, ge=2, description="an interval needs this many users with positive and with "
        "negative weeks in its rows (a stratum's, the rest's): with fewer, a bootstrap over "
        "users understates the spread (95% BCa intervals of an AUROC cover it in about 80% of "
        "tables with 3, 90% with 5 and 94% with 8)")
    max_undefined_resamples: float = Field(
        0.1, gt=0, lt=1, description="an interval is undefined when a larger share of the "
        "resamples leaves its metric undefined (e.g. a calibration bin no user of was drawn)")
    num_permutations: int = Field(
        1000, ge=100, le=100_000,
        description="per stratum, at most: clear nulls stop early; raised to 2 x tests / alpha")
    alpha: float = Field(0.05, gt=0, lt=0.5)
    correction: Literal["bh", "holm"] = Field("bh", description="across strata x tasks")
    strata_columns: tuple[str, ...] | None = Field(
        None, description="None: device_generation (derived from device when absent), sex and "
        "age_band when the table has them, plus every extra text, integer or boolean column "
        "with 2 to max_levels values")
    age_band_edges: tuple[float, ...] = (30.0, 45.0, 60.0, 75.0)
    min_stratum_users: int = Field(10, ge=2, description="in the stratum and in the rest")
    min_stratum_positives: int = Field(10, ge=1)
    min_stratum_negatives: int = Field(10, ge=1)
    power: float = Field(0.8, gt=0, lt=1, description="for the smallest detectable difference")
    min_gain_over_baseline: float = Field(
        0.02, ge=0, lt=1, description="METADATA_DOMINATED when the upper end of the interval of "
        "the network's AUROC gain over a better-than-chance baseline is below this")
    baseline_folds: int = Field(5, ge=2, description="GroupKFold by user when no train rows")
    correlation: Literal["pearson", "spearman"] = "spearman"
    max_correlation_with_baseline: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(10, ge=1, le=1000, description="rows per kind: FP, FN, TP, TN")
    decision_threshold: float | None = Field(
        None, gt=0, lt=1, description="None: as many predicted positives as true positives"
    )
    loss_share: float = Field(0.1, gt=0, le=1, description="share of rows that are top losses")
    pattern_columns: tuple[str, ...] | None = Field(
        None, description="None: device_generation, device, sex, age_band, timezone + extras"
    )
    min_lift: float = Field(1.5, ge=1)
    calibration_bins: int = Field(10, ge=2, le=100, description="equal-count bins of the scores "
                                  "for the reliability diagram and the ECE")
    target_sensitivity: float = Field(0.9, gt=0, le=1, description="an operating point: the "
                                      "highest threshold reaching this sensitivity")
    target_specificity: float = Field(0.9, gt=0, le=1, description="an operating point: the "
                                      "lowest threshold reaching this specificity")
    max_levels: int = Field(20, ge=2, description="more distinct numbers are binned in quartiles; "
                            "an extra column with more values is no default stratum")
    seed: int = 0

    @field_validator("age_band_edges")
    @classmethod
    def _increasing(cls, edges: tuple[float, ...]) -> tuple[float, ...]:
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(f"age_band_edges must increase strictly, got {edges}")
        return edges

    @field_validator("strata_columns")
    @classmethod
    def _column_names(cls, names: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if names is None:
            return None
        names = tuple(name.strip() for name in names)
        if "" in names:
            raise ValueError("strata_columns holds an empty column name (a stray comma?)")
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"strata_columns names {repeated} more than once")
        return names

    def with_strata(self, columns: Sequence[str] | None) -> AnalyzeConfig:
        """This config with `columns` as its strata (None: the default ones), validated."""
        return type(self).model_validate({**self.model_dump(), "strata_columns": columns})

    def interval_method(self) -> str:
        """How every interval of the analysis is computed, in words (summary.json)."""
        return (f"{1 - self.alpha:.0%} BCa interval from {self.num_bootstrap} bootstrap "
                "resamples of users (a user's weeks stay together); null when degenerate: "
                f"fewer than {self.min_class_users} users of a class in the metric's rows, more "
                f"than {self.max_undefined_resamples:.0%} of the resamples leave the metric "
                "undefined, the resamples do not vary, or the observed value lies outside them")


class AnalysisResult(BaseModel):
    """What the stage returns to the flow: summary records and the paths it wrote."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: list[TaskMetrics]
    strata: list[StratumMetrics]
    top_losses: list[TopLoss]
    findings: list[Finding]
    tables: dict[str, Path]
    plots: list[Path]
    week_plots: list[Path]
    week_plots_skipped: str | None = None  # why the weeks of top rows were not plotted
    interval_method: str | None = None  # AnalyzeConfig.interval_method()

    def predictions_section(self) -> PredictionsSection:
        return PredictionsSection(tasks=self.tasks, strata=self.strata, top_losses=self.top_losses,
                                  interval_method=self.interval_method)

    def describe(self) -> str:
        lines = [
            f"{t.task}: n={t.n} ({t.n_positives} positives, {t.n_users} users), AUROC "
            f"{_fmt(t.auroc)} {_fmt_ci(t.auroc, t.auroc_ci)}, baseline {_fmt(t.baseline_auroc)} "
            f"{_fmt_ci(t.baseline_auroc, t.baseline_auroc_ci)}"
            for t in self.tasks
        ]
        lines += [f"[{f.severity}] {f.code}: {f.message}" for f in self.findings]
        if self.week_plots_skipped:
            lines.append(f"week plots skipped: {self.week_plots_skipped}")
        return "\n".join(lines)

    def outcome(self) -> StageOutcome:
        figures = []
        for path in (*self.plots, *self.week_plots):
            title, caption = _title_and_caption(path.stem)
            figures.append(Figure("predictions", title, path, caption))
        return StageOutcome(stage="predictions", findings=list(self.findings), figures=figures,
                            predictions=self.predictions_section(),
                            notes=[self.week_plots_skipped] if self.week_plots_skipped else [])



@dataclass(frozen=True)
class AnalysisTables:
    """The tidy tables of one analysis (one row per task / stratum / pattern / top row)."""

    tasks: pd.DataFrame
    strata: pd.DataFrame
    loss_patterns: pd.DataFrame
    top_predictions: pd.DataFrame
    baseline_scores: pd.DataFrame
    calibration: pd.DataFrame  # reliability bins
    operating_points: pd.DataFrame
    findings: list[Finding]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _fmt_ci(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return ""
    return "[interval undefined]" if ci is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


# The analysis' figures by file-name prefix (tasks/analyze/plots.py): title, caption.
FIGURES = {
    "roc_pr": ("ROC and precision-recall curves",
               "Left: ROC curve (diagonal: chance); right: precision-recall curve (dashed: the "
               "share of positives, a network without skill). Markers: operating points."),
    "calibration": ("reliability diagram",
                    "Observed rate of positives against the mean score per bin of equal count, "
                    "with user-level bootstrap intervals; the diagonal is perfect calibration. "
                    "Below: rows per bin."),
    "scatter": ("network vs metadata baseline",
                "One dot per user-week: the baseline's score (logistic regression on the "
                "metadata) against the network's."),
    "forest": ("AUROC by stratum",
               "AUROC with its interval per stratum; red: significantly worse than the rest, "
               "grey: too small to test."),
}


def _title_and_caption(stem: str) -> tuple[str, str]:
    """A figure's title and caption from its file name: `<prefix>_<task>`; week plots keep
    their name."""
    for prefix, (title, caption) in FIGURES.items():
        if stem.startswith(prefix + "_"):
            return f"{stem[len(prefix) + 1:]}: {title}", caption
    return stem.replace("_", " "), ""
