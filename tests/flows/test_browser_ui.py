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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.flows.conftest import PROJECT, RUN_TIMEOUT, TINY_SETTINGS, PrefectStack

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DOCS = PROJECT / "docs"


@contextmanager
def browser_page(off_machine: list[str]) -> Iterator[Any]:
    """A page of Debian's chromium in which every request to anything but loopback (and data:
    URIs) is aborted, its URL appended to `off_machine`."""
    if not CHROMIUM.exists():
        message = "Debian's chromium is missing: apt-get install -y chromium"
        if os.environ.get("STETHOSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

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


@pytest.fixture
def page():
    """The V1 UI's page: no request may leave the machine."""
    off_machine: list[str] = []
    with browser_page(off_machine) as page:
        yield page
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
# --- Prefect's V2 UI -----------------------------------------------------------------------
#
# `stethoscope serve` makes V1 the default UI, but the server serves both: V2 lives under /v2
# (prefect/server/api/server.py, create_ui_app: `/` and `/v2` are mounted whatever
# PREFECT_SERVER_UI_V2_ENABLED says; that setting only picks where `/` leads), and V2 is what a
# team sees by default on its own Prefect server. So the V2 test uses the same stack.

# V2 initialises Amplitude on every page load whatever the server's analytics setting; the SDK
# then fetches its remote configuration from this host (several times a page: it retries).
# Events (api2.amplitude.com) are sent only when the server's analytics are on, and they are
# off here. Its fonts (Geist) and every asset are served from /v2: nothing else leaves.
V2_OFF_MACHINE_HOSTS = {"sr-client-cfg.amplitude.com"}
BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{200,}")  # a data URI's payload, printed as text


@dataclass
class BlockedPage:
    """A browser page whose off-machine requests are aborted and collected, not forbidden."""

    page: Any
    off_machine: list[str]

    def hosts(self) -> set[str]:
        return {urlsplit(url).hostname or url for url in self.off_machine}


@dataclass(frozen=True)
class AuditedRun:
    flow_run_id: str
    summary: dict


@pytest.fixture
def v2_page(tmp_path: Path):
    off_machine: list[str] = []
    with browser_page(off_machine) as page:
        yield BlockedPage(page, off_machine)


@pytest.fixture(scope="module")
def audited_run(prefect_stack: PrefectStack) -> AuditedRun:
    """A completed audit-on-demand run: the form test's, when it ran before in this module
    (no second audit), else one started through the API (~1 minute on 2 cores)."""
    runs = prefect_stack.request("POST", "/flow_runs/filter", json={
        "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}}).json()
    by_run_id = {r["parameters"].get("params", {}).get("run_id"): r for r in runs}
    if (form_run := by_run_id.get("from-the-form")) is not None:
        summary = prefect_stack.data_root / "runs-ui" / "from-the-form" / "summary.json"
        return AuditedRun(form_run["id"], json.loads(summary.read_text()))
    runs_dir = prefect_stack.data_root / "runs-v2"
    response = prefect_stack.create_run("nightly-model-audit", "audit-on-demand", {"params": {
        **TINY_SETTINGS, "data_dir": str(prefect_stack.cohort), "runs_dir": str(runs_dir),
        "run_id": "for-the-v2-ui"}})
    response.raise_for_status()
    flow_run = prefect_stack.wait_for_run(response.json()["id"], RUN_TIMEOUT)
    assert flow_run["state"]["type"] == "COMPLETED", prefect_stack.log_tail()
    return AuditedRun(flow_run["id"], json.loads((runs_dir / "for-the-v2-ui" / "summary.json").read_text()))


def test_the_v2_ui_renders_the_runs_plots_verdict_and_tables(
        prefect_stack: PrefectStack, audited_run: AuditedRun, v2_page: BlockedPage,
        tmp_path: Path) -> None:
    page, ui = v2_page.page, f"{prefect_stack.ui}/v2"
    artifacts = prefect_stack.artifacts(audited_run.flow_run_id)
    images = {key: a for key, a in artifacts.items()
              if a["type"] == "markdown" and "](data:image/png;base64," in a["data"]}
    tables = {key: a for key, a in artifacts.items() if a["type"] == "table"}
    per_task = [key for key in images if key.startswith("plot-predictions-")]
    assert {"plot-training", "plot-gradients"} <= set(images) and len(per_task) >= 2, sorted(artifacts)
    assert {"analyze-strata", "activations-layers"} <= set(tables), sorted(artifacts)

    # the run's Artifacts tab lists every artifact, one plot artifact per task
    page.goto(f"{ui}/runs/flow-run/{audited_run.flow_run_id}")
    page.get_by_role("tab", name="Artifacts").click()
    for key in artifacts:
        page.get_by_text(key, exact=True).first.wait_for()
    assert_nothing_spills(page, "the run's artifacts tab")
    page.get_by_role("tab", name="Artifacts").evaluate("tab => tab.scrollIntoView({block: 'start'})")
    screenshot(page, tmp_path, "prefect-v2-run-artifacts.png")

    # a card opens its artifact
    page.get_by_text("verdict", exact=True).first.click()
    page.wait_for_url(f"**/v2/artifacts/artifact/{artifacts['verdict']['id']}**")
    page.get_by_text(artifacts["verdict"]["id"], exact=True).wait_for()
    eventually(check_verdict, page, audited_run.summary)
    screenshot(page, tmp_path, "prefect-v2-verdict.png")

    for key, artifact in images.items():
        open_artifact(page, artifact)
        num_images = artifact["data"].count("](data:image/png;base64,")
        eventually(check_images, page, key, num_images)
        if key == "plot-gradients":
            screenshot(page, tmp_path, "prefect-v2-plot.png")

    for key, artifact in tables.items():
        open_artifact(page, artifact)
        rows = json.loads(artifact["data"])
        eventually(check_table, page, key, rows)
        if key == "analyze-strata":
            screenshot(page, tmp_path, "prefect-v2-table.png")

    # blocked, and the pages above rendered all the same
    assert v2_page.hosts() <= V2_OFF_MACHINE_HOSTS, (
        f"V2 reached for new hosts: {sorted(v2_page.hosts() - V2_OFF_MACHINE_HOSTS)} "
        f"(expected at most {sorted(V2_OFF_MACHINE_HOSTS)}): {v2_page.off_machine[:5]}")


def open_artifact(page, artifact: dict) -> None:
    """The artifact's page, reached inside the app as a link would (a full load of V2 takes
    ~3 s here, this ~0.1 s), once its header names this artifact's id."""
    page.evaluate("""path => { history.pushState({}, '', path);
        dispatchEvent(new PopStateEvent('popstate', {state: {}})) }""",
                  f"/v2/artifacts/artifact/{artifact['id']}")
    page.get_by_text(artifact["id"], exact=True).wait_for()


def eventually(check: Callable[..., None], *args: Any, seconds: float = 20) -> None:
    """`check(*args)` until it passes, for `seconds` at most (then its last failure): V2
    re-renders an artifact now and then (its markdown renderer loads lazily: for a moment the
    pane is empty)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check(*args)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def check_images(page, key: str, num_images: int) -> None:
    """Every embedded PNG of the artifact decoded (naturalWidth > 0) and fits the pane; no
    data URI shows as text."""
    display = page.locator("[data-testid=markdown-display]")
    display.locator("img").nth(num_images - 1).wait_for()
    display.evaluate("d => Promise.all([...d.querySelectorAll('img')].map(i => i.decode().catch(() => null)))")
    shown = display.evaluate("""d => [...d.querySelectorAll('img')].map(i => ({
        src: i.getAttribute('src').slice(0, 30), complete: i.complete, width: i.naturalWidth,
        right: i.getBoundingClientRect().right, paneRight: d.getBoundingClientRect().right}))""")
    assert len(shown) == num_images, (key, shown)
    for image in shown:
        assert image["src"].startswith("data:image/png;base64,"), (key, image)
        assert image["complete"] and image["width"] > 0, f"{key}: an image did not decode: {image}"
        assert image["right"] <= image["paneRight"] + 1, f"{key}: an image runs off its pane: {image}"
    text = page.evaluate("document.body.innerText")
    assert "base64" not in text and not BASE64_RUN.search(text), f"{key}: a data URI shows as text"
    assert_nothing_spills(page, key)


def check_verdict(page, summary: dict) -> None:
    """The verdict's every finding readable as written in summary.json (its code, and the
    message and recommendation of errors and warnings), nothing cut off or escaped."""
    display = page.locator("[data-testid=markdown-display]")
    display.get_by_text(f"stethoscope run {summary['run_id']}").wait_for()
    text = " ".join(display.inner_text().split())
    for finding in summary["findings"]:
        expected = [finding["code"]]
        if finding["severity"] != "info":
            expected += [finding["message"], finding["recommendation"]]
        for part in expected:
            assert " ".join(part.split()) in text, f"verdict: {part!r} is not shown as written"
    assert "\\" not in text and "&lt;" not in text and "&amp;" not in text, "verdict: escapes show"
    cut = display.evaluate("""d => [d, ...d.querySelectorAll('p, li, h2')]
        .filter(e => e.scrollWidth > e.clientWidth + 1 || e.getBoundingClientRect().right > innerWidth)
        .map(e => e.innerText.slice(0, 80))""")
    assert not cut, f"verdict: cut off or running off the page: {cut}"
    assert_nothing_spills(page, "verdict")


def check_table(page, key: str, rows: list[dict]) -> None:
    """The table's every column as a header, its first page of rows, and the columns beyond
    the pane reachable by scrolling the table (not cut off)."""
    table = page.locator("[data-testid=table-display] table")
    table.locator("tbody tr").first.wait_for()
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert headers == list(rows[0]), f"{key}: columns {headers}, expected {list(rows[0])}"
    assert table.locator("tbody tr").count() == min(len(rows), 10), key
    first = " ".join(table.locator("tbody tr").first.all_inner_texts())
    shown = [v for v in rows[0].values() if isinstance(v, str) and v]
    assert all(v in first for v in shown), f"{key}: first row {first!r}, expected {shown}"
    clipped = table.evaluate("""t => { const box = t.closest('[data-slot=table-container]');
        return box.scrollWidth > box.clientWidth && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX) }""")
    assert not clipped, f"{key}: columns beyond the pane cannot be reached"
    assert_nothing_spills(page, key)


def assert_nothing_spills(page, what: str) -> None:
    """The page itself does not scroll sideways: nothing runs over its right edge."""
    widths = page.evaluate("[document.scrollingElement.scrollWidth, document.scrollingElement.clientWidth]")
    assert widths[0] <= widths[1], f"{what}: the page is {widths[0]} px wide in a {widths[1]} px window"
