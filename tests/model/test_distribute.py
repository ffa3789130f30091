"""Training on two devices with tf.distribute: two logical CPU devices (standing in for two
GPUs) train to the same loss curve as one device. TensorFlow fixes its devices when it first
starts, so each configuration runs in a process of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
SCRIPT = """
import json, sys
from pathlib import Path
import tensorflow as tf
devices, distribute, store, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)
from stethoscope.model.config import ModelConfig
from stethoscope.tasks.train.config import TrainConfig
from stethoscope.tasks.train.training import train_model
config = TrainConfig(epochs=3, batch_size=8, learning_rate=1e-2, patience=10, distribute=distribute)
result = train_model(store, out, config, ModelConfig(num_steps=64, conv_filters=(8, 8), units=8))
history = json.loads(result.history_path.read_text())
print(json.dumps({"loss": [h["loss"] for h in history], "val_loss": [h["val_loss"] for h in history],
                  "replicas": len(tf.config.list_logical_devices("CPU"))}))
"""


def _train(devices: int, distribute: str, store: Path, out: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(devices), distribute, str(store),
                           str(out)], cwd=PROJECT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_logical_devices_train_to_the_loss_of_one(make_store, tmp_path: Path):
    store = make_store()
    one = _train(1, "none", store, tmp_path / "one")
    two = _train(2, "mirrored", store, tmp_path / "two")
    assert two["replicas"] == 2
    assert len(one["loss"]) == len(two["loss"]) == 3
    # the same batches split over two replicas, gradients summed, known labels counted over
    # both slices (model/losses.py): the same curve up to the order of floating-point sums
    # (measured: equal to 1e-7)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-4)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    assert one["loss"][-1] < one["loss"][0]  # and it is a curve that learns
