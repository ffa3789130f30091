"""`stethoscope demo`: simulate a small cohort, then run the nightly audit on it with settings
sized for a laptop CPU (T = 1024 bins of ~10 minutes, a small network, a few epochs)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from stethoscope.flows.nightly_audit import AuditParameters, RunOutcome, nightly_audit
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from stethoscope.tasks.cohorts.simulate.task import simulate_task

DEMO_STEPS = 1024

DEMO_SETTINGS = {
    "labels": {"num_bins": DEMO_STEPS},
    "sequences": {"num_steps": DEMO_STEPS},
    "model": {"num_steps": DEMO_STEPS, "conv_filters": [16, 16], "units": 16},
    "train": {"mode": "pretrain_finetune", "pretrain_epochs": 2, "epochs": 4, "batch_size": 16},
    "activations": {"max_user_weeks": 32},
    "gradients": {"max_user_weeks": 32},
    "analyze": {"num_bootstrap": 300, "num_permutations": 300},
    # Every train user-week (~280) for 12 epochs, ~40 s: enough for the sanity target to be
    # learned, so that the verdicts on the others are the architecture's (64 user-weeks and 6
    # epochs learned only the resting heart rate).
    "synthetic": {"epochs": 12, "learning_rate": 0.01, "batch_size": 16, "patience": 4,
                  "max_train_user_weeks": 512, "max_val_user_weeks": 64},
}


@flow(name="demo", log_prints=True)
def demo_flow(directory: str = "demo", users: int = 200, weeks: int = 2, seed: int = 1) -> RunOutcome:
    """Simulate (or reuse) a demo cohort and audit it."""
    root = Path(directory)
    cohort = root / f"cohort-u{users}-w{weeks}-s{seed}"
    if not (cohort / "users.parquet").exists():
        simulate_task(SimulateConfig(users=users, weeks=weeks, seed=seed), cohort)
    params = AuditParameters.model_validate(
        {**DEMO_SETTINGS, "data_dir": str(cohort), "runs_dir": str(root / "runs")})
    return nightly_audit(params)


def run_demo(directory: Path, users: int, weeks: int, seed: int) -> RunOutcome:
    return demo_flow(str(directory), users, weeks, seed)
