"""Validation stage vs a bare pyarrow read of the same files (issue: targets <= 2x for the row
gate, <= 3x with great-expectations reporting). Medians of several runs in one process; peak
memory of each configuration measured in a fresh subprocess: its peak RSS (VmHWM; ru_maxrss
would include this process's peak, which a child inherits through fork and exec), as the
increase over the same process after its imports, and Arrow's memory-pool peak.

    .venv/bin/python bench/bench_data.py [--users 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cohort import write_bench_cohort  # noqa: E402

from stethoscope.schemas.layout import CohortPaths, RunPaths  # noqa: E402
from stethoscope.tasks.shared.io import list_parquet_files  # noqa: E402
from stethoscope.tasks.validate.config import ValidateConfig  # noqa: E402
from stethoscope.tasks.validate.gate import validate_cohort  # noqa: E402


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

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

from pathlib import Path
import pyarrow.parquet as pq
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.tasks.shared.io import list_parquet_files
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.validate.gate import validate_cohort
cohort = Path({str(cohort)!r})
import pyarrow as pa
base = hwm_mib()
if {what!r} == "read":
    for f in list_parquet_files(cohort / "sensor_logs"):
        pq.read_table(f)
else:
    validate_cohort(CohortPaths(cohort), RunPaths(Path(tempfile.mkdtemp()) / "run"),
                    ValidateConfig(great_expectations={what == 'gx'}, max_quarantine_share=1.0))
print(hwm_mib() - base, hwm_mib(), pa.default_memory_pool().max_memory() / 2**20)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    grown, rss, arrow = (float(x) for x in out.stdout.strip().splitlines()[-1].split())
    return f"+{grown:.0f} MiB over the imports, {rss:.0f} MiB in all (Arrow pool peak {arrow:.0f} MiB)"


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

            def dictionary_read(files=files):  # the fastest bare read: strings as dictionaries
                for f in files:
                    pq.read_table(f, read_dictionary=["user_id", "device"])

            def gate(cohort=cohort, gx=False, runs=runs):
                run = RunPaths(Path(tmp) / f"run-{next(runs)}")
                validate_cohort(CohortPaths(cohort), run,
                                ValidateConfig(great_expectations=gx, max_quarantine_share=1.0))

            gate(gx=True)  # warm-up: imports great-expectations once (cost reported below)
            read = _median_seconds(bare_read, args.runs)
            fast_read = _median_seconds(dictionary_read, args.runs)
            row_gate = _median_seconds(gate, args.runs)
            with_gx = _median_seconds(lambda: gate(gx=True), args.runs)
            print(f"\n{label}: {rows:,} rows in {len(files)} files, median of {args.runs} runs")
            print(f"  bare pyarrow read        {read:7.2f} s   1.00x")
            print(f"  (with read_dictionary    {fast_read:7.2f} s   {fast_read / read:4.2f}x: strings kept as "
                  f"dictionaries, as the gate reads them)")
            print(f"  row gate (validate)      {row_gate:7.2f} s   {row_gate / read:4.2f}x   (target <= 2x)")
            print(f"  + great-expectations     {with_gx:7.2f} s   {with_gx / read:4.2f}x   (target <= 3x)")
            for what in ("read", "gate", "gx"):
                print(f"  peak RSS, fresh process, {what:>4}: {_peak_memory(cohort, what)}")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import great_expectations"], check=True)
    print(f"\none-off cost per process, not in the ratios: import great_expectations "
          f"{time.perf_counter() - start:.1f} s (the stage imports it on a background thread "
          f"while the gate runs)")


if __name__ == "__main__":
    main()
