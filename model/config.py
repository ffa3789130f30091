"""What a DeepHeart network is made of, as configuration: the architecture (`ModelConfig`, the
`model` section of a run's config) and its tasks (`TaskSpec`). Plain pydantic, no Keras, so a
config can be checked before TensorFlow is imported; model/deepheart.py builds the network."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.sequence_store import CHANNELS, METADATA_FEATURES

Recurrence = Literal["bilstm", "lstm", "bigru", "gru", "none"]

# states per recurrence: (bi)LSTM has h and c per direction, (bi)GRU h per direction
_NUM_STATES: dict[str, int] = {"bilstm": 4, "lstm": 2, "bigru": 2, "gru": 1, "none": 1}


class ModelConfig(StageConfig):
    """Architecture of the network. Defaults: the documented model at T = 4096, cheap on a CPU."""

    num_steps: int = Field(4096, ge=8, description="T: time bins per user-week")
    num_channels: int = Field(len(CHANNELS), ge=1, description="C: input channels")
    num_metadata: int = Field(
        len(METADATA_FEATURES), ge=0, description="M: metadata features; 0 = no metadata input"
    )
    conv_filters: tuple[int, ...] = Field((32, 32), min_length=1, description="one per block")
    kernel_size: int = Field(5, ge=1)
    pool_size: int = Field(1, ge=1, description="1 keeps T' == T; >1 downsamples after each block")
    dilated: bool = Field(False, description="dilation 2**(i-1) in block i (receptive field grows)")
    activation: Literal["leaky_relu", "relu", "elu", "gelu", "tanh"] = "leaky_relu"
    recurrence: Recurrence = "bilstm"
    units: int = Field(32, ge=1, description="recurrent units per direction")
    raw_output_layer: str = Field("raw_output", min_length=1)

    @model_validator(mode="after")
    def _downsampled_length_is_positive(self) -> ModelConfig:
        if self.num_steps // self.pool_size ** len(self.conv_filters) < 1:
            raise ValueError(
                f"pool_size={self.pool_size} over {len(self.conv_filters)} blocks shrinks "
                f"num_steps={self.num_steps} to nothing; lower pool_size or use fewer blocks"
            )
        return self

    @property
    def output_steps(self) -> int:
        """T': timesteps of raw_output."""
        return self.num_steps // self.pool_size ** len(self.conv_filters)

    @property
    def recurrent_layer(self) -> str | None:
        """Name of the recurrent layer (`bilstm`, `lstm`, `bigru`, `gru`), None without one."""
        return None if self.recurrence == "none" else self.recurrence


class TaskSpec(BaseModel):
    """One output of the network: a condition (sigmoid) or a synthetic target (linear).

    A regression head emits `offset + scale * mean_t raw_output[:, t, task]`, so raw_output works
    in standardised units while the head speaks the target's own units.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["classification", "regression"]
    offset: float = 0.0
    scale: float = Field(1.0, gt=0)

    @property
    def head(self) -> str:
        return head_name(self.name)


def head_name(task: str) -> str:
    """Layer (and output) name of a task's head, e.g. `head_diabetes`."""
    return f"head_{task}"


def inspected_layer_names(config: ModelConfig) -> list[str]:
    """Layers whose activations an audit looks at, input side first."""
    names = [f"conv_{i}" for i in range(1, len(config.conv_filters) + 1)]
    if config.num_metadata:
        names.append("initial_state")
    if config.recurrent_layer:
        names.append(config.recurrent_layer)
    elif config.num_metadata:
        names.append("metadata_bias")
    return [*names, config.raw_output_layer]
