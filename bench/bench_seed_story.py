"""The seed's story, reproduced (issue #15, item 3): two `stethoscope compare` experiments on a
simulated cohort, read back from their comparison.json.

    .venv/bin/python bench/bench_seed_story.py [--experiment dead|memory|both] [--users 100]
        [--weeks 2] [--num-steps 512] [--epochs 4] [--hot-lr 0.1] [--seeds 1] [--out DIR]

1. Dead ReLU: `relu_hot` (ReLU) vs `leaky_hot` (Leaky ReLU), both trained with the same high
   learning rate (`--hot-lr`) and budget. Printed per layer: the dead share (units exactly 0 on
   >= 99% of positions) and the constant share (flat over time) of the activation audit, and
   the dead share per epoch the training monitor recorded for the conv layers. Expected: a
   mostly dead conv layer and constant units after it for ReLU only.
2. Memory: `none` (two conv blocks, no recurrence), `bilstm` (the same blocks + a BiLSTM) and
   `dilated` (five dilated conv blocks, dilations 1..16, no recurrence), trained with the
   default learning rate. Printed: the gradient audit's effective horizon in hours next to
   the receptive field of the conv stack (the farthest input step on the shorter side of t_mid
   that 'same'-padded convolutions can reach, in hours). A stack without recurrence cannot
   have a horizon beyond its receptive field; expected order none < dilated, and bilstm at
   least as far as the conv stack in front of it.

Both experiments share the settings of `base()` (T = `--num-steps` bins a week, batch 16,
small audit samples) and the cohort (simulated with `stethoscope simulate`, or `--data`).
Each `stethoscope compare` runs in its own subprocess, one after the other; its log is
`<out>/<experiment>.log`, its report `<out>/<experiment>/comparison.html`. A benchmark, not a
test: with one seed a difference is one draw (ask for `--seeds 2` to see the spread).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

WEEK_HOURS = 7 * 24.0


def base(args: argparse.Namespace) -> dict:
    t = args.num_steps
    return {
        "labels": {"num_bins": t},
        "sequences": {"num_steps": t},
        "model": {"num_steps": t, "conv_filters": [16, 16], "kernel_size": 5, "units": 16},
        "train": {"mode": "supervised", "epochs": args.epochs, "batch_size": 16},
        "synthetic": {"epochs": 2, "max_train_user_weeks": 64, "max_val_user_weeks": 32},
        "activations": {"max_user_weeks": 32},
        "gradients": {"max_user_weeks": 32},
        "analyze": {"num_bootstrap": 200, "num_permutations": 200},
    }


def experiments(args: argparse.Namespace) -> dict[str, dict]:
    hot = {"learning_rate": args.hot_lr}
    dead = {"base": base(args), "comparison": {"num_bootstrap": 200}, "variants": {
        "relu_hot": {"model": {"activation": "relu"}, "train": hot},
        "leaky_hot": {"model": {"activation": "leaky_relu"}, "train": hot},
    }}
    memory = {"base": base(args), "comparison": {"num_bootstrap": 200}, "variants": {
        "none": {"model": {"recurrence": "none"}},
        "bilstm": {"model": {"recurrence": "bilstm"}},
        "dilated": {"model": {"recurrence": "none", "dilated": True,
                              "conv_filters": [16] * args.dilated_blocks}},
    }}
    return {"dead": dead, "memory": memory}


def receptive_steps(model: dict) -> int | None:
    """Input steps the conv stack reaches on the shorter side of its output step ('same'
    padding pads floor((k-1) d / 2) before and the rest after); None with pooling."""
    if model.get("pool_size", 1) != 1:
        return None
    k = model["kernel_size"]
    dilations = [2 ** i if model.get("dilated") else 1 for i in range(len(model["conv_filters"]))]
    return sum((k - 1) * d // 2 for d in dilations)


def run_compare(name: str, spec: dict, cohort: Path, out: Path, seeds: int) -> float:
    variants = out / f"{name}.yaml"
    variants.write_text(yaml.safe_dump(spec, sort_keys=False))
    command = [sys.executable, "-m", "stethoscope.flows.cli", "-q", "compare", "--data",
               str(cohort), "--variants", str(variants), "--out", str(out / name),
               "--seeds", str(seeds)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    with open(out / f"{name}.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    seconds = time.perf_counter() - start
    if not (out / name / "comparison.json").exists():
        raise SystemExit(f"bench_seed_story: `stethoscope compare` ({name}) exited "
                         f"{done.returncode} without comparison.json; see {out / name}.log")
    return seconds


def _fmt(values: list, spec: str = ".2f") -> str:
    return ",".join("n/a" if v is None else format(v, spec) for v in values)


def _measure(variant: dict, measure: str) -> list:
    return next((m["seeds"] for m in variant["measures"] if m["measure"] == measure), [])


def _dead_by_epoch(run_dir: Path, layer: str) -> list[float]:
    path = run_dir / "model" / "dead_units.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    return [r["dead_fraction"] for r in rows if r["layer"] == layer]


def print_dead(comparison: dict) -> None:
    variants = comparison["variants"]
    layers = [layer["name"] for layer in variants[0]["layers"]
              if not layer["name"].startswith("head_")]
    print("dead share / constant share per layer (activation audit; one value per seed, comma-separated):")
    print(f"  {'layer':<14}" + "".join(f"{v['name']:>26}" for v in variants))
    for layer in layers:
        cells = [f"{_fmt(_measure(v, f'dead share {layer}'))} / "
                 f"{_fmt(_measure(v, f'constant share {layer}'))}" for v in variants]
        print(f"  {layer:<14}" + "".join(f"{c:>26}" for c in cells))
    print("dead share per epoch during training (conv layers, first seed; epoch 0 = before "
          "the first update):")
    for v in variants:
        run_dir = Path(v["run_dirs"][0])
        for layer in (name for name in layers if name.startswith("conv_")):
            print(f"  {v['name']:<10} {layer:<7} "
                  + " ".join(f"{x:.2f}" for x in _dead_by_epoch(run_dir, layer)))
    print("other measures:")
    for v in variants:
        aurocs = {k: x for k, x in v["auroc"].items() if x is not None}
        print(f"  {v['name']:<10} status {'/'.join(v['status'])}, horizon "
              f"{_fmt(_measure(v, 'horizon hours'))} h, AUROC "
              + ", ".join(f"{k} {x:.2f}" for k, x in aurocs.items()))


def print_memory(comparison: dict, spec: dict, bin_hours: float) -> None:
    print(f"horizon vs receptive field (1 bin = {bin_hours * 60:.1f} min):")
    print(f"  {'variant':<9}{'recurrence':>11}{'blocks':>7}{'dilated':>8}"
          f"{'conv RF steps':>14}{'conv RF h':>10}{'horizon h':>18}  within RF")
    for v in comparison["variants"]:
        model = {**spec["base"]["model"], **spec["variants"][v["name"]].get("model", {})}
        steps = receptive_steps(model)
        rf = None if steps is None else steps * bin_hours
        horizon = _measure(v, "horizon hours")
        within = ("n/a (recurrent)" if model.get("recurrence", "bilstm") != "none" else
                  "n/a" if rf is None or None in horizon else
                  "yes" if all(h <= rf + 1e-9 for h in horizon) else "NO")
        print(f"  {v['name']:<9}{model.get('recurrence', 'bilstm'):>11}"
              f"{len(model['conv_filters']):>7}{str(bool(model.get('dilated'))):>8}"
              f"{'n/a' if steps is None else steps:>14}{'n/a' if rf is None else f'{rf:.2f}':>10}"
              f"{_fmt(horizon):>18}  {within}")
    order = sorted(comparison["variants"], key=lambda v: v["horizon_hours"] or 0.0)
    print("  measured order: " + " < ".join(f"{v['name']} ({v['horizon_hours'] or 0:.2f} h)"
                                            for v in order))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", choices=["dead", "memory", "both"], default="both")
    parser.add_argument("--data", help="a cohort directory (default: simulate one)")
    parser.add_argument("--users", type=int, default=100, help="simulated users (default 100)")
    parser.add_argument("--weeks", type=int, default=2, help="weeks per user (default 2)")
    parser.add_argument("--cohort-seed", type=int, default=1)
    parser.add_argument("--num-steps", type=int, default=512, help="T (default 512: ~20 min bins)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    parser.add_argument("--hot-lr", type=float, default=0.1,
                        help="learning rate of the dead-ReLU experiment (default 0.1)")
    parser.add_argument("--dilated-blocks", type=int, default=5, help="default 5: dilations 1..16")
    parser.add_argument("--seeds", type=int, default=1, help="runs per variant (default 1)")
    parser.add_argument("--out", help="directory to keep everything in (default: a new temp dir)")
    args = parser.parse_args()

    out = Path(args.out or tempfile.mkdtemp(prefix="seed-story-"))
    out.mkdir(parents=True, exist_ok=True)
    cohort = Path(args.data) if args.data else out / "cohort"
    if not args.data and not (cohort / "users.parquet").exists():
        subprocess.run([sys.executable, "-m", "stethoscope.flows.cli", "-q", "simulate",
                        "--users", str(args.users), "--weeks", str(args.weeks),
                        "--seed", str(args.cohort_seed), "--out", str(cohort)], check=True)
    print(f"cohort {cohort}, T={args.num_steps}, {args.epochs} epochs, seeds {args.seeds}, "
          f"{os.cpu_count()} CPUs; everything in {out}")
    specs = experiments(args)
    names = ["dead", "memory"] if args.experiment == "both" else [args.experiment]
    for name in names:
        seconds = run_compare(name, specs[name], cohort, out, args.seeds)
        comparison = json.loads((out / name / "comparison.json").read_text())
        stats = json.loads((out / name / "data" / "sequences" / "stats.json").read_text())
        counts = stats["counts"]
        print(f"\n== {name}: `stethoscope compare` {seconds:.0f} s wall, user-weeks {counts}")
        if name == "dead":
            print(f"   ReLU vs Leaky ReLU at learning rate {args.hot_lr}")
            print_dead(comparison)
        else:
            bin_hours = stats.get("bin_seconds", WEEK_HOURS * 3600 / args.num_steps) / 3600
            print_memory(comparison, specs[name], bin_hours)


if __name__ == "__main__":
    main()
