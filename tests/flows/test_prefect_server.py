"""Against a real Prefect server (`stethoscope serve`, see conftest.py): the deployments of
prefect.yaml, the run form's validation, a deployed audit triggered through the API with
custom parameters and its artifacts read back, a failing audit's event and notification, and
path confinement of a deployed run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
import yaml

from stethoscope.flows.nightly_audit import AuditParameters
from stethoscope.flows.parameters import AuditModelParameters, CompareParameters
from stethoscope.flows.simulate_cohort import SimulateCohortParameters
from tests.flows.conftest import PROJECT, TINY_SETTINGS, PrefectStack

pytestmark = pytest.mark.integration

DEPLOYMENTS = {"nightly-model-audit": "nightly-model-audit", "audit-on-demand": "nightly-model-audit",
               "audit-model": "audit-model", "simulate-cohort": "simulate-cohort",
               "compare-architectures": "compare-architectures"}


def test_prefect_yaml_defaults_are_valid_parameters() -> None:
    """Fast, no server: every deployment's defaults validate against its parameter model
    (audit-model leaves model_file and run_id to the form)."""
    spec = yaml.safe_load((PROJECT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert set(by_name) == set(DEPLOYMENTS)
    for name in ("nightly-model-audit", "audit-on-demand"):
        AuditParameters.model_validate(by_name[name]["parameters"]["params"])
    AuditModelParameters.model_validate(
        {**by_name["audit-model"]["parameters"]["params"], "model_file": "m.keras", "run_id": "x"})
    SimulateCohortParameters.model_validate(by_name["simulate-cohort"]["parameters"]["params"])
    CompareParameters.model_validate(by_name["compare-architectures"]["parameters"]["params"])
    [schedule] = by_name["nightly-model-audit"]["schedules"]
    assert schedule["cron"] == "0 2 * * *" and schedule["timezone"]


def test_serve_deploys_prefect_yaml_to_a_process_pool(prefect_stack: PrefectStack) -> None:
    pool = prefect_stack.request("GET", "/work_pools/stethoscope").json()
    assert pool["type"] == "process"
    for name, flow in DEPLOYMENTS.items():
        deployment = prefect_stack.deployment(flow, name)
        assert deployment["work_pool_name"] == "stethoscope"
        assert deployment["enforce_parameter_schema"] is True
    nightly = prefect_stack.deployment("nightly-model-audit", "nightly-model-audit")
    [schedule] = nightly["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"]
    # the run form explains itself: descriptions and bounds come from the pydantic models
    schema = nightly["parameter_openapi_schema"]
    audit = schema["definitions"]["AuditParameters"]
    assert "cohort directory" in audit["properties"]["data_dir"]["description"]
    assert schema["definitions"]["TrainConfig"]["properties"]["epochs"]["minimum"] == 1


@pytest.mark.parametrize(("override", "field"), [
    ({"data_dir": "../../etc"}, "params.data_dir"),
    ({"runs_dir": "runs/../../x"}, "params.runs_dir"),
    ({"train": {"epochs": 0}}, "params.train.epochs"),
])
def test_the_api_rejects_bad_form_values_naming_the_field(
        prefect_stack: PrefectStack, override: dict, field: str) -> None:
    params = {**TINY_SETTINGS, "data_dir": str(prefect_stack.cohort),
              "runs_dir": str(prefect_stack.data_root / "runs"), **override}
    response = prefect_stack.create_run("nightly-model-audit", "audit-on-demand", {"params": params})
    assert response.status_code == 409
    assert f"Validation failed for field '{field}'" in response.json()["detail"]


@pytest.fixture(scope="module")
def on_demand_run(prefect_stack: PrefectStack) -> tuple[dict, Path]:
    """audit-on-demand triggered through the API with custom parameters, finished."""
    runs = prefect_stack.data_root / "runs-api"
    params = {**TINY_SETTINGS, "data_dir": str(prefect_stack.cohort), "runs_dir": str(runs),
              "run_id": "api-run"}
    response = prefect_stack.create_run("nightly-model-audit", "audit-on-demand", {"params": params})
    assert response.status_code == 201, response.text
    return prefect_stack.wait_for_run(response.json()["id"]), runs / "api-run"


def test_audit_on_demand_completes_and_publishes_its_artifacts(
        prefect_stack: PrefectStack, on_demand_run: tuple[dict, Path]) -> None:
    flow_run, run_dir = on_demand_run
    assert flow_run["state"]["type"] == "COMPLETED", prefect_stack.log_tail()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run_id"] == "api-run" and summary["data"]["users"] == 12
    assert (run_dir / "report.html").exists()
    assert (run_dir.parent / "history.parquet").exists()

    # stethoscope's own log lines (stage results, epochs) reach the run's logs in the UI
    logs = prefect_stack.request("POST", "/logs/filter", json={
        "logs": {"flow_run_id": {"any_": [flow_run["id"]]}}, "limit": 200}).json()
    ours = {entry["name"] for entry in logs if entry["name"].startswith("stethoscope.")}
    assert {"stethoscope.labels", "stethoscope.train"} <= ours, sorted({e["name"] for e in logs})

    artifacts = prefect_stack.artifacts(flow_run["id"])
    assert f"stethoscope run `api-run`: **{summary['status'].upper()}**" in artifacts["verdict"]["data"]
    assert artifacts["verdict"]["type"] == "markdown"
    for key in ("activations-layers", "analyze-strata"):
        assert artifacts[key]["type"] == "table"
    layers = json.loads(artifacts["activations-layers"]["data"])
    assert {row["layer"] for row in layers} >= {"conv_1", "bilstm"}
    assert artifacts["training-progress"]["type"] == "progress"
    assert artifacts["training-progress"]["data"] == 100
    for key in ("plot-training", "plot-activations", "plot-gradients"):
        # markdown embedding the plot: an image artifact prints its whole data URI in the UI
        assert artifacts[key]["type"] == "markdown"
        assert "](data:image/png;base64," in artifacts[key]["data"]
    # the links open through serve's report server, not as file: URLs
    report_link = artifacts["report"]["data"]
    assert report_link.startswith("[report.html of api-run](http://127.0.0.1:")
    url = report_link.split("(", 1)[1].rstrip(")")
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200 and "stethoscope run api-run" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    summary_url = artifacts["summary"]["data"].split("(", 1)[1].rstrip(")")
    assert httpx.get(summary_url, timeout=10).json()["run_id"] == "api-run"
    # nothing but report.html and summary.json is served
    history = url.replace("api-run/report.html", "history.parquet")
    assert httpx.get(history, timeout=10).status_code == 404


def test_a_failed_audit_emits_the_event_and_the_alert_notifies(
        prefect_stack: PrefectStack, on_demand_run: tuple[dict, Path]) -> None:
    """audit-model on the model just trained, with thresholds under which every unit counts as
    constant: status fail, the event names the model and the run, the automation notifies."""
    _, run_dir = on_demand_run
    model = run_dir / "model" / "model.keras"
    params = {"model_file": str(model), "data_dir": str(prefect_stack.cohort),
              "runs_dir": str(prefect_stack.data_root / "runs-audit"), "run_id": "failing-audit",
              "sequences": {"min_coverage": 0.3},
              "activations": {"max_user_weeks": 8, "constant_rtol": 1e6, "constant_atol": 1e6},
              "gradients": {"max_user_weeks": 8}}
    response = prefect_stack.create_run("audit-model", "audit-model", {"params": params})
    assert response.status_code == 201, response.text
    flow_run = prefect_stack.wait_for_run(response.json()["id"])
    assert flow_run["state"]["type"] == "COMPLETED", prefect_stack.log_tail()
    summary = json.loads((prefect_stack.data_root / "runs-audit" / "failing-audit" / "summary.json").read_text())
    assert summary["status"] == "fail"

    event = wait_for_event(prefect_stack, "stethoscope.audit.failed", "failing-audit")
    assert event["resource"]["prefect.resource.id"] == f"stethoscope.model.{model}"
    assert event["resource"]["stethoscope.flow-run-id"] == flow_run["id"]
    assert "CONSTANT_UNITS" in event["payload"]["codes"]
    related = {r["prefect.resource.id"] for r in event["related"]}
    assert {"stethoscope.run.failing-audit", f"prefect.flow-run.{flow_run['id']}"} <= related

    notification = prefect_stack.webhook.wait_for(lambda m: "failing-audit" in m.get("subject", ""))
    assert str(model) in notification["body"] and "CONSTANT_UNITS" in notification["body"]


def wait_for_event(stack: PrefectStack, name: str, run_id: str, timeout: float = 60) -> dict:
    """The event `name` of stethoscope run `run_id`; the server stores events a few seconds
    after they are emitted, so poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = stack.request("POST", "/events/filter", json={
            "filter": {"event": {"name": [name]}}, "limit": 50}).json()["events"]
        matching = [e for e in events if e["resource"].get("stethoscope.run-id") == run_id]
        if matching:
            assert len(matching) == 1, matching
            return matching[0]
        time.sleep(1)
    raise AssertionError(f"no {name} event of run {run_id} within {timeout} s")


def test_a_deployed_run_cannot_leave_the_data_roots(prefect_stack: PrefectStack) -> None:
    """An absolute path outside the roots passes the form's pattern, but the run refuses it."""
    params = {**TINY_SETTINGS, "data_dir": "/etc", "runs_dir": str(prefect_stack.data_root / "runs")}
    response = prefect_stack.create_run("nightly-model-audit", "audit-on-demand", {"params": params})
    assert response.status_code == 201, response.text
    flow_run = prefect_stack.wait_for_run(response.json()["id"])
    assert flow_run["state"]["type"] == "FAILED"
    assert "outside the allowed roots" in flow_run["state"]["message"]
    assert not (prefect_stack.data_root / "runs").exists()


def test_a_deployed_run_compares_itself_with_its_baseline(
        prefect_stack: PrefectStack, on_demand_run: tuple[dict, Path]) -> None:
    """Two deployed audit-model runs of one model: the second, pinned to the first through the
    form's `baseline`, sees every unit turn constant (thresholds) and reports it as a
    REGRESSION against the first, in summary.json and as the gate-comparison artifact."""
    _, run_dir = on_demand_run
    runs = prefect_stack.data_root / "runs-gate"
    base = {"model_file": str(run_dir / "model" / "model.keras"),
            "data_dir": str(prefect_stack.cohort), "runs_dir": str(runs),
            "sequences": {"min_coverage": 0.3}, "gradients": {"max_user_weeks": 8}}
    runs_made = []
    for run_id, extra in (("gate-1", {"activations": {"max_user_weeks": 8}}),
                          ("gate-2", {"baseline": str(runs / "gate-1"), "activations": {
                              "max_user_weeks": 8, "constant_rtol": 1e6, "constant_atol": 1e6}})):
        response = prefect_stack.create_run("audit-model", "audit-model",
                                            {"params": {**base, **extra, "run_id": run_id}})
        assert response.status_code == 201, response.text
        flow_run = prefect_stack.wait_for_run(response.json()["id"])
        assert flow_run["state"]["type"] == "COMPLETED", prefect_stack.log_tail()
        runs_made.append(flow_run)
    summary = json.loads((runs / "gate-2" / "summary.json").read_text())
    reference = summary["comparison"]["reference"]
    assert reference["run_id"] == "gate-1" and reference["chosen"] == "pinned"
    assert any(f["code"] == "REGRESSION" and "constant units" in f["message"]
               for f in summary["findings"])
    artifacts = prefect_stack.request("POST", "/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["gate-comparison"]}},
        "flow_runs": {"id": {"any_": [runs_made[1]["id"]]}}}).json()
    assert artifacts and any("constant_fraction" in json.dumps(a["data"]) for a in artifacts)


def test_a_deployed_comparison_of_two_tiny_variants(prefect_stack: PrefectStack) -> None:
    """compare-architectures from the API with two tiny variants: both run directories, the
    comparison files and the variant-comparison artifact."""
    out = prefect_stack.data_root / "compare"
    base = {key: value for key, value in TINY_SETTINGS.items()}
    params = {"data_dir": str(prefect_stack.cohort), "out_dir": str(out), "base": base,
              "variants": [{"name": "relu", "overrides": {"model": {"activation": "relu"}}},
                           {"name": "tanh", "overrides": {"model": {"activation": "tanh"}}}],
              "comparison": {"num_bootstrap": 200}}
    response = prefect_stack.create_run("compare-architectures", "compare-architectures",
                                        {"params": params})
    assert response.status_code == 201, response.text
    flow_run = prefect_stack.wait_for_run(response.json()["id"])
    assert flow_run["state"]["type"] == "COMPLETED", prefect_stack.log_tail()
    comparison = json.loads((out / "comparison.json").read_text())
    assert [v["name"] for v in comparison["variants"]] == ["relu", "tanh"]
    assert (out / "relu" / "report.html").is_file() and (out / "tanh" / "summary.json").is_file()
    assert (out / "relu" / "sequences").is_symlink()
    artifacts = prefect_stack.request("POST", "/artifacts/filter", json={
        "artifacts": {"key": {"any_": ["variant-comparison"]}},
        "flow_runs": {"id": {"any_": [flow_run["id"]]}}}).json()
    assert len(artifacts) == 1
