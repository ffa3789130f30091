"""The analyze stage's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.tasks.analyze.analysis import analyze_predictions
from stethoscope.tasks.analyze.config import AnalysisResult, AnalyzeConfig
from stethoscope.tasks.shared.artifacts import publish_table


@task(name="analyze", task_run_name="analyze {predictions_file.name}")
def analyze_task(predictions_file: Path, out_dir: Path, config: AnalyzeConfig,
                 sensor_logs_dir: Path | None = None,
                 users_file: Path | None = None, require_rows: bool = False) -> AnalysisResult:
    """Prefect shell: analyse predictions, publish the strata as a table artifact. The flow
    applies the retry and cache policy (`tasks.shared.policy.stage_options`)."""
    result = analyze_predictions(predictions_file, out_dir, config, sensor_logs_dir, users_file,
                                 require_rows)
    publish_table("analyze-strata", [s.model_dump(mode="json") for s in result.strata],
                  "AUROC per stratum vs the rest of the cohort (p_value adjusted).")
    return result
