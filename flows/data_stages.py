"""The data stages every flow that reads a cohort runs first: validate -> labels -> sequences.

Wiring only, as in the flows: each stage is its task of tasks/ with the one retry and cache
policy, and the three records it returns go to the report. The nightly audit, audit-model
and compare-architectures all call this; they differ in where the run is and in the configs
(audit-model's T is its model's).
"""

from __future__ import annotations

from dataclasses import dataclass

from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.outcome import Reportable
from stethoscope.tasks.labels.config import LabelsConfig, LabelsResult
from stethoscope.tasks.labels.task import labels_task
from stethoscope.tasks.sequences.config import SequencesConfig, SequencesResult
from stethoscope.tasks.sequences.task import sequences_task
from stethoscope.tasks.shared.policy import stage_options
from stethoscope.tasks.validate.config import ValidateConfig, ValidationResult
from stethoscope.tasks.validate.task import validate_task

MINUTE = 60


@dataclass(frozen=True)
class DataResults:
    validation: ValidationResult
    user_weeks: LabelsResult
    sequences: SequencesResult

    def records(self) -> list[Reportable]:
        """The three records, in stage order, for the report."""
        return [self.validation, self.user_weeks, self.sequences]


def run_data_stages(cohort: CohortPaths, run: RunPaths, validation: ValidateConfig,
                    labels: LabelsConfig, sequences: SequencesConfig) -> DataResults:
    """Validate `cohort` into `run`, then its user-week table and its sequence store."""
    labels_file = cohort.labels if cohort.labels.exists() else None
    validated = validate_task.with_options(**stage_options(30 * MINUTE, outputs=("run_dir",)))(
        cohort.root, run.root, validation)
    user_weeks = labels_task.with_options(**stage_options(30 * MINUTE, outputs=("out_file",)))(
        run.clean, cohort.users, run.user_weeks, labels)
    stored = sequences_task.with_options(**stage_options(60 * MINUTE, outputs=("out_dir",)))(
        run.clean, cohort.users, run.user_weeks, labels_file, run.sequences, sequences)
    return DataResults(validated, user_weeks, stored)
