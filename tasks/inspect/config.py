"""What an existing model expects: the record the inspect stage returns."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ModelShape(BaseModel):
    model_config = ConfigDict(frozen=True)

    num_steps: int  # T
    num_channels: int  # C
    layers: list[str]
