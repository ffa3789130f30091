"""The simulate stage's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig, SimulateResult


@task(name="simulate", task_run_name="simulate {out.name}")
def simulate_task(config: SimulateConfig, out: Path) -> SimulateResult:
    """Prefect shell: write the synthetic cohort (not retried: nothing here is flaky)."""
    return simulate_cohort(config, out)
