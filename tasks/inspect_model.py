"""What an existing model expects, read before its audits: T and C of its sequence input."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from pydantic import BaseModel, ConfigDict

from tasks._batches import load_audit_model


class ModelShape(BaseModel):
    model_config = ConfigDict(frozen=True)

    num_steps: int  # T
    num_channels: int  # C
    layers: list[str]


def inspect_model(model_path: Path, output_layer: str = "raw_output") -> ModelShape:
    """Load in safe mode, check the audit contract, return the input shape."""
    model = load_audit_model(model_path, output_layer=output_layer, num_channels=None)
    _, steps, channels = model.inputs[0].shape
    return ModelShape(num_steps=int(steps), num_channels=int(channels),
                      layers=[layer.name for layer in model.layers])


@task(name="inspect-model")
def inspect_model_task(model_path: Path, output_layer: str = "raw_output") -> ModelShape:
    return inspect_model(model_path, output_layer)
