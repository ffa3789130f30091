"""A real Prefect stack for the integration tests: `stethoscope serve` on a free loopback port.

One session-scoped `prefect_stack` starts `stethoscope serve` as a subprocess — a Prefect
server (PREFECT_HOME in a temporary directory, analytics off, the V1 UI), the process work
pool, every deployment of prefect.yaml, a worker, the report server and the failure alert
pointing at a webhook receiver of the test — and stops it at the end with SIGINT, as Ctrl-C
would, then checks that the server and the worker it started are gone (killing them by PID if
not, and failing). The worker may only touch a temporary data root with a tiny cohort.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

PROJECT = Path(__file__).resolve().parents[2]
READY = "stethoscope serve: ready"
STARTUP_TIMEOUT = 300
RUN_TIMEOUT = 420
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def tiny_settings(num_steps: int) -> dict[str, Any]:
    """Audit settings small enough for a run of well under a minute on 2 cores."""
    return {
        "labels": {"num_bins": num_steps},
        "sequences": {"num_steps": num_steps, "min_coverage": 0.3},
        "model": {"num_steps": num_steps, "conv_filters": [4], "units": 4},
        "train": {"epochs": 1, "batch_size": 8},
        "activations": {"max_user_weeks": 8},
        "gradients": {"max_user_weeks": 8},
        "analyze": {"num_bootstrap": 100, "num_permutations": 100},
    }


TINY_SETTINGS = tiny_settings(256)  # a deployed run through the server


@dataclass
class Webhook:
    """A loopback HTTP receiver: the notifications the alert sends land in `received`."""

    url: str
    received: list[dict] = field(default_factory=list)

    def wait_for(self, predicate, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.received):
                if predicate(message):
                    return message
            time.sleep(0.5)
        raise AssertionError(f"no matching notification within {timeout} s: {self.received}")


@dataclass
class PrefectStack:
    api: str  # http://127.0.0.1:<port>/api
    ui: str
    data_root: Path  # the worker's only allowed root
    cohort: Path
    webhook: Webhook
    pids: dict[str, int]
    log: Path

    def log_tail(self, chars: int = 6000) -> str:
        """The end of serve's output (the worker logs every flow run there)."""
        return self.log.read_text(errors="replace")[-chars:]

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call; retried while the server's SQLite database is busy (503), as
        Prefect's own client does."""
        with httpx.Client(base_url=self.api, timeout=30) as client:
            for _ in range(20):
                response = client.request(method, path, **kwargs)
                if response.status_code != 503:
                    return response
                time.sleep(1)
        return response

    def deployment(self, flow: str, name: str) -> dict:
        response = self.request("GET", f"/deployments/name/{flow}/{name}")
        response.raise_for_status()
        return response.json()

    def create_run(self, flow: str, name: str, parameters: dict) -> httpx.Response:
        deployment = self.deployment(flow, name)
        return self.request("POST", f"/deployments/{deployment['id']}/create_flow_run",
                            json={"parameters": parameters})

    def wait_for_run(self, flow_run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.request("GET", f"/flow_runs/{flow_run_id}").json()
            if run["state"] and run["state"]["type"] in TERMINAL:
                return run
            time.sleep(2)
        raise AssertionError(f"flow run {flow_run_id} did not finish within {timeout} s; "
                             f"serve log tail:\n{self.log_tail()}")

    def artifacts(self, flow_run_id: str) -> dict[str, dict]:
        """The run's artifacts by key (the last version of each)."""
        response = self.request("POST", "/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC"})
        response.raise_for_status()
        latest: dict[str, dict] = {}
        for artifact in response.json():
            latest.setdefault(artifact["key"], artifact)
        return latest


@pytest.fixture(scope="session")
def prefect_stack(tmp_path_factory) -> Iterator[PrefectStack]:
    from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig

    root = tmp_path_factory.mktemp("stack")
    data_root = root / "data"
    cohort = simulate_cohort(SimulateConfig(users=12, weeks=1, seed=5), data_root / "cohort").paths.root
    webhook, hook_server = _start_webhook()
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env.update({
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_V2_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "STETHOSCOPE_DATA_ROOTS": str(data_root),
        "STETHOSCOPE_PROGRESS": "0",
    })
    log = root / "serve.log"
    pids: dict[str, int] = {}
    with open(log, "wb") as output:
        serve = subprocess.Popen(
            [sys.executable, "-m", "stethoscope.flows.cli", "serve", "--port", str(port), "--no-demo-cohort",
             "--alert-webhook", webhook.url],
            cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        text = _wait_for_line(log, READY, serve, STARTUP_TIMEOUT)
        pids.update((name, int(pid)) for name, pid in
                    re.findall(r"^(Prefect server|worker): pid (\d+)", text, flags=re.M))
        assert set(pids) == {"Prefect server", "worker"}, text
        yield PrefectStack(api=f"http://127.0.0.1:{port}/api", ui=f"http://127.0.0.1:{port}",
                           data_root=data_root, cohort=cohort, webhook=webhook, pids=pids, log=log)
    finally:
        exit_code, survivors = stop_serve(serve, hook_server, pids)
    assert exit_code == 0, f"serve exited {exit_code}:\n{log.read_text()[-3000:]}"
    assert not survivors, f"still running after serve stopped (killed now): {survivors}"


def stop_serve(serve: subprocess.Popen, hook_server: Any, pids: dict[str, int]
               ) -> tuple[int, dict[str, int]]:
    """Ctrl-C to `stethoscope serve` (killed after 90 s), the webhook receiver shut down, and
    whatever of `pids` still runs killed: (serve's exit code, the survivors)."""
    serve.send_signal(signal.SIGINT)  # what Ctrl-C does
    try:
        exit_code = serve.wait(90)
    except subprocess.TimeoutExpired:
        serve.kill()
        exit_code = serve.wait()
    hook_server.shutdown()
    return exit_code, _stop_survivors(pids)


def _stop_survivors(pids: dict[str, int]) -> dict[str, int]:
    survivors = {}
    for name, pid in pids.items():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        survivors[name] = pid
        os.kill(pid, signal.SIGKILL)
    return survivors


def _wait_for_line(log: Path, line: str, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if line in text:
            return text
        if process.poll() is not None:
            raise AssertionError(f"stethoscope serve exited {process.returncode}:\n{text[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"stethoscope serve not ready within {timeout} s:\n"
                         f"{log.read_text(errors='replace')[-4000:]}")


def _free_port() -> int:
    """A loopback port with nothing listening, and nothing on the next one (the report server)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        with socket.socket() as neighbour:
            if neighbour.connect_ex(("127.0.0.1", port + 1)) != 0:
                return port
    raise RuntimeError("no free loopback port pair")


def _start_webhook() -> tuple[Webhook, ThreadingHTTPServer]:
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                received.append(json.loads(body))
            except ValueError:
                received.append({"raw": body.decode(errors="replace")})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Webhook(url=f"http://127.0.0.1:{server.server_address[1]}/hook", received=received), server
