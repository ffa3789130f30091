"""What the audits cost next to training (issue #16 item 3; target: every audit together
<= 0.5x the train stage), at the nightly settings (the defaults, T = 4096) and at the demo's
(flows/demo.py, T = 1024); prints seconds and ratios, asserts nothing.

    .venv/bin/python bench/bench_audit_cost.py [--settings nightly demo] [--users 60 --weeks 2]
        [--repeats 1] [--mode pretrain_finetune] [--profile-tail]

A cohort is simulated (`stethoscope simulate --users 60 --weeks 2`, cached under --work), then
validate -> labels -> sequences run once per setting. Each repeat then calls, one after the
other in this process, the train stage and every stage that runs after it in the nightly flow
(synthetic, activations, gradients, analyze), exactly as the flow calls them (each task's
function, inside one Prefect flow run so that the train stage's progress artifact is real).
Sequential on purpose: each stage's time is its own, not its share of two cores; the flow runs
the four in parallel, so "audits together" here (their sum) is the pessimistic figure.

The train stage's time is split into its fit loop (first to last epoch, from a callback) and
what comes after the last epoch (saving model.keras, predictions, the history plot).
--profile-tail prints the top of a cProfile of that tail (one repeat).
--mode overrides train.mode (the nightly default is supervised; the demo pre-trains).
--compare-scratch also times the synthetic audit given no record (it then trains the network
from scratch, as before the record existed); that time is printed, not added to the audits.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("STETHOSCOPE_PROGRESS", "0")

AUDITS = ("synthetic", "activations", "gradients", "analyze")


def parameters(setting: str, cohort: Path, runs: Path, mode: str | None):
    from stethoscope.flows.demo import DEMO_SETTINGS
    from stethoscope.flows.parameters import AuditParameters

    settings: dict[str, Any] = {"nightly": {}, "demo": DEMO_SETTINGS}[setting]
    settings = {key: dict(value) for key, value in settings.items()}
    if mode is not None:
        settings["train"] = {**settings.get("train", {}), "mode": mode}
    return AuditParameters.model_validate(
        {**settings, "data_dir": str(cohort), "runs_dir": str(runs), "run_id": setting})


def prepare(params) -> None:
    """validate -> labels -> sequences, once (not timed)."""
    from stethoscope.schemas.layout import CohortPaths
    from stethoscope.tasks.labels.task import labels_task
    from stethoscope.tasks.sequences.task import sequences_task
    from stethoscope.tasks.validate.task import validate_task

    cohort, run = CohortPaths(Path(params.data_dir)), params.run_paths()
    if (run.sequences / "stats.json").exists():
        return
    validate_task.fn(cohort.root, run.root, params.validation)
    labels_task.fn(run.clean, cohort.users, run.user_weeks, params.labels)
    labels = cohort.labels if cohort.labels.exists() else None
    sequences_task.fn(run.clean, cohort.users, run.user_weeks, labels, run.sequences,
                      params.sequences)


def time_stages(params, profile_tail: bool, scratch: bool) -> dict[str, float]:
    """One repeat: train, then each audit, as the nightly flow calls them; seconds per stage."""
    import keras

    from stethoscope.flows import nightly_audit as nightly
    from stethoscope.tasks.train.config import DEAD_UNITS_FILE

    run = params.run_paths()
    for stale in (run.model_dir, run.predictions.parent, run.audits, run.analysis):
        shutil.rmtree(stale, ignore_errors=True)
    fit: dict[str, float] = {}

    class FitClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None) -> None:
            fit.setdefault("begin", time.perf_counter())

        def on_epoch_end(self, epoch, logs=None) -> None:
            fit["last_epoch_end"] = time.perf_counter()

    profiler = cProfile.Profile() if profile_tail else None

    class TailProfiler(keras.callbacks.Callback):
        def on_train_end(self, logs=None) -> None:
            if profiler is not None:
                profiler.enable()

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    trained = nightly.train_task.fn(run.root, params.train, params.model,
                                    callbacks=[FitClock(), TailProfiler()])
    end = time.perf_counter()
    if profiler is not None:
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        print(text.getvalue())
    seconds["train"] = end - start
    seconds["train: before first epoch"] = fit["begin"] - start
    seconds["train: after last epoch"] = end - fit["last_epoch_end"]

    calls = {
        "synthetic": lambda: nightly.synthetic_task.fn(
            *synthetic_arguments(nightly, run, params, trained)),
        "activations": lambda: nightly.activations_task.fn(
            trained.model_path, run.sequences, run.audits / "activations", params.activations,
            run.model_dir / DEAD_UNITS_FILE),
        "gradients": lambda: nightly.gradients_task.fn(
            trained.model_path, run.sequences, run.audits / "gradients", params.gradients,
            list(trained.tasks)),
        "analyze": lambda: nightly.analyze_task.fn(
            trained.predictions_path, run.analysis, params.analyze, run.clean,
            Path(params.data_dir) / "users.parquet"),
    }
    if scratch:  # the same audit without the record: what it cost before (issue #16 item 3)
        calls["synthetic, from scratch (not summed)"] = lambda: nightly.synthetic_task.fn(
            *synthetic_arguments(nightly, run, params, trained)[:-1])
    for name, call in calls.items():
        start = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - start
    return seconds


def synthetic_arguments(nightly, run, params, trained) -> tuple:
    """The synthetic task's arguments as the flow passes them: with training's record of its
    phase on the synthetic targets (None when it had none)."""
    return (run.sequences, run.audits / "synthetic", params.synthetic, params.model,
            trained.pretrain_record)


def report(setting: str, params, runs: list[dict[str, float]]) -> None:
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    train = median["train"]
    audits = sum(median[a] for a in AUDITS)
    print(f"\n== {setting}: T={params.model.num_steps}, train.mode={params.train.mode}, "
          f"median of {len(runs)} repeat(s), seconds (ratio to the train stage)")
    for key, value in median.items():
        print(f"  {key:<28} {value:8.1f}   {value / train:5.2f}x")
    verdict = "met" if audits <= 0.5 * train else "MISSED"
    print(f"  {'audits together (sum)':<28} {audits:8.1f}   {audits / train:5.2f}x "
          f"(target <= 0.5x: {verdict})")
    print(f"  {'audits together (max)':<28} {max(median[a] for a in AUDITS):8.1f}   "
          f"{max(median[a] for a in AUDITS) / train:5.2f}x (lower bound of the parallel flow)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=["nightly", "demo"],
                        default=["nightly", "demo"])
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--weeks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--mode", choices=["supervised", "pretrain_finetune", "synthetic"],
                        default=None, help="override train.mode")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bench-audit-cost",
                        help="cohort and runs (kept between invocations)")
    parser.add_argument("--profile-tail", action="store_true")
    parser.add_argument("--compare-scratch", action="store_true",
                        help="also time the synthetic audit without training's record")
    args = parser.parse_args()

    from stethoscope.flows.environment import make_prefect_home, set_defaults

    set_defaults(args.work)  # as the command line does: its server timeout, PREFECT_HOME
    make_prefect_home()
    from prefect import flow

    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
    from stethoscope.tasks.cohorts.simulate.task import simulate_task

    cohort = args.work / f"cohort-u{args.users}-w{args.weeks}"
    if not (cohort / "users.parquet").exists():
        simulate_task.fn(SimulateConfig(users=args.users, weeks=args.weeks, seed=0), cohort)
    runs_dir = args.work / f"runs-u{args.users}-w{args.weeks}-{args.mode or 'default'}"

    @flow(name="bench-audit-cost")
    def bench() -> None:
        for setting in args.settings:
            params = parameters(setting, cohort, runs_dir, args.mode)
            prepare(params)
            runs = []
            for repeat in range(args.repeats):
                runs.append(time_stages(params, args.profile_tail and repeat == 0,
                                        args.compare_scratch))
                print(f"{setting} repeat {repeat + 1}: "
                      + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()), flush=True)
            report(setting, params, runs)

    bench()


if __name__ == "__main__":
    main()
