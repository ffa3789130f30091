"""The labels stage's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.tasks.labels.config import LabelsConfig, LabelsResult
from stethoscope.tasks.labels.user_weeks import build_user_weeks


@task(name="labels")
def labels_task(clean_dir: Path, users_file: Path, out_file: Path,
                    config: LabelsConfig) -> LabelsResult:
    """Prefect shell: the flow adds the shared retry policy with `.with_options(...)`."""
    return build_user_weeks(clean_dir, users_file, out_file, config)
