"""Training throughput: the training task streaming the sequence store vs a bare `model.fit` of
the same model on the same data held in memory (issue item 6; target >= 0.9x).

    .venv/bin/python bench/bench_train.py [--num-steps 4096] [--users 100] [--weeks 3]

Both sides train the same supervised DeepHeart for the same epochs with the same validation
data. The task side is the whole `train_model` call: it also checkpoints every epoch, writes
history, model.keras and the validation/test predictions. The bare side is build + compile +
`model.fit` on numpy arrays. Each run is a fresh subprocess (TensorFlow import not timed), the
two sides alternate, and the median of `--repeats` runs is compared. Throughput = training
user-weeks x epochs / wall seconds; on a shared machine the CPU-time ratio (user + system
seconds of the run) is the steadier figure. Peak RSS is the subprocess's maximum resident set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the store fabricator lives with the model tests


def _model_config(num_steps: int):
    from stethoscope.model.config import ModelConfig

    return ModelConfig(num_steps=num_steps)


def _train_config(args: argparse.Namespace):
    from stethoscope.tasks.train.config import TrainConfig

    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, patience=args.epochs + 1)


def run_task(store: Path, args: argparse.Namespace) -> dict:
    import keras

    from stethoscope.tasks.train.training import train_model

    fit_seconds: list[float] = []

    class FitClock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, logs=None) -> None:
            fit_seconds.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        start, cpu = time.perf_counter(), _cpu_seconds()
        train_model(store, Path(out), _train_config(args), _model_config(args.num_steps),
                    callbacks=[FitClock()])
        return {"seconds": time.perf_counter() - start, "cpu_seconds": _cpu_seconds() - cpu,
                "fit_seconds": sum(fit_seconds)}


def run_fit(store: Path, args: argparse.Namespace) -> dict:
    import keras
    import numpy as np
    import pyarrow.parquet as pq

    from stethoscope.model.deepheart import build_model
    from stethoscope.tasks.train.training import _compile, _open_store, _task_specs, plan_phases

    config = _train_config(args)
    store_view = _open_store(store, _model_config(args.num_steps))
    tasks = plan_phases(config, *_task_specs(store_view, config))[0].tasks
    index = pq.read_table(store / "index.parquet").to_pandas()

    def arrays(split: str):
        rows = index[index["split"] == split]
        shards = {name: np.load(store / "shards" / name) for name in rows["shard"].unique()}
        x = {"sequence": np.stack([shards[s][r] for s, r in zip(rows["shard"], rows["row"],
                                                                strict=True)]),
             "metadata": np.stack(rows["metadata"].to_numpy()).astype(np.float32)}
        y = {t.head: rows[t.name].to_numpy(dtype=np.float32, na_value=np.nan)[:, None]
             for t in tasks}
        return x, y

    (x, y), val = arrays("train"), arrays("val")  # in memory before the clock starts
    start, cpu = time.perf_counter(), _cpu_seconds()
    keras.utils.set_random_seed(config.seed)
    model = build_model(_model_config(args.num_steps), tasks)
    _compile(model, tasks, config.learning_rate)
    model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, validation_data=val,
              shuffle=True, verbose=0)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": _cpu_seconds() - cpu, "fit_seconds": seconds}


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all threads): robust to other tenants' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run = run_task if args.worker == "task" else run_fit
    result = run(Path(args.store), args)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def _spawn(side: str, store: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", side, "--store", str(store),
               "--num-steps", str(args.num_steps), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "STETHOSCOPE_PROGRESS": "0"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"bench_train: the {side} run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-steps", type=int, default=4096, help="T (default 4096)")
    parser.add_argument("--users", type=int, default=100, help="users (default 100)")
    parser.add_argument("--weeks", type=int, default=3, help="weeks per user (default 3)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--worker", choices=["task", "fit"], help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    from tests.model.conftest import write_store

    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "store", num_users=args.users, weeks=args.weeks,
                            num_steps=args.num_steps, shard_size=64)
        counts = json.loads((store / "stats.json").read_text())["counts"]
        print(f"store: {sum(counts.values())} user-weeks {counts}, T={args.num_steps}, C=3, "
              f"model: default DeepHeart (conv 32x2, bilstm 32), batch {args.batch_size}, "
              f"{args.epochs} epochs, {os.cpu_count()} CPUs")
        runs: dict[str, list[dict]] = {"task": [], "fit": []}
        for repeat in range(args.repeats):
            for side in ("task", "fit"):
                runs[side].append(_spawn(side, store, args))
                r = runs[side][-1]
                print(f"  run {repeat + 1} {side:>4}: {r['seconds']:6.1f} s wall "
                      f"(fit loop {r['fit_seconds']:6.1f} s), {r['cpu_seconds']:6.1f} s CPU, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB")

    work = counts["train"] * args.epochs
    median = {side: statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()}
    fit_only = statistics.median(r["fit_seconds"] for r in runs["task"])
    rss = {side: max(r["peak_rss_mb"] for r in rs) for side, rs in runs.items()}
    ratio = median["fit"] / median["task"]
    print(f"training task (sequence store): {work / median['task']:7.1f} user-weeks/s "
          f"(fit loop alone {work / fit_only:.1f}), peak RSS {rss['task']:.0f} MB")
    print(f"bare model.fit (in memory):     {work / median['fit']:7.1f} user-weeks/s, "
          f"peak RSS {rss['fit']:.0f} MB")
    # each task run next to its bare run: drift in the machine's load cancels out pairwise
    paired = statistics.median(f["seconds"] / t["seconds"]
                               for t, f in zip(runs["task"], runs["fit"], strict=True))
    cpu = {side: statistics.median(r["cpu_seconds"] for r in rs) for side, rs in runs.items()}
    print(f"ratio task / bare: {ratio:.2f}x (target >= 0.9x: {'met' if ratio >= 0.9 else 'MISSED'})"
          f"; median of paired runs {paired:.2f}x; fit loop alone {median['fit'] / fit_only:.2f}x; "
          f"per CPU-second {cpu['fit'] / cpu['task']:.2f}x")


if __name__ == "__main__":
    main()
