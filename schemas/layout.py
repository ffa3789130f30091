"""Where everything lives: one object for a cohort directory, one for a run directory.

No other module builds a path by hand; stages ask these objects (docs/architecture.md §4 and §5.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CohortPaths:
    """A cohort directory (docs/architecture.md §4)."""

    root: Path

    @property
    def sensor_logs(self) -> Path:
        return self.root / "sensor_logs"

    @property
    def users(self) -> Path:
        return self.root / "users.parquet"

    @property
    def labels(self) -> Path:
        return self.root / "labels.parquet"


@dataclass(frozen=True)
class RunPaths:
    """A run directory `<runs>/<run_id>/` (docs/architecture.md §5.1). Never shared by two runs."""

    root: Path

    @property
    def run_id(self) -> str:
        return self.root.name

    # validate
    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def clean(self) -> Path:
        """Clean sensor logs: Parquet files, each holding *all* rows of its users, sorted by
        (user_id, timestamp), in the canonical SENSOR_LOGS schema."""
        return self.validation / "clean"

    @property
    def quarantine(self) -> Path:
        return self.validation / "quarantine"

    @property
    def rejected_files(self) -> Path:
        """Input files set aside whole (unreadable, or breaking the schema), copied as they were."""
        return self.validation / "rejected_files"

    @property
    def validation_report(self) -> Path:
        return self.validation / "report.json"

    @property
    def data_docs(self) -> Path:
        return self.validation / "data_docs"

    # labels and sequences
    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def user_weeks(self) -> Path:
        return self.labels / "user_weeks.parquet"

    @property
    def sequences(self) -> Path:
        return self.root / "sequences"

    # train
    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def model_file(self) -> Path:
        return self.model_dir / "model.keras"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions" / "predictions.parquet"

    # audits and report
    @property
    def audits(self) -> Path:
        return self.root / "audits"

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    @property
    def scored_rows(self) -> Path:
        """The analyze stage's evaluated rows (user_id, week_start, task, y_true, y_score, and
        the metadata baseline's score): what a later run's gate compares its scores with."""
        return self.analysis / "baseline_scores.parquet"

    @property
    def gate(self) -> Path:
        """The gate stage: this run's data profile and its comparison with the reference."""
        return self.root / "gate"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def report_gallery(self) -> Path:
        """Every figure report.html does not embed (all week plots), self-contained like it."""
        return self.root / "report_gallery.html"
