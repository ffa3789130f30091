"""The inspect stage's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.tasks.inspect.config import ModelShape
from stethoscope.tasks.inspect.shape import inspect_model


@task(name="inspect-model")
def inspect_model_task(model_path: Path, output_layer: str = "raw_output") -> ModelShape:
    return inspect_model(model_path, output_layer)
