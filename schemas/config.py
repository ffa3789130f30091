"""Base of every stage's configuration: typed, defaulted, frozen, no unknown keys."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StageConfig(BaseModel):
    """Frozen pydantic model; unknown keys are an error, so a typo in a config file is caught."""

    model_config = ConfigDict(frozen=True, extra="forbid")
