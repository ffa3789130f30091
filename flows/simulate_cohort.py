"""The `simulate-cohort` flow: a synthetic cohort from the Prefect UI (deployment
`simulate-cohort`), to try the audits without real data. Wiring only: tasks/cohorts/simulate/cohort.py owns
the cohort and its planted effects."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from stethoscope.flows.roots import FormPath
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from stethoscope.tasks.cohorts.simulate.task import simulate_task


class SimulateCohortParameters(BaseModel):
    """Where the cohort goes and how it is drawn."""

    model_config = ConfigDict(extra="forbid")

    out_dir: FormPath = Field("cohorts/simulated", description="cohort directory to create; "
                              "must not exist yet (or be empty), the simulator never overwrites")
    cohort: SimulateConfig = Field(default_factory=SimulateConfig,
                                   description="users, weeks, seed and the planted effects")


class SimulatedCohort(BaseModel):
    """What the flow returns: where the cohort is, and its size."""

    data_dir: str
    num_users: int
    num_rows: int


@flow(name="simulate-cohort", log_prints=True, validate_parameters=True)
def simulate_cohort_flow(params: SimulateCohortParameters) -> SimulatedCohort:
    """Write a synthetic cohort that `audit-on-demand` can audit (its `data_dir`)."""
    result = simulate_task(params.cohort, Path(params.out_dir))
    print(f"cohort {params.out_dir}: {result.num_users} users, {result.num_rows:,} rows")
    return SimulatedCohort(data_dir=params.out_dir, num_users=result.num_users,
                           num_rows=result.num_rows)
