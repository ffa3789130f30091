"""The Prefect event a failed audit emits, for automations to alert on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.report.links import report_link

FAILED_EVENT = "stethoscope.audit.failed"


def failure_event(summary: Summary, run: RunPaths, model: str | None,
                  flow_run_id: str = "") -> dict[str, Any]:
    """The `stethoscope.audit.failed` event: the resource is the audited model, labelled with
    the run; the stethoscope run and the Prefect flow run are related resources (Prefect adds
    the flow, deployment and work pool of the flow run itself)."""
    model = model or "unknown"
    errors = [f for f in summary.findings if f.severity == "error"]
    related = [{"prefect.resource.id": f"stethoscope.run.{summary.run_id}",
                "prefect.resource.role": "audit-run", "prefect.resource.name": summary.run_id}]
    if flow_run_id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                        "prefect.resource.role": "flow-run"})
    return {
        "event": FAILED_EVENT,
        "resource": {"prefect.resource.id": f"stethoscope.model.{model}",
                     "prefect.resource.name": Path(model).name, "stethoscope.model": model,
                     "stethoscope.run-id": summary.run_id,
                     "stethoscope.run-dir": str(run.root.resolve()),
                     **({"stethoscope.flow-run-id": flow_run_id} if flow_run_id else {})},
        "related": related,
        "payload": {"status": summary.status, "codes": sorted({f.code for f in errors}),
                    "errors": [f"{f.stage}: {f.code}: {f.message}" for f in errors[:10]],
                    "summary": str(run.summary.resolve()), "report": report_link(run.report)},
    }


def model_of(config: dict[str, Any], results: list[Any]) -> str | None:
    """The audited model: the file a stage trained, the file given to audit-model, or (for a
    prediction analysis) the predictions of the model that is not at hand."""
    trained = [r.model_path for r in results if getattr(r, "model_path", None)]
    if trained:
        return str(Path(trained[-1]).resolve())
    for key in ("model_file", "predictions_file"):
        if config.get(key):
            return str(Path(config[key]).resolve())
    return None
