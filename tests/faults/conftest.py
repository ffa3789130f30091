"""A tiny cohort and the front of the pipeline (validate -> labels -> sequences) as a flow with
the real stages and the one retry and cache policy, small enough to run several times a test.

The nightly flow adds training and the audits, which fault tests do not need: what they check
(locks, staging, cache validation, retries) lives in the policy and the stages' writers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.labels.task import labels_task
from stethoscope.tasks.sequences.config import SequencesConfig
from stethoscope.tasks.sequences.task import sequences_task
from stethoscope.tasks.shared.policy import stage_options
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.validate.task import validate_task

STEPS = 128
VALIDATE = ValidateConfig(great_expectations=False, now=datetime(2030, 1, 1, tzinfo=UTC))


def options(outputs: tuple[str, ...]) -> dict[str, Any]:
    """The one policy, without the backoff delays (5 s, 10 s) a test need not wait for."""
    return {**stage_options(600, outputs=outputs), "retry_delay_seconds": 0}


@flow(name="front-stages")
def front_stages(cohort_dir: Path, run_dir: Path) -> dict[str, Any]:
    """validate -> labels -> sequences with the flow's policy; their records by stage."""
    cohort, run = CohortPaths(cohort_dir), RunPaths(run_dir)
    validation = validate_task.with_options(**options(("run_dir",)))(cohort.root, run.root, VALIDATE)
    labels = labels_task.with_options(**options(("out_file",)))(
        run.clean, cohort.users, run.user_weeks, LabelsConfig(num_bins=STEPS))
    sequences = sequences_task.with_options(**options(("out_dir",)))(
        run.clean, cohort.users, run.user_weeks, cohort.labels, run.sequences,
        SequencesConfig(num_steps=STEPS, min_coverage=0.3))
    return {"validate": validation, "labels": labels, "sequences": sequences}


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults-cohort") / "c"
    simulate_cohort(SimulateConfig(users=10, weeks=1, seed=5), root)
    return root


def files_of(run: Path, *parts: str) -> dict[str, bytes]:
    """Every file under `run/<parts>` by relative path, with its bytes (to compare runs)."""
    root = run.joinpath(*parts)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
