"""A tiny cohort and the front of the pipeline (validate -> labels -> sequences) as a flow with
the real stages and the one retry and cache policy, small enough to run several times a test;
`FailFirst`, the injected fault every test uses.

Most fault tests need only the front: what they check (locks, staging, cache validation,
retries) lives in the policy and the stages' writers. test_stages.py runs the whole nightly
flow for the stages after them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
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
    return without_backoff(stage_options)(600, outputs=outputs)


def without_backoff(policy: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """`stage_options` with the same retries and condition but no delay between attempts."""
    def options_now(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**policy(*args, **kwargs), "retry_delay_seconds": 0}
    return options_now


class FailFirst:
    """Wraps `target`: after `skip` calls that pass through, the next `times` calls raise
    OSError(`code`), later ones pass through again. Every call records the Prefect task run and
    attempt it came from (`attempts`), so a test can tell that Prefect retried the stage."""

    def __init__(self, target: Callable[..., Any], code: int = errno.EIO, times: int = 1,
                 skip: int = 0) -> None:
        self.target, self.code, self.times, self.skip, self.calls = target, code, times, skip, 0
        self.attempts: list[tuple[str | None, int | None, bool]] = []  # (task run, attempt, raised)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from prefect.context import TaskRunContext

        self.calls += 1
        raises = self.skip < self.calls <= self.skip + self.times
        context = TaskRunContext.get()
        self.attempts.append((str(context.task_run.id), context.task_run.run_count, raises)
                             if context else (None, None, raises))
        if raises:
            raise OSError(self.code, f"{errno.errorcode[self.code]} (injected)", "/injected/path")
        return self.target(*args, **kwargs)

    @property
    def retried(self) -> bool:
        """It raised in an attempt of a task run, and a later attempt of the same task run
        called it again and was let through."""
        failed = [(run, n) for run, n, raised in self.attempts if raised and run is not None]
        passed = [(run, n) for run, n, raised in self.attempts if not raised and run is not None]
        return any(run == failed_run and n > failed_n  # type: ignore[operator]
                   for failed_run, failed_n in failed for run, n in passed)


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
