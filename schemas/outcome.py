"""What a stage hands to the report stage besides its summary.json section: findings, figures
(PNG files it wrote) and short notes. Records only; the report stage renders them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stethoscope.schemas.summary import (
    ActivationsSection,
    ComparisonSection,
    DataSection,
    Finding,
    GradientsSection,
    PredictionsSection,
    SyntheticResult,
)


@dataclass(frozen=True)
class Figure:
    """A plot a stage produced, shown in the report under `section`."""

    section: str
    title: str
    path: Path
    caption: str = ""


@dataclass(frozen=True)
class StageOutcome:
    """What one stage hands to the report: its summary section(s), findings and figures."""

    stage: str
    findings: list[Finding] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    data: DataSection | None = None
    activations: ActivationsSection | None = None
    gradients: GradientsSection | None = None
    synthetic: list[SyntheticResult] | None = None
    predictions: PredictionsSection | None = None
    comparison: ComparisonSection | None = None
    notes: list[str] = field(default_factory=list)


def last_section(outcomes: list[StageOutcome], attribute: str, default: Any) -> Any:
    """The section `attribute` of the last outcome that fills it: a later stage's section
    replaces an earlier one's (the report's summary and the gate read the same)."""
    values = [getattr(o, attribute) for o in outcomes if getattr(o, attribute) is not None]
    return values[-1] if values else default


class Reportable(Protocol):
    """A stage's result record: it turns itself into the outcome the report stage renders, from
    its own fields only, so the report stage never imports a stage."""

    def outcome(self) -> StageOutcome: ...
