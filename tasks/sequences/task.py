"""The sequences stage's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.tasks.sequences.build import build_sequences
from stethoscope.tasks.sequences.config import SequencesConfig, SequencesResult


@task(name="sequences")
def sequences_task(clean_dir: Path, users_file: Path, user_weeks_file: Path,
                   labels_file: Path | None, out_dir: Path,
                   config: SequencesConfig) -> SequencesResult:
    """Prefect shell: the flow adds the shared retry policy with `.with_options(...)`."""
    return build_sequences(clean_dir, users_file, user_weeks_file, labels_file, out_dir, config)
