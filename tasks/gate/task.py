"""The gate stage's Prefect task: compare this run with its reference, publish the comparison."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from prefect import task

from stethoscope.schemas.outcome import Reportable
from stethoscope.tasks.gate.compare import gate_run
from stethoscope.tasks.gate.config import GateConfig, GateResult
from stethoscope.tasks.shared.artifacts import md_text, publish_table


@task(name="gate", task_run_name="gate against the reference run")
def gate_task(run_dir: Path, results: list[Reportable], config: GateConfig,
              started_at: datetime, baseline: Path | None = None) -> GateResult:
    """Prefect shell: the comparison of the run at `run_dir` (whose stages returned `results`)
    with its reference (`baseline`, else the blessed run, else the last good run of this
    flow), published as a table artifact."""
    from prefect.runtime import flow_run

    result = gate_run(run_dir, [r.outcome() for r in results], config, flow_run.flow_name,
                      started_at, baseline)
    comparison = result.comparison
    if comparison.reference is not None:
        rows = [{"measure": c.measure, "subject": c.subject, "reference": c.reference,
                 "current": c.current, "change": c.delta,
                 "interval": None if c.delta_ci is None else
                 f"[{c.delta_ci[0]:+.3f}, {c.delta_ci[1]:+.3f}]", "verdict": c.verdict}
                for c in comparison.changes]
        rows += [{"measure": f"drift: {d.name}", "subject": d.stratum, "reference":
                  d.reference_value, "current": d.current_value, "change": d.shift,
                  "interval": None, "verdict": "drifted" if d.drifted else "same"}
                 for d in comparison.drift if d.drifted]
        publish_table("gate-comparison", rows,
                      f"Since the reference run {md_text(comparison.reference.run_id)} "
                      f"({comparison.reference.chosen.replace('_', ' ')})")
    return result
