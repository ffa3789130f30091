"""The Prefect UI in a real browser (Debian's chromium driven by Playwright, no browser
download): find the `audit-on-demand` deployment, fill its run form, be told about a bad path,
submit custom parameters, watch the run complete and find its artifacts. Every request to
anything but loopback is blocked, and the test asserts there was none.

With STETHOSCOPE_UPDATE_DOCS=1 the screenshots also go to docs/ (the README shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.flows.conftest import PROJECT, RUN_TIMEOUT, PrefectStack

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DOCS = PROJECT / "docs"


@pytest.fixture
def page(tmp_path: Path):
    if not CHROMIUM.exists():
        message = "Debian's chromium is missing: apt-get install -y chromium"
        if os.environ.get("STETHOSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    off_machine: list[str] = []

    def loopback_only(route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK or route.request.url.startswith("data:"):
            route.continue_()
        else:
            off_machine.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.route("**/*", loopback_only)
        page = context.new_page()
        page.set_default_timeout(90_000)  # 2 shared cores
        yield page
        browser.close()
    assert not off_machine, f"the UI tried to reach off the machine: {off_machine}"


def form_field(page, label: str):
    """The input of the innermost form property labelled `label` (optional ones say so)."""
    name = page.locator(".schema-form-property__label",
                        has_text=re.compile(rf"^{re.escape(label)}( \(Optional\))?$"))
    return page.locator(".schema-form-property", has=name).last


def created_by_the_form(stack: PrefectStack, run_id: str) -> str:
    """The id of the flow run the form created (the one with our custom run_id)."""
    deployment = stack.deployment("nightly-model-audit", "audit-on-demand")
    runs = stack.request("POST", "/flow_runs/filter", json={
        "flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}).json()
    [flow_run] = [r for r in runs if r["parameters"]["params"].get("run_id") == run_id]
    return flow_run["id"]


def screenshot(page, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("STETHOSCOPE_UPDATE_DOCS") == "1":
        DOCS.mkdir(exist_ok=True)
        shutil.copy(path, DOCS / name)


def test_a_run_started_from_the_ui_form_completes_with_its_artifacts(
        prefect_stack: PrefectStack, page, tmp_path: Path) -> None:
    runs = prefect_stack.data_root / "runs-ui"
    page.goto(f"{prefect_stack.ui}/deployments")
    page.get_by_role("link", name="audit-on-demand").first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("Custom run").click()

    # a path that climbs out of the roots: the form refuses it and names the field
    form_field(page, "Data Dir").locator("textarea").fill("../../etc")
    page.get_by_role("button", name="Submit").click()
    page.get_by_text("Validation failed for field 'params.data_dir'").first.wait_for()

    form_field(page, "Data Dir").locator("textarea").fill(str(prefect_stack.cohort))
    form_field(page, "Runs Dir").locator("textarea").fill(str(runs))
    run_id = form_field(page, "Run Id")
    run_id.get_by_role("button", name="str", exact=True).click()
    run_id.locator("textarea, input").first.fill("from-the-form")
    form_field(page, "Data Dir").scroll_into_view_if_needed()
    page.mouse.wheel(0, -400)
    screenshot(page, tmp_path, "prefect-run-form.png")
    page.get_by_role("button", name="Submit").click()

    # the UI goes back to the deployment, whose run list shows the new run
    page.wait_for_url(re.compile(r"/deployments/deployment/[0-9a-f-]{36}(\?tab=Runs)?$"))
    flow_run_id = created_by_the_form(prefect_stack, "from-the-form")
    name = prefect_stack.request("GET", f"/flow_runs/{flow_run_id}").json()["name"]
    page.get_by_text(name).first.wait_for()
    flow_run = prefect_stack.wait_for_run(flow_run_id, RUN_TIMEOUT)
    assert flow_run["state"]["type"] == "COMPLETED", prefect_stack.log_tail()
    assert flow_run["parameters"]["params"]["run_id"] == "from-the-form"
    summary = json.loads((runs / "from-the-form" / "summary.json").read_text())
    assert summary["run_id"] == "from-the-form"

    # the browser sees it too: the state badge and the artifacts of the run
    page.goto(f"{prefect_stack.ui}/runs/flow-run/{flow_run_id}")
    page.get_by_text("Completed", exact=True).first.wait_for()
    artifacts_tab = page.get_by_text("Artifacts", exact=True).first
    artifacts_tab.click()
    for key in ("verdict", "report", "summary", "plot-gradients", "activations-layers",
                "analyze-strata", "training-progress"):
        page.locator(".artifact-card__title", has_text=re.compile(f"^{key}$")).wait_for()
    artifacts_tab.evaluate("tab => tab.scrollIntoView({block: 'start'})")
    screenshot(page, tmp_path, "prefect-run-artifacts.png")
