"""The validate stage's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.tasks.validate.config import ValidateConfig, ValidationResult
from stethoscope.tasks.validate.gate import validate_cohort


@task(name="validate", task_run_name="validate {cohort_dir.name}")
def validate_task(cohort_dir: Path, run_dir: Path, config: ValidateConfig) -> ValidationResult:
    """Prefect shell: validate the cohort into the run directory."""
    return validate_cohort(CohortPaths(cohort_dir), RunPaths(run_dir), config)
