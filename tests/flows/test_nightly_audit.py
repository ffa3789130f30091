"""The nightly audit end to end on a tiny simulated cohort, on Prefect's embedded server.

One module-scoped run serves several checks: summary.json validates against the exported JSON
schema, the report exists and is self-contained, and a re-run of the same run id reuses every
finished stage (its outputs are not rewritten).
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from stethoscope.flows.cli import main
from stethoscope.flows.nightly_audit import AuditParameters, nightly_audit
from stethoscope.schemas.summary import SCHEMA_FILE, Summary
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from tests.flows.conftest import tiny_settings

pytestmark = pytest.mark.slow

TINY = tiny_settings(128)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cohort") / "c"
    simulate_cohort(SimulateConfig(users=16, weeks=1, seed=3), root)
    return root


@pytest.fixture(scope="module")
def finished_run(cohort: Path, tmp_path_factory, prefect_server):
    runs = tmp_path_factory.mktemp("runs")
    params = AuditParameters.model_validate(
        {**TINY, "data_dir": str(cohort), "runs_dir": str(runs), "run_id": "tiny"})
    outcome = nightly_audit(params)
    return params, outcome


def test_summary_validates_against_the_exported_schema(finished_run):
    _, outcome = finished_run
    summary = json.loads(outcome.summary.read_text())
    jsonschema.validate(summary, json.loads(SCHEMA_FILE.read_text()))
    assert Summary.model_validate(summary).status == outcome.status
    for key in ("schema_version", "run_id", "status", "started_at", "finished_at", "config", "data",
                "findings", "activations", "gradients", "synthetic", "predictions"):
        assert key in summary
    assert summary["data"]["rows_in"] == summary["data"]["rows_clean"] + summary["data"]["rows_quarantined"]
    assert summary["data"]["users"] == 16 and summary["data"]["user_weeks"] > 0
    assert {"conv_1", "bilstm"} <= {layer["name"] for layer in summary["activations"]["layers"]}
    assert summary["gradients"]["output_layer"] == "raw_output"
    assert summary["gradients"]["timestep"] == 64


def test_report_is_one_self_contained_file(finished_run):
    _, outcome = finished_run
    html = outcome.report.read_text()
    assert "data:image/png;base64," in html
    assert "<img" in html and 'src="/' not in html and 'src="file:' not in html


def test_exported_json_schema_is_current():
    assert json.loads(SCHEMA_FILE.read_text()) == Summary.model_json_schema()


def test_rerun_of_a_finished_run_reuses_its_stages(finished_run):
    params, outcome = finished_run
    run = outcome.summary.parent
    watched = [run / "validation" / "report.json", run / "labels" / "user_weeks.parquet",
               run / "sequences" / "index.parquet", run / "model" / "model.keras",
               run / "audits" / "gradients" / "profile.parquet"]
    before = {p: p.stat().st_mtime_ns for p in watched}
    again = nightly_audit(params)
    assert again.status == outcome.status
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_cli_run_rejects_a_bad_config_with_exit_2(cohort, tmp_path, capsys, prefect_server):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  num_steps: 64\n")  # disagrees with labels/sequences T
    code = main(["run", "--data", str(cohort), "--out", str(tmp_path / "r"), "--config", str(config)])
    assert code == 2
    assert "sequence length T must agree" in capsys.readouterr().err


def test_audit_model_on_a_model_saved_by_a_previous_run(finished_run, cohort, tmp_path):
    _, outcome = finished_run
    model = outcome.summary.parent / "model" / "model.keras"
    code = main(["audit-model", "--model", str(model), "--data", str(cohort),
                 "--out", str(tmp_path / "audit")])
    assert code in (0, 3)
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["gradients"]["horizon_steps_back"] is not None
    assert summary["activations"]["layers"]
    assert summary["predictions"]["tasks"] == []  # no training, no predictions


def test_analyze_alone_on_a_predictions_file_written_by_hand(tmp_path, prefect_server):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    users = np.repeat([f"u{i:03d}" for i in range(120)], 2)
    y = np.repeat(rng.integers(0, 2, 120), 2)
    frame = pd.DataFrame({
        "user_id": users, "week_start": pd.to_datetime(np.tile(["2024-03-04", "2024-03-11"], 120)).date,
        "task": "diabetes", "split": "test", "y_true": y.astype("int8"),
        "y_score": np.clip(0.3 * y + rng.uniform(0, 0.7, y.size), 0, 1),
        "device": "apple_watch_series_4", "device_generation": np.int16(4),
        "age": np.repeat(rng.uniform(20, 80, 120), 2), "sex": np.repeat(rng.choice(["F", "M"], 120), 2),
    })
    file = tmp_path / "predictions.parquet"
    frame.to_parquet(file, index=False)
    code = main(["analyze", "--predictions", str(file), "--out", str(tmp_path / "a")])
    assert code in (0, 3)
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    (task,) = summary["predictions"]["tasks"]
    assert task["task"] == "diabetes" and task["n"] == 240 and task["auroc"] > 0.7
