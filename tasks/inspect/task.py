"""The inspect stage's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.tasks.inspect.config import ModelShape
from stethoscope.tasks.inspect.shape import inspect_model


@task(name="inspect-model")
def inspect_model_task(
    model_path: Path,
    num_steps: int = 4096,
    time_of_day: bool = False,
    output_layer: str | None = None,
    task_index: int = 0,
) -> ModelShape:
    return inspect_model(model_path, num_steps, time_of_day, output_layer, task_index)
