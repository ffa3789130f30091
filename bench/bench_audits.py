"""Benchmark of the model audits (issue item 5); prints ratios, asserts nothing.

    .venv/bin/python bench/bench_audits.py [--steps 1024 --sample 64 --batch-size 16]

1. time of the gradient audit (`audit_gradients`: input-gradient profile over the sample plus
   weight-gradient norms on one batch) / time of one forward + backward pass over the same
   sample (a compiled step: forward through the whole model, gradient of the summed outputs
   w.r.t. every trainable weight, no optimizer). Target <= 1.5x.
2. time of the activation audit (`audit_activations`, statistics only) / time of one compiled
   forward pass over the same sample. Target <= 1.5x.
3. peak resident memory of each audit and of the forward pass at two sample sizes, each in a
   fresh process: the peak RSS (VmHWM, reset through /proc/self/clear_refs after TensorFlow is
   loaded and the model built) minus the RSS at that point. It must not grow with the sample.

Each timing is the median of --repeats runs and includes the one-off tf.function trace on both
sides (each audit compiles once per call, as it does in a nightly run). Batches are generated on
the fly, so the sample itself never sits in memory. The network is model.deepheart (conv blocks
-> BiLSTM from metadata states -> raw_output -> pooled head) at reduced size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stethoscope.model.config import ModelConfig, TaskSpec  # noqa: E402
from stethoscope.model.deepheart import build_model  # noqa: E402
from stethoscope.tasks.audits.activations.audit import audit_activations  # noqa: E402
from stethoscope.tasks.audits.activations.config import ActivationsConfig  # noqa: E402
from stethoscope.tasks.audits.gradients.audit import audit_gradients  # noqa: E402
from stethoscope.tasks.audits.gradients.config import GradientsConfig  # noqa: E402


def make_model(steps: int):
    config = ModelConfig(num_steps=steps, conv_filters=(16, 16), units=16)
    return build_model(config, [TaskSpec(name="apnea", kind="classification")])


def batches(num_user_weeks: int, batch_size: int, steps: int):
    """Seeded (sequence, metadata) batches, generated one at a time."""
    for start in range(0, num_user_weeks, batch_size):
        rng = np.random.default_rng(start)
        n = min(batch_size, num_user_weeks - start)
        yield (rng.normal(size=(n, steps, 3)).astype("float32"),
               rng.normal(size=(n, 4)).astype("float32"))


def forward(model, data) -> None:
    step = tf.function(lambda s, m: model([s, m], training=False))
    for sequence, metadata in data:
        step(sequence, metadata)


def forward_backward(model, data) -> None:
    @tf.function
    def step(sequence, metadata):
        with tf.GradientTape() as tape:
            outputs = model([sequence, metadata], training=False)
            loss = tf.add_n([tf.reduce_sum(o) for o in tf.nest.flatten(outputs)])
        return tape.gradient(loss, model.trainable_weights)

    for sequence, metadata in data:
        step(sequence, metadata)


def run(kind: str, model, data, batch_size: int) -> None:
    if kind == "gradients":
        audit_gradients(model, data, GradientsConfig(batch_size=batch_size))
    elif kind == "activations":
        audit_activations(model, data, ActivationsConfig(batch_size=batch_size))
    elif kind == "forward":
        forward(model, data)
    else:
        forward_backward(model, data)


def median_seconds(kind: str, model, args) -> float:
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run(kind, model, batches(args.sample, args.batch_size, args.steps), args.batch_size)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status (this benchmark needs Linux)")


def _reset_peak_rss() -> int:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0) and return it, KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def peak_rss_mb(kind: str, num_user_weeks: int, args) -> float:
    """Run one measurement in a fresh interpreter; its peak RSS above the loaded model, MiB."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--sample", str(num_user_weeks),
         "--steps", str(args.steps), "--batch-size", str(args.batch_size)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4096, help="T (default 4096, the documented T)")
    parser.add_argument("--sample", type=int, default=256,
                        help="user-weeks timed (default 256, the audits' default sample)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=(64, 512))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    tf.keras.utils.set_random_seed(0)
    model = make_model(args.steps)
    if args.child:
        base = _reset_peak_rss()
        run(args.child, model, batches(args.sample, args.batch_size, args.steps),
            args.batch_size)
        print(json.dumps({"peak_rss_mb": (_status_kib("VmHWM") - base) / 1024}))
        return

    print(f"deepheart conv(16,16) + BiLSTM(16), T={args.steps}, {args.sample} user-weeks, "
          f"batch {args.batch_size}, median of {args.repeats}")
    seconds = {kind: median_seconds(kind, model, args)
               for kind in ("forward_backward", "gradients", "forward", "activations")}
    for audit, baseline, label in (("gradients", "forward_backward", "forward + backward"),
                                   ("activations", "forward", "forward")):
        ratio = seconds[audit] / seconds[baseline]
        verdict = "ok" if ratio <= 1.5 else "OVER the 1.5x target"
        print(f"{audit:>11} audit {seconds[audit]:7.2f} s   {label:>18} {seconds[baseline]:7.2f} s"
              f"   ratio {ratio:4.2f}x  ({verdict})")
    small, large = args.memory_sizes
    print(f"peak RSS above the loaded model (fresh process each, MiB) at {small} and {large} "
          "user-weeks:")
    for kind in ("forward", "activations", "gradients"):
        a, b = peak_rss_mb(kind, small, args), peak_rss_mb(kind, large, args)
        print(f"{kind:>11}  {a:8.0f}  {b:8.0f}   growth {b - a:+6.0f} MiB")


if __name__ == "__main__":
    main()
