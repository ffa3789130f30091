"""Benchmark: the user-week table and the sequence store, each as a ratio to a bare pyarrow read.

    .venv/bin/python bench/bench_labels.py [--users 1000] [--runs 5] [--keep DIR]

Writes >= 10 M rows of clean sensor logs (1000 users x ~7.7 days of minutes, 9% of minutes
absent, 3% of heart rates null, activity bouts; five time zones, two with a DST change in the
week), then runs, interleaved so that load from other processes hits all alike:
`pyarrow.parquet.read_table(files)` (R), `build_user_weeks`, `build_sequences`, each `--runs`
times, and prints medians and median / R. Targets: user-week table <= 1.5 R, sequences <= 1.5 R.
CPU seconds (all threads of the process) are printed too: on a shared machine they move less
than wall time. The first run of each stage in the process (numba compiling its kernels, or
loading them from the on-disk cache) is printed apart and not in the medians.

`read (R, dict)` is the stricter baseline: the same read with user_id and device as Arrow
dictionaries, as the stages read them (R materialises 10 M user-id strings, which costs most of
its time); both ratios are printed.

Peak memory of each stage is measured once more in a fresh process: its peak RSS (VmHWM;
includes the interpreter, pandas, pyarrow and prefect imports, ~0.3 GB), the peak of Python
and numpy allocations (`tracemalloc`), and the peak of Arrow's memory pool (`max_memory()`).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stethoscope.schemas.tables import SENSOR_LOGS, USERS  # noqa: E402
from stethoscope.tasks.labels.config import LabelsConfig  # noqa: E402
from stethoscope.tasks.labels.user_weeks import build_user_weeks  # noqa: E402
from stethoscope.tasks.sequences.build import build_sequences  # noqa: E402
from stethoscope.tasks.sequences.config import SequencesConfig  # noqa: E402

ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Honolulu", "UTC")
START = np.datetime64("2024-03-25T00:00", "us").astype(np.int64)  # Berlin: DST on the 31st
TARGET = 1.5


def write_cohort(root: Path, users: int, minutes: int, users_per_file: int = 100) -> int:
    """Clean files (sorted, whole users per file) and users.parquet; returns the row count."""
    clean = root / "clean"
    clean.mkdir(parents=True)
    rng = np.random.default_rng(0)
    num_rows = 0
    for first in range(0, users, users_per_file):
        ids = [f"u{i:06d}" for i in range(first, min(first + users_per_file, users))]
        minute = np.tile(np.arange(minutes), len(ids))
        user = np.repeat(np.arange(len(ids)), minutes)
        keep = rng.random(len(minute)) > 0.09
        minute, user = minute[keep], user[keep]
        n = len(minute)
        active = (rng.random(n) < 0.04) | ((minute // 30) % 47 == 5)
        steps = np.where(active, rng.integers(60, 130, n), rng.integers(0, 3, n) * (rng.random(n) < 0.1))
        hr = 62 + 30 * active + rng.normal(0, 4, n)
        table = pa.table({
            "user_id": pa.array(np.asarray(ids, dtype=object)[user], pa.string()),
            "timestamp": pa.array(START + minute * 60_000_000, pa.timestamp("us", tz="UTC")),
            "heart_rate": pa.array(hr.round(1), mask=rng.random(n) < 0.03),
            "steps": pa.array(steps.astype(np.int64)),
            "device": pa.array(np.where(user % 9 == 0, "apple_watch_1st_gen",
                                        "fitbit_charge_4").astype(object), pa.string()),
        }, schema=SENSOR_LOGS)
        pq.write_table(table, clean / f"part-{first // users_per_file:05d}.parquet")
        num_rows += n
    pq.write_table(pa.table({
        "user_id": [f"u{i:06d}" for i in range(users)],
        "age": rng.uniform(20, 80, users).round(), "sex": rng.choice(["F", "M", "U"], users),
        "timezone": [ZONES[i % len(ZONES)] for i in range(users)]}, schema=USERS),
        root / "users.parquet")
    return num_rows


def stages(root: Path) -> dict:
    clean, users = root / "clean", root / "users.parquet"
    files = sorted(clean.glob("*.parquet"))
    return {
        "read (R)": lambda: pq.read_table(files),
        "read (R, dict)": lambda: pq.read_table(files, read_dictionary=["user_id", "device"]),
        "user-week table": lambda: build_user_weeks(clean, users, root / "uw.parquet",
                                                    LabelsConfig()),
        "sequences": lambda: build_sequences(clean, users, root / "uw.parquet", None,
                                             root / "sequences", SequencesConfig()),
    }


def _peak_rss() -> int:
    """Peak RSS of this process: VmHWM (Linux; ru_maxrss would include the parent's peak,
    which a spawned child inherits through exec), else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_memory(root: Path, name: str, queue) -> None:
    tracemalloc.start()
    stages(root)[name]()
    _, traced = tracemalloc.get_traced_memory()
    queue.put((_peak_rss(), traced, pa.default_memory_pool().max_memory()))


def peak_memory(root: Path, name: str) -> tuple[int, int, int]:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_memory, args=(root, name, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--minutes", type=int, default=11_100, help="per user, before 9%% drop")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the data here and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_labels.") as tmp:
        root = args.keep or Path(tmp)
        if not (root / "clean").exists():
            started = time.perf_counter()
            rows = write_cohort(root, args.users, args.minutes)
            print(f"wrote {rows:,} rows of {args.users} users in {time.perf_counter() - started:.1f} s")
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (root / "clean").glob("*.parquet"))
        run = stages(root)
        for name in ("user-week table", "sequences"):  # warm-up; writes the table sequences read
            started = time.perf_counter()
            run[name]()
            print(f"first {name} in this process: {time.perf_counter() - started:.2f} s "
                  f"(compiles the numba kernels, or loads them from their on-disk cache)")
        times: dict[str, list[float]] = {name: [] for name in run}
        cpu: dict[str, list[float]] = {name: [] for name in run}
        for _ in range(args.runs):
            for name, fn in run.items():
                started, started_cpu = time.perf_counter(), time.process_time()
                fn()
                times[name].append(time.perf_counter() - started)
                cpu[name].append(time.process_time() - started_cpu)
        base = statistics.median(times["read (R)"])
        base_dict = statistics.median(times["read (R, dict)"])
        print(f"\n{rows:,} rows, {args.runs} runs each, interleaved; medians:")
        base_cpu = statistics.median(cpu["read (R)"])
        print(f"{'stage':<17}{'median s':>10}{'x R':>8}{'x R dict':>10}  {'target':<8}"
              f"{'cpu s':>7}{'cpu x R':>9}{'peak RSS':>10}{'tracemalloc':>13}{'arrow pool':>12}")
        for name, values in times.items():
            median = statistics.median(values)
            rss, traced, arrow = peak_memory(root, name)
            verdict = "" if name.startswith("read") else (
                "met" if median / base <= TARGET else "MISSED")
            median_cpu = statistics.median(cpu[name])
            print(f"{name:<17}{median:>10.3f}{median / base:>8.2f}{median / base_dict:>10.2f}  "
                  f"{verdict:<8}{median_cpu:>7.2f}{median_cpu / base_cpu:>9.2f}"
                  f"{rss / 2**20:>8.0f} MB{traced / 2**20:>10.0f} MB{arrow / 2**20:>9.0f} MB")
        print(f"(runs: { {k: [round(v, 3) for v in vs] for k, vs in times.items()} })")
    return 0


if __name__ == "__main__":
    sys.exit(main())
