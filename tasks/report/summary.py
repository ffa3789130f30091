"""summary.json: the stages' outcomes merged into one Summary, written atomically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stethoscope.schemas.atomic import atomic_path
from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.outcome import StageOutcome, last_section
from stethoscope.schemas.summary import (
    ActivationsSection,
    ComparisonSection,
    DataSection,
    GradientsSection,
    PredictionsSection,
    Summary,
    status_of,
)


def build_summary(run: RunPaths, config: dict[str, Any], started_at: datetime,
                  outcomes: list[StageOutcome], flow: str | None = None) -> Summary:
    """Merge the stages' outcomes into one Summary; status follows from the findings."""
    rank = {"error": 0, "warning": 1, "info": 2}
    findings = sorted((f for o in outcomes for f in o.findings), key=lambda f: rank[f.severity])

    def last(attribute: str, default: Any) -> Any:
        return last_section(outcomes, attribute, default)

    data: dict[str, int] = {}
    for o in outcomes:  # each stage fills the counts it knows
        if o.data is not None:
            data.update({k: v for k, v in o.data.model_dump().items() if v})
    return Summary(
        run_id=run.run_id, flow=flow, status=status_of(findings), started_at=started_at,
        finished_at=datetime.now(UTC), config=config, data=DataSection(**data),
        findings=findings, activations=last("activations", ActivationsSection()),
        gradients=last("gradients", GradientsSection()), synthetic=last("synthetic", []),
        predictions=last("predictions", PredictionsSection()),
        comparison=last("comparison", ComparisonSection()),
    )


def write_summary(summary: Summary, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(summary.model_dump_json(indent=2) + "\n")
    return path
