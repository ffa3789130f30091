"""What an existing model expects: the record the inspect stage returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from stethoscope.schemas.outcome import StageOutcome


class ModelInput(BaseModel):
    """One input of the model and what the audits feed it."""

    model_config = ConfigDict(frozen=True)

    name: str
    shape: list[int | None]  # without the batch axis
    fed: Literal["sequence", "metadata", "zeros"]


class ModelShape(BaseModel):
    """T and C of the model's time-series input (the sequences are built at this T), its
    inputs, its layer calls, and the per-step output the gradient audit will differentiate
    (None: the model has none; the gradient audit then reports GRADIENTS_NOT_EVALUATED)."""

    model_config = ConfigDict(frozen=True)

    num_steps: int  # T
    num_channels: int  # C
    layers: list[str]
    inputs: list[ModelInput] = []
    output_layer: str | None = None
    inputs_note: str = ""  # the inputs and what feeds them, in words

    def outcome(self) -> StageOutcome:
        return StageOutcome(stage="data", notes=[self.inputs_note] if self.inputs_note else [])
