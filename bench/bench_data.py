"""Validation stage vs a bare pyarrow read of the same files (issue: targets <= 2x for the row
gate, <= 3x with great-expectations reporting). Medians of several runs in one process; peak
memory of each configuration measured in a fresh subprocess (ru_maxrss).

    .venv/bin/python bench/bench_data.py [--users 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cohort import write_bench_cohort  # noqa: E402

from schemas.layout import CohortPaths, RunPaths  # noqa: E402
from tasks.io import list_parquet_files  # noqa: E402
from tasks.validate import ValidateConfig, validate_cohort  # noqa: E402


def _median_seconds(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_memory(cohort: Path, what: str) -> str:
    code = f"""
import resource, sys, tempfile
from pathlib import Path
import pyarrow.parquet as pq
from schemas.layout import CohortPaths, RunPaths
from tasks.io import list_parquet_files
from tasks.validate import ValidateConfig, validate_cohort
cohort = Path({str(cohort)!r})
import pyarrow as pa
if {what!r} == "read":
    for f in list_parquet_files(cohort / "sensor_logs"):
        pq.read_table(f)
else:
    validate_cohort(CohortPaths(cohort), RunPaths(Path(tempfile.mkdtemp()) / "run"),
                    ValidateConfig(great_expectations={what == 'gx'}, max_quarantine_share=1.0))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, pa.default_memory_pool().max_memory() / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rss, arrow = out.stdout.strip().splitlines()[-1].split()
    return f"{float(rss):.0f} MiB (Arrow pool peak {float(arrow):.0f} MiB)"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for label, defects in (("clean cohort", 0.0), ("0.5% defective rows", 0.005)):
            cohort = Path(tmp) / label.replace(" ", "_")
            rows = write_bench_cohort(cohort, num_users=args.users, defect_share=defects)
            files = list_parquet_files(cohort / "sensor_logs")
            runs = iter(range(10**6))

            def bare_read(files=files):
                for f in files:
                    pq.read_table(f)

            def gate(cohort=cohort, gx=False, runs=runs):
                run = RunPaths(Path(tmp) / f"run-{next(runs)}")
                validate_cohort(CohortPaths(cohort), run,
                                ValidateConfig(great_expectations=gx, max_quarantine_share=1.0))

            gate(gx=True)  # warm-up: imports great-expectations once (cost reported below)
            read = _median_seconds(bare_read, args.runs)
            row_gate = _median_seconds(gate, args.runs)
            with_gx = _median_seconds(lambda: gate(gx=True), args.runs)
            print(f"\n{label}: {rows:,} rows in {len(files)} files, median of {args.runs} runs")
            print(f"  bare pyarrow read        {read:7.2f} s   1.00x")
            print(f"  row gate (validate)      {row_gate:7.2f} s   {row_gate / read:4.2f}x   (target <= 2x)")
            print(f"  + great-expectations     {with_gx:7.2f} s   {with_gx / read:4.2f}x   (target <= 3x)")
            for what in ("read", "gate", "gx"):
                print(f"  peak RSS, fresh process, {what:>4}: {_peak_memory(cohort, what)}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import great_expectations"], check=True)
    print(f"\none-off cost per process, not in the ratios: import great_expectations "
          f"{time.perf_counter() - start:.1f} s; this process's peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
