"""How stethoscope scales (issue #16 item 5): the data stages on one process vs a local Dask
cluster, the whole nightly audit at growing cohort sizes, and a projection; prints seconds,
ratios and shares, asserts nothing.

    .venv/bin/python bench/bench_scale.py [--part data audit] [--work /tmp/bench-scale]
        [--data-users 1000] [--data-weeks 4] [--users-per-file 50] [--workers 1 2]
        [--repeats 3] [--second-pass] [--data-label NAME]
        [--audit-users 250 500 1000] [--audit-weeks 1] [--fit-min 250] [--project 100000]
        [--print-only]

**data** — validate, labels, sequences (each stage's task function, default configs: T = 4096,
great-expectations on) on a cohort from bench/_cohort.py's fast writer (`--data-users` x
`--data-weeks` x 7 days of minutes, not the realistic simulator: volume, not physiology), on
the default single-process path and on a local Dask cluster of each `--workers` count, built
with the cluster arguments of `--executor dask --workers N` (flows/execution.py) and used as the
flow uses it (`on_cluster`: the stages' partitions go to the workers). Each repeat starts a
fresh cluster (its start is timed apart); executors interleave within a repeat, so load from
other jobs hits all alike; medians over `--repeats`. Peak RSS is sampled every 50 ms on a
thread over this process and its children (the Dask workers), per process, per stage: a peak
shorter than that can be missed. CPU seconds are summed over the same processes.
`--second-pass` runs the stages twice on each cluster (the 2nd pass on workers that have
imported and loaded everything once); `--users-per-file` sets the cohort's file size: a file
of more than 2 x chunk_rows (2 M) rows is streamed by the flow's process and its chunks are
shipped to the workers by value, a smaller one is a partition of its own, read by a worker.

**audit** — the whole nightly audit, at each `--audit-users` x `--audit-weeks` (cohorts from
the realistic simulator, `stethoscope simulate --seed 0`, so labels exist), with the settings
of the `nightly-model-audit` deployment read from prefect.yaml (the defaults, with
`train.mode: pretrain_finetune`). Every stage's task function is called in flow order, one
after the other, inside one Prefect flow run (as bench/bench_audit_cost.py does): each stage's
time is its own, where the flow runs the four after training in parallel. One repeat per size.
Each stage's growth is a least-squares fit of log seconds on log users over the sizes run
(exponent b; x 2^b per doubling), and the projection to `--project` users is that fit
extrapolated: single process, same settings, a projection, not a measurement.

Results accumulate in `<work>/results.json` (a part or size run again replaces its entry);
the tables are printed from it, so `--print-only` reprints them without running anything.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("STETHOSCOPE_PROGRESS", "0")

DATA_STAGES = ("validate", "labels", "sequences")
AUDIT_STAGES = (*DATA_STAGES, "train", "synthetic", "activations", "gradients", "analyze",
                "gate", "report")
# what bounds each stage's work at the nightly settings (from the stages' configs)
BOUNDS = {
    "train": "epochs <= 5 + 20 (early stopping); every train user-week, no cap",
    "synthetic": "reference net on <= 128 train user-weeks, <= 8 epochs; scores every val "
                 "user-week (training's record)",
    "activations": "<= 256 val user-weeks (max_user_weeks)",
    "gradients": "<= 256 val user-weeks (max_user_weeks)",
    "analyze": "every val + test user-week; 1000 user-level bootstrap resamples",
}
# stages whose work stops growing once the validation split holds this many user-weeks
VAL_CAPS = {"activations": 256, "gradients": 256}
# the records the flow hands to the gate and the report, in its order
REPORTED = (*DATA_STAGES, "train", "activations", "gradients", "synthetic", "analyze")
MIB = 2**20


# ---------------------------------------------------------------- processes: RSS and CPU


def _role(process: psutil.Process, me: int) -> str:
    if process.pid == me:
        return "driver"
    try:
        line = " ".join(process.cmdline())
    except psutil.Error:
        return "other"
    if "resource_tracker" in line:
        return "other"
    if "spawn_main" in line or "forkserver" in line:
        return "worker"  # a Dask worker process (LocalCluster spawns them)
    return "other"  # e.g. Prefect's embedded server


class ProcessTree:
    """Peak RSS per process of this process and its descendants, sampled on a thread while
    the block runs, and the CPU seconds they spent in it."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.me = os.getpid()
        self.peaks: dict[int, int] = {}
        self.roles: dict[int, str] = {}
        self.cpu_start: dict[int, float] = {}
        self.cpu_end: dict[int, float] = {}
        self._stop = threading.Event()

    def _processes(self) -> list[psutil.Process]:
        me = psutil.Process(self.me)
        return [me, *me.children(recursive=True)]

    def _sample(self, cpu: dict[int, float] | None = None) -> None:
        for process in self._processes():
            try:
                rss = process.memory_info().rss
                if cpu is not None:
                    times = process.cpu_times()
                    cpu[process.pid] = times.user + times.system
            except psutil.Error:
                continue
            self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            self.roles.setdefault(process.pid, _role(process, self.me))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> ProcessTree:
        self._sample(self.cpu_start)
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(self.cpu_end)

    def record(self) -> dict[str, Any]:
        """Peak RSS (MiB) of the driver and of each worker; CPU seconds of driver and workers."""
        def cpu(role: str) -> float:
            return sum(self.cpu_end[pid] - self.cpu_start.get(pid, 0.0)
                       for pid in self.cpu_end if self.roles.get(pid) == role)

        workers = sorted(self.peaks[pid] / MIB for pid in self.peaks
                         if self.roles[pid] == "worker")
        return {"driver_peak_mib": round(self.peaks[self.me] / MIB, 1),
                "worker_peaks_mib": [round(w, 1) for w in workers],
                "cpu_driver_s": round(cpu("driver"), 2), "cpu_workers_s": round(cpu("worker"), 2)}


def timed(call: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run `call`; its result and {seconds, peaks, CPU seconds}."""
    with ProcessTree() as tree:
        start = time.perf_counter()
        result = call()
        seconds = time.perf_counter() - start
    return result, {"seconds": round(seconds, 3), **tree.record()}


# ---------------------------------------------------------------- part 1: the data stages


def data_stage_calls(cohort: Path, run: Path) -> dict[str, Callable[[], Any]]:
    """The three data stages as the flow calls them (flows/data_stages.py), default configs."""
    from stethoscope.schemas.layout import CohortPaths, RunPaths
    from stethoscope.tasks.labels.config import LabelsConfig
    from stethoscope.tasks.labels.task import labels_task
    from stethoscope.tasks.sequences.config import SequencesConfig
    from stethoscope.tasks.sequences.task import sequences_task
    from stethoscope.tasks.validate.config import ValidateConfig
    from stethoscope.tasks.validate.task import validate_task

    paths, out = CohortPaths(cohort), RunPaths(run)
    labels = paths.labels if paths.labels.exists() else None
    return {
        "validate": lambda: validate_task.fn(paths.root, out.root, ValidateConfig()),
        "labels": lambda: labels_task.fn(out.clean, paths.users, out.user_weeks, LabelsConfig()),
        "sequences": lambda: sequences_task.fn(out.clean, paths.users, out.user_weeks, labels,
                                               out.sequences, SequencesConfig()),
    }


@contextmanager
def executor(name: str, workers: int) -> Iterator[float]:
    """The stages' partitions on threads of this process ("local"), or on a fresh local Dask
    cluster of `workers` processes, as `--executor dask --workers N` builds it; yields the
    seconds the cluster took to start (0 for local)."""
    if name == "local":
        yield 0.0
        return
    import distributed

    from stethoscope.flows.execution import ExecutionConfig, task_runner
    from stethoscope.tasks.shared.executor import on_cluster

    runner: Any = task_runner(ExecutionConfig(executor="dask", workers=workers))
    logging.getLogger("distributed").setLevel(logging.WARNING)  # scheduler and nannies: here
    start = time.perf_counter()
    with distributed.LocalCluster(**runner.cluster_kwargs) as cluster:
        with distributed.Client(cluster) as client:
            client.wait_for_workers(workers)
        started = time.perf_counter() - start
        with on_cluster(cluster.scheduler_address):
            yield started


def warm_up(work: Path) -> None:
    """Pay a process's one-off costs (great-expectations' import, numba loading its kernels:
    3-5 s) on 5 users, so that neither the first executor nor the first size carries them."""
    from _cohort import write_bench_cohort

    cohort, run = work / "fast-warm-up", work / "runs-warm-up"
    if not (cohort / "users.parquet").exists():
        write_bench_cohort(cohort, num_users=5, minutes=7 * 1440)
    start = time.perf_counter()
    for call in data_stage_calls(cohort, run).values():
        call()
    shutil.rmtree(run)
    print(f"warm-up (imports, numba kernels), 5 users: {time.perf_counter() - start:.1f} s")


def run_data_part(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from _cohort import write_bench_cohort

    cohort = args.work / f"fast-u{args.data_users}-w{args.data_weeks}-f{args.users_per_file}"
    if not (cohort / "users.parquet").exists():
        start = time.perf_counter()
        rows = write_bench_cohort(cohort, num_users=args.data_users,
                                  minutes=args.data_weeks * 7 * 1440,
                                  users_per_file=args.users_per_file)
        print(f"wrote {rows:,} rows ({args.data_users} users) in {time.perf_counter() - start:.0f} s")
    warm_up(args.work)
    executors = [("local", 1), *((f"dask-{n}", n) for n in args.workers)]
    part: dict[str, Any] = {"users": args.data_users, "weeks": args.data_weeks,
                            "cohort": f"bench/_cohort.py write_bench_cohort (fast writer), "
                                      f"{args.users_per_file} users per file",
                            "repeats": args.repeats, "runs": {n: [] for n, _ in executors}}
    for repeat in range(args.repeats):
        for name, workers in executors:
            run = args.work / "runs-data" / name
            passes = 2 if args.second_pass and name != "local" else 1
            with executor(name, workers) as cluster_start:
                for attempt in range(passes):  # the 2nd on the same, warm workers
                    shutil.rmtree(run, ignore_errors=True)
                    key = name if attempt == 0 else f"{name} 2nd"
                    record: dict[str, Any] = {"cluster_start_s": round(cluster_start, 2)}
                    for stage, call in data_stage_calls(cohort, run).items():
                        result, record[stage] = timed(call)
                        if stage == "validate":
                            part["rows"] = result.rows_in
                    part["runs"].setdefault(key, []).append(record)
                    print(f"repeat {repeat + 1} {key:<11} " + ", ".join(
                        f"{s} {record[s]['seconds']:.1f} s" for s in DATA_STAGES)
                        + (f" (cluster start {cluster_start:.1f} s)" if attempt == 0 and
                           cluster_start else ""), flush=True)
    results["data" + (f" ({args.data_label})" if args.data_label else "")] = part
    save(args.work, results)


# ---------------------------------------------------------------- part 2: the whole audit


def nightly_settings() -> dict[str, Any]:
    """The stage settings of the nightly-model-audit deployment (prefect.yaml), without its
    paths."""
    import yaml

    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    params = next(d for d in deployments if d["name"] == "nightly-model-audit")["parameters"]["params"]
    return {key: value for key, value in params.items() if key not in ("data_dir", "runs_dir")}


def audit_once(cohort: Path, runs_dir: Path) -> dict[str, Any]:
    """Every stage of the nightly audit, in flow order, one after the other; a record per stage."""
    from stethoscope.flows import nightly_audit as nightly
    from stethoscope.flows.parameters import AuditParameters
    from stethoscope.tasks.train.config import DEAD_UNITS_FILE

    params = AuditParameters.model_validate({**nightly_settings(), "data_dir": str(cohort),
                                             "runs_dir": str(runs_dir), "run_id": "scale"})
    run = params.run_paths()
    started_at = datetime.now(UTC)
    records: dict[str, Any] = {}
    done: dict[str, Any] = {}
    calls = data_stage_calls(cohort, run.root)
    calls |= {
        "train": lambda: nightly.train_task.fn(run.root, params.train, params.model),
        "synthetic": lambda: nightly.synthetic_task.fn(
            run.sequences, run.audits / "synthetic", params.synthetic, params.model,
            done["train"].pretrain_record),
        "activations": lambda: nightly.activations_task.fn(
            done["train"].model_path, run.sequences, run.audits / "activations",
            params.activations, run.model_dir / DEAD_UNITS_FILE),
        "gradients": lambda: nightly.gradients_task.fn(
            done["train"].model_path, run.sequences, run.audits / "gradients", params.gradients,
            list(done["train"].tasks)),
        "analyze": lambda: nightly.analyze_task.fn(
            done["train"].predictions_path, run.analysis, params.analyze, run.clean,
            cohort / "users.parquet"),
        "gate": lambda: nightly.gate_task.fn(
            run.root, [done[s] for s in REPORTED], params.gate, started_at, None),
        "report": lambda: nightly.report_task.fn(
            run.root, params.model_dump(mode="json"), started_at,
            [*(done[s] for s in REPORTED), done["gate"]]),
    }
    for stage in AUDIT_STAGES:
        done[stage], records[stage] = timed(calls[stage])
        print(f"  {stage:<12} {records[stage]['seconds']:8.1f} s", flush=True)
    stored = done["sequences"]
    return {"stages": records, "rows": done["validate"].rows_in,
            "user_weeks": dict(stored.counts), "epochs": done["train"].epochs_completed,
            "status": done["report"].status}


def run_audit_part(args: argparse.Namespace, results: dict[str, Any]) -> None:
    from prefect import flow

    from stethoscope.flows.environment import make_prefect_home, set_defaults
    from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig

    set_defaults(args.work)  # as the command line does: its server timeout, PREFECT_HOME
    make_prefect_home()
    part = results.setdefault("audit", {"sizes": {}})
    part.update(weeks=args.audit_weeks, settings=nightly_settings(), repeats=1,
                cohort="stethoscope simulate --seed 0 (realistic simulator)")

    @flow(name="bench-scale")
    def bench() -> None:
        warm_up(args.work)
        for users in args.audit_users:
            cohort = args.work / f"sim-u{users}-w{args.audit_weeks}"
            if not (cohort / "users.parquet").exists():
                simulate_cohort(SimulateConfig(users=users, weeks=args.audit_weeks, seed=0), cohort)
            runs_dir = args.work / f"runs-audit-u{users}"
            shutil.rmtree(runs_dir, ignore_errors=True)  # no reference run for the gate
            print(f"whole audit, {users} users x {args.audit_weeks} week(s):", flush=True)
            start = time.perf_counter()
            record = audit_once(cohort, runs_dir)
            record["total_s"] = round(time.perf_counter() - start, 1)
            part["sizes"][str(users)] = record
            save(args.work, results)

    bench()


# ---------------------------------------------------------------- results and tables


def save(work: Path, results: dict[str, Any]) -> None:
    path = work / "results.json"
    path.write_text(json.dumps(results, indent=1, default=str))


def fit(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least squares of log seconds on log size: (exponent b, log intercept a)."""
    xs, ys = [math.log(s) for s in sizes], [math.log(max(t, 1e-3)) for t in seconds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx


def duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def print_data(part: dict[str, Any]) -> None:
    runs = part["runs"]
    print(f"\n== data stages, {part['users']:,} users x {part['weeks']} weeks "
          f"({part.get('rows', 0):,} rows, {part['cohort']}), median of {part['repeats']} "
          f"repeat(s); x = seconds / local")
    print(f"  {'stage':<10}{'executor':<13}{'median s':>9}{'x local':>8}{'driver MiB':>11}"
          f"{'worker MiB (each)':>22}{'cpu driver s':>13}{'cpu workers s':>14}")
    for stage in (*DATA_STAGES, "all three"):
        local = None
        for name, records in runs.items():
            if stage == "all three":
                seconds = statistics.median(sum(r[s]["seconds"] for s in DATA_STAGES)
                                            for r in records)
                print(f"  {stage:<10}{name:<13}{seconds:>9.1f}{seconds / (local or seconds):>8.2f}")
                local = local or seconds
                continue
            rows = [r[stage] for r in records]
            seconds = statistics.median(r["seconds"] for r in rows)
            local = local or seconds
            driver = statistics.median(r["driver_peak_mib"] for r in rows)
            workers = [statistics.median(w) for w in zip(*(r["worker_peaks_mib"] for r in rows),
                                                        strict=False)]
            cpu_d = statistics.median(r["cpu_driver_s"] for r in rows)
            cpu_w = statistics.median(r["cpu_workers_s"] for r in rows)
            print(f"  {stage:<10}{name:<13}{seconds:>9.1f}{seconds / local:>8.2f}{driver:>11.0f}"
                  f"{', '.join(f'{w:.0f}' for w in workers) or '-':>22}{cpu_d:>13.1f}"
                  f"{cpu_w if workers else 0:>14.1f}")
    for name, records in runs.items():
        if name.startswith("dask") and not name.endswith("2nd"):
            print(f"  cluster start, {name}: "
                  + ", ".join(f"{r['cluster_start_s']:.1f}" for r in records) + " s")
    print(f"  (runs: { {n: [[r[s]['seconds'] for s in DATA_STAGES] for r in rs] for n, rs in runs.items()} })")


def print_audit(part: dict[str, Any], project: int, fit_min: int) -> None:
    """The per-stage table: seconds and share per size, the fitted growth and the projection."""
    sizes = sorted(int(s) for s in part["sizes"])
    records = [part["sizes"][str(s)] for s in sizes]
    fitted = [s for s in sizes if s >= fit_min]
    fitted = fitted if len(fitted) >= 2 else sizes
    print(f"\n== whole nightly audit, users x {part['weeks']} week, prefect.yaml nightly settings "
          f"{json.dumps(part['settings'])}; stages one after the other, 1 repeat per size")
    for size, record in zip(sizes, records, strict=True):
        train = record["stages"]["train"]["seconds"]
        print(f"  {size:>6} users: {record['rows']:,} rows, user-weeks {record['user_weeks']}, "
              f"{record['epochs']} epochs trained ({train / record['epochs']:.1f} s each), "
              f"status {record['status']}, total {record['total_s']:.0f} s")
    head = "".join(f"{f'{s} s':>9}{'share':>7}" for s in sizes)
    print(f"  {'stage':<12}{head}{'b':>6}{'x/2x':>6}{f'{project:,} (proj.)':>16}"
          f"{'peak MiB':>10}  bounded by")
    val_per_user = records[-1]["user_weeks"]["val"] / sizes[-1] / part["weeks"]
    caps = {stage: round(cap / val_per_user) for stage, cap in VAL_CAPS.items()}
    projected: dict[str, float] = {}
    totals = [sum(r["stages"][s]["seconds"] for s in AUDIT_STAGES) for r in records]
    for stage in (*AUDIT_STAGES, "total"):
        seconds = totals if stage == "total" else [r["stages"][stage]["seconds"] for r in records]
        cells = "".join(f"{t:>9.1f}{t / total:>7.1%}" for t, total in zip(seconds, totals,
                                                                           strict=True))
        growth = ""
        if len(sizes) >= 2:
            b, a = fit(fitted, [seconds[sizes.index(s)] for s in fitted])
            # a capped stage grows only until the validation split reaches its cap
            # and one that did not grow (b < 0: fixed work and noise) is projected flat
            at = min(project, caps.get(stage, project))
            flat = max(fitted) if b < 0 else at
            proj = (math.exp(a) * at ** b * (flat / at) ** b if stage != "total"
                    else sum(projected.values()))
            projected[stage] = proj
            growth = f"{b:>6.2f}{2 ** b:>6.2f}{duration(proj):>16}"
        peak = "" if stage == "total" else \
            f"{max(r['stages'][stage]['driver_peak_mib'] for r in records):>10.0f}"
        print(f"  {stage:<12}{cells}{growth}{peak}  {BOUNDS.get(stage, '')}")
    if len(sizes) >= 2:
        print(f"  b: exponent of a least-squares fit of log seconds on log users over "
              f"{', '.join(map(str, fitted))} users (x/2x = 2^b, per doubling). PROJECTION to "
              f"{project:,} users, not measured: each stage's fit extrapolated, flat where b < 0 "
              f"(total = their sum); single process, the same settings, the same simulated cohort mix; "
              f"activations and gradients stop growing at "
              f"{caps['activations']:,} users x {part['weeks']} week (256 val user-weeks at "
              f"{val_per_user:.3f} per user-week of data).")


def print_dask_projection(data: dict[str, Any], audit: dict[str, Any] | None,
                          project: int) -> None:
    """What the Dask runs imply for N workers if the data stages are linear in rows."""
    runs = data["runs"]
    med = {n: statistics.median(sum(r[s]["seconds"] for s in DATA_STAGES) for r in rs)
           for n, rs in runs.items()}
    if "dask-1" not in med or "dask-2" not in med:
        return
    # what the flow's process does itself on Dask (reads, ships, reduces): no worker shortens it
    floor = statistics.median(sum(r[s]["cpu_driver_s"] for s in DATA_STAGES)
                              for r in runs["dask-1"])
    weeks = audit["weeks"] if audit else 1
    scale = project * weeks / (data["users"] * data["weeks"])
    print(f"\n== PROJECTION of the data stages to {project:,} users x {weeks} week "
          f"({scale:.0f}x the rows measured), assuming time linear in rows; not measured")
    print(f"  measured: local {med['local']:.1f} s, dask-1 {med['dask-1']:.1f} s, dask-2 "
          f"{med['dask-2']:.1f} s (1 -> 2 workers: {med['dask-1'] / med['dask-2']:.2f}x faster "
          f"on this machine's 2 shared cores); the flow's own CPU on dask-1 {floor:.1f} s")
    print(f"  local (one process, its threads): {duration(med['local'] * scale)}; dask with N "
          f"workers on cores of their own, at best dask-1 / N but never under the flow's own "
          f"CPU ({duration(floor * scale)}): " + ", ".join(
              f"N={n} {duration(max(med['dask-1'] / n, floor) * scale)}" for n in (2, 8, 32)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", nargs="+", choices=["data", "audit"], default=["data", "audit"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-scale"),
                        help="cohorts, runs and results.json (kept between invocations)")
    parser.add_argument("--data-users", type=int, default=1000)
    parser.add_argument("--data-weeks", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="of the data part")
    parser.add_argument("--second-pass", action="store_true",
                        help="run the data stages twice on each cluster: the 2nd on warm workers")
    parser.add_argument("--data-label", default="",
                        help="keep these data results apart from the main ones, under this name")
    parser.add_argument("--users-per-file", type=int, default=50,
                        help="of the data part's cohort (a file above 2 x chunk_rows = 2 M rows "
                        "is streamed by the flow's process, its chunks shipped to the workers)")
    parser.add_argument("--audit-users", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--audit-weeks", type=int, default=1)
    parser.add_argument("--project", type=int, default=100_000, help="users to project to")
    parser.add_argument("--fit-min", type=int, default=250,
                        help="fit the growth over sizes of at least this many users")
    parser.add_argument("--print-only", action="store_true", help="the tables of results.json")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not args.print_only:
        results.setdefault("machine", {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()})
        started = time.perf_counter()
        if "data" in args.part:
            run_data_part(args, results)
        if "audit" in args.part:
            run_audit_part(args, results)
        print(f"\nthis invocation took {(time.perf_counter() - started) / 60:.1f} min")
    for key in sorted(k for k in results if k.startswith("data")):
        print(f"\n[{key}]", end="")
        print_data(results[key])
    if results.get("audit", {}).get("sizes"):
        print_audit(results["audit"], args.project, args.fit_min)
    if "data" in results:
        print_dask_projection(results["data"], results.get("audit"), args.project)
    print(f"\nraw results: {path}")


if __name__ == "__main__":
    main()
