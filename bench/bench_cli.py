"""Benchmark: how fast a usage error answers, as a ratio to the interpreter's own start-up.

    .venv/bin/python bench/bench_cli.py [--runs 7]

A `stethoscope run` with a bad `--config` key must answer before TensorFlow, Keras or Prefect
is imported (tests/flows/test_entry_points.py checks that they are not); this measures what
that buys. Each run is a whole new process, interleaved with a bare `python -c pass` (the
baseline B) so that load from other processes hits both alike; medians of `--runs` are
printed with median / B.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = ("from stethoscope.flows.cli import main; import sys; "
         "sys.exit(main(sys.argv[1:]))")


def _seconds(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "cohort" / "sensor_logs").mkdir(parents=True)
        (root / "bad.yaml").write_text("train:\n  epochz: 3\n")
        usage = [sys.executable, "-c", PROBE, "run", "--data", str(root / "cohort"),
                 "--out", str(root / "runs" / "r"), "--config", str(root / "bad.yaml")]
        bare = [sys.executable, "-c", "pass"]
        times: dict[str, list[float]] = {"bare interpreter (B)": [], "usage error": []}
        for _ in range(args.runs):
            times["bare interpreter (B)"].append(_seconds(bare))
            times["usage error"].append(_seconds(usage))
    base = statistics.median(times["bare interpreter (B)"])
    print(f"{'':24} {'median s':>9} {'/ B':>6}   ({args.runs} runs each, interleaved)")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:24} {median:9.3f} {median / base:6.1f}")


if __name__ == "__main__":
    main()
