"""What an existing model expects, read before its audits: T and C of its sequence input."""

from __future__ import annotations

from pathlib import Path

from stethoscope.tasks.inspect.config import ModelShape
from stethoscope.tasks.shared.audited_model import load_audit_model


def inspect_model(model_path: Path, output_layer: str = "raw_output") -> ModelShape:
    """Load in safe mode, check the audit contract, return the input shape."""
    model = load_audit_model(model_path, output_layer=output_layer, num_channels=None)
    _, steps, channels = model.inputs[0].shape
    return ModelShape(num_steps=int(steps), num_channels=int(channels),
                      layers=[layer.name for layer in model.layers])
