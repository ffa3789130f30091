"""`stethoscope serve`: everything the Prefect UI needs, on this machine, in one command.

It starts a Prefect server on 127.0.0.1, creates the process work pool, deploys every
deployment of prefect.yaml, simulates the demo cohort that `audit-on-demand` audits by default
(when it is missing), starts a worker, serves the runs' report.html and summary.json to the
browser (the artifacts link there: a web page cannot open file: links), optionally installs
the failure alert, and prints the UI address. Ctrl-C (or SIGTERM) stops everything it started,
worker first, each by its process id.

The server's logs live in PREFECT_HOME (default: `<project>/.prefect`), and so does its SQLite
database unless `--database-url` names a PostgreSQL one (a team's server: server_db.py); server
analytics are off, and the UI at / is Prefect's V1 UI, which makes no request off the machine
(V2, served at /v2 all the same, fetches Amplitude's configuration from the browser). A
team's server binds to another address with `--host` (the API and UI have no authentication)
and may run no worker of its own (`--no-worker`): the workers then run on other machines.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import cast
from urllib.parse import unquote, urlsplit

from stethoscope.flows import server_db
from stethoscope.flows.roots import ROOTS_ENV
from stethoscope.schemas.errors import UsageError

HOST = "127.0.0.1"  # the default bind address, and where this machine's own clients connect
WILDCARDS = ("0.0.0.0", "::")
POOL = "stethoscope"  # the work pool of every deployment in prefect.yaml
DEMO_COHORT = Path("cohorts") / "demo"
ALERT_FILE = Path("automations") / "audit-failed.yaml"
ALERT_BLOCK = "stethoscope-audit-alerts"
REPORT_FILES = {"report.html": "text/html; charset=utf-8", "summary.json": "application/json",
                "report_gallery.html": "text/html; charset=utf-8"}
# report.html is self-contained: it needs inline styles and data: images, nothing else.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class ServeError(RuntimeError):
    """A step of `serve` failed (the server did not start, deploying failed, ...)."""


@dataclass
class ServeOptions:
    port: int = 4200
    project_dir: Path = field(default_factory=lambda: project_dir())
    demo_cohort: bool = True
    alert_webhook: str | None = None
    reports_port: int | None = None  # default: port + 1, or any free port
    host: str = HOST  # the server's bind address; anything but loopback is reachable by others
    database_url: str | None = None  # default: PREFECT_SERVER_DATABASE_CONNECTION_URL, or SQLite
    worker: bool = True  # False: a server for workers on other machines only


def project_dir() -> Path:
    """The working directory, which must hold prefect.yaml: serve writes cohorts/, runs/ and
    .prefect/ there, so it never starts anywhere else (e.g. in the install directory)."""
    here = Path.cwd()
    if not (here / "prefect.yaml").is_file():
        raise UsageError(f"{here} has no prefect.yaml, so it is not a stethoscope project "
                         "directory: cd into the clone of stethoscope (the directory with "
                         "prefect.yaml and flows/) and run `stethoscope serve` there")
    return here.resolve()


def prefect_environment(options: ServeOptions) -> dict[str, str]:
    """The environment of the CLI calls and the worker (and so of every run): Prefect's
    database settings removed, they are the server's alone (server_environment)."""
    env = server_db.without_database_settings(os.environ)
    env.setdefault("PREFECT_HOME", str(options.project_dir / ".prefect"))
    env["PREFECT_API_URL"] = f"http://{_url_host(local_address(options.host))}:{options.port}/api"
    env["PREFECT_SERVER_API_HOST"] = options.host
    env["PREFECT_SERVER_API_PORT"] = str(options.port)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "stethoscope")  # our log lines in the UI
    env.setdefault("PREFECT_SERVER_UI_V2_ENABLED", "false")  # V1 at /: no request off the machine
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def server_environment(options: ServeOptions, env: dict[str, str]) -> dict[str, str]:
    """The server's environment: `env` plus the database URL (given, or inherited from ours),
    and, when others can reach it, the API address their browsers load the UI's data from."""
    server = {**env, **server_db.database_settings(os.environ)}
    if options.database_url is not None:
        server.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
        server[server_db.URL_ENV] = options.database_url
    if not _is_loopback(options.host):
        server.setdefault("PREFECT_SERVER_UI_API_URL", f"{team_url(options)}/api")
    return server


def local_address(host: str) -> str:
    """Where clients on this machine reach a server bound to `host`."""
    return HOST if host in WILDCARDS else host


def team_url(options: ServeOptions) -> str:
    """The server's address for other machines: the host name when bound to every address."""
    name = socket.getfqdn() if options.host in WILDCARDS else options.host
    return f"http://{_url_host(name)}:{options.port}"


class Stack:
    """The processes (and the report server) `serve` started, stopped in reverse order."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.report_server: ThreadingHTTPServer | None = None

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path,
              log: Path | None = None) -> subprocess.Popen:
        output = open(log, "ab") if log else None  # noqa: SIM115 - the child keeps its own copy
        try:
            process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=output, stderr=output,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if output:
                output.close()
        self.processes.append((name, process))
        return process

    def dead(self) -> list[str]:
        return [f"{name} (exit {p.returncode})" for name, p in self.processes if p.poll() is not None]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to each process group we started (worker before server), SIGKILL after
        `timeout`; each group is the one whose leader has the process id we started."""
        if self.report_server is not None:
            self.report_server.shutdown()
            self.report_server.server_close()
        for name, process in reversed(self.processes):
            if process.poll() is None:
                print(f"stopping {name} (pid {process.pid})", flush=True)
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(process.pid, signal.SIGKILL)
                    process.wait()
        self.processes.clear()


def serve(options: ServeOptions) -> int:
    """Start everything, print the UI address, wait for Ctrl-C; return the exit status."""
    project = options.project_dir
    if options.database_url is not None:
        server_db.check_url(options.database_url)
    env = prefect_environment(options)
    server_env = server_environment(options, env)
    database_url = server_db.configured_url(server_env)
    home = Path(env["PREFECT_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    prefect = [sys.executable, "-m", "prefect"]
    stack = Stack()
    # Our own handlers, also when started with SIGINT ignored (a background job): the children
    # then start with the default disposition and stop when asked.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    local = f"http://{_url_host(local_address(options.host))}:{options.port}"
    try:
        _refuse_busy_port(local_address(options.host), options.port)
        if not _is_loopback(options.host):
            print(f"WARNING: the Prefect server listens on {options.host}:{options.port}: the API "
                  "and the UI have no authentication, so anyone who can reach that address can "
                  "start, change and delete runs and deployments. Allow only your team's machines "
                  "(firewall, VPN).", file=sys.stderr, flush=True)
        server = stack.start("Prefect server", [*prefect, "server", "start", "--host", options.host,
                                                "--port", str(options.port)], server_env, project,
                             log=home / "server.log")
        _wait_healthy(f"{local}/api/health", server, home / "server.log", database_url)
        print(f"Prefect server: pid {server.pid}, log {home / 'server.log'}", flush=True)
        print(f"Prefect database: {server_db.describe(database_url, str(home))}", flush=True)
        _run([*prefect, "work-pool", "create", POOL, "--type", "process", "--overwrite"],
             env, project, "create the work pool")
        _run([*prefect, "--no-prompt", "deploy", "--all"], env, project, "deploy prefect.yaml")
        if options.demo_cohort:
            _ensure_demo_cohort(project / DEMO_COHORT)
        reports = _start_report_server(stack, options, project)
        env["STETHOSCOPE_REPORTS_URL"] = reports
        if options.alert_webhook:
            print(install_alert(options.alert_webhook, project / ALERT_FILE, env["PREFECT_API_URL"]),
                  flush=True)
        if options.worker:
            worker = stack.start("worker", [*prefect, "worker", "start", "--pool", POOL,
                                            "--type", "process"], env, project)
            print(f"worker: pid {worker.pid}, pool {POOL}", flush=True)
        else:
            print(f"worker: none here (--no-worker); runs wait for a worker of pool {POOL}",
                  flush=True)
        ui = local if _is_loopback(options.host) else team_url(options)
        team = ("" if _is_loopback(options.host) else
                f"  workers on other machines: PREFECT_API_URL={ui}/api "
                f"prefect worker start --pool {POOL}\n")
        print(f"\nstethoscope serve: ready. Prefect UI: {ui}\n"
              f"  run one now: {ui}/deployments -> audit-on-demand -> Run -> Custom run\n"
              f"{team}"
              f"  reports are served at {reports}/<path of the run>/report.html\n"
              "  Ctrl-C stops the worker and the server.\n", flush=True)
        while not stack.dead():
            time.sleep(1)
        print(f"stethoscope serve: {', '.join(stack.dead())} stopped unexpectedly", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstethoscope serve: stopping", flush=True)
        return 0
    except ServeError as exc:  # a step failed: say which, with its output; no traceback
        print(f"stethoscope serve: {server_db.redact(str(exc), database_url)}", file=sys.stderr,
              flush=True)
        return 1
    finally:
        stack.stop()


def install_alert(webhook_url: str, automation_file: Path, api_url: str) -> str:
    """Create (or replace) a webhook notification block and the automation of
    `automation_file`, its notification actions sending through that block; return a line
    saying what was done."""
    import yaml
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.exceptions import PrefectException
    from prefect.settings import PREFECT_API_URL, temporary_settings

    spec = yaml.safe_load(automation_file.read_text())
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        hook = CustomWebhookNotificationBlock(
            name="stethoscope", url=webhook_url, allow_private_urls=_is_private(webhook_url),
            json_data={"subject": "{{subject}}", "body": "{{body}}"})
        block_id = hook.save(ALERT_BLOCK, overwrite=True)
        for action in spec["actions"]:
            if action["type"] == "send-notification":
                action["block_document_id"] = str(block_id)
        # casts: called from sync code, prefect's async_dispatch methods return the value itself
        # (their annotations also allow a coroutine, for async callers)
        with contextlib.suppress(PrefectException, ValueError):  # not installed yet
            cast(Automation, Automation.read(name=spec["name"])).delete()
        automation = cast(Automation, Automation.model_validate(spec).create())
    return (f"alert: automation '{automation.name}' ({automation.id}) sends failed audits to "
            f"{webhook_url} through block {ALERT_BLOCK}")


# --- private helpers --------------------------------------------------------------------


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 address in a URL


def _refuse_busy_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        if probe.connect_ex((host, port)) == 0:
            raise UsageError(f"{host}:{port} is already in use (another Prefect server?); "
                             "stop it, or pass --port")


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, database_url: str | None,
                  timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            tail = server_db.redact(tail, database_url)
            raise ServeError(f"the Prefect server exited ({process.returncode}) while starting:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise ServeError(f"the Prefect server did not answer {url} within {timeout:.0f} s; see {log}")


def _run(argv: list[str], env: dict[str, str], cwd: Path, what: str) -> str:
    print(f"{what} ...", flush=True)
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServeError(f"could not {what} (exit {result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def _ensure_demo_cohort(path: Path) -> None:
    if (path / "users.parquet").exists():
        return
    from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig

    print(f"simulating the demo cohort {path} (60 users x 2 weeks) ...", flush=True)
    simulate_cohort(SimulateConfig(users=60, weeks=2, seed=1), path)


def _is_private(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return address.is_private or address.is_loopback


def _start_report_server(stack: Stack, options: ServeOptions, project: Path) -> str:
    """Serve report.html and summary.json files under the roots, and nothing else."""
    configured = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    roots = [Path(p).expanduser().resolve() for p in configured] or [project]

    class Reports(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            path = Path(unquote(urlsplit(self.path).path.removeprefix("/files"))).resolve()
            allowed = path.name in REPORT_FILES and path.is_file() and any(
                path.is_relative_to(root) for root in roots)
            if not allowed:
                self.send_error(404, "only report.html and summary.json of runs are served")
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", REPORT_FILES[path.name])
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", REPORT_CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    port = options.reports_port if options.reports_port is not None else options.port + 1
    try:
        server = ThreadingHTTPServer((HOST, port), Reports)
    except OSError:
        server = ThreadingHTTPServer((HOST, 0), Reports)  # the usual port is taken: any free one
    threading.Thread(target=server.serve_forever, name="reports", daemon=True).start()
    stack.report_server = server
    return f"http://{HOST}:{server.server_address[1]}/files"
