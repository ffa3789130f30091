"""A team's Prefect server: `stethoscope serve --database-url postgresql+asyncpg://...` on a
throw-away PostgreSQL cluster (Debian's packages, 127.0.0.1, a free port), no worker of its own
(`--no-worker`), and two workers of the pool started as a team's other machines would start
them (`PREFECT_API_URL=... prefect worker start --pool stethoscope --limit 1`). Two flow runs
created at once run at once, one on each worker, and land in PostgreSQL's tables.

PostgreSQL missing or not starting skips the integration test on a developer's machine and fails
it in CI (CI=true, or STETHOSCOPE_REQUIRE_POSTGRES=1, which `.ci/run` sets after installing the
`postgresql` package when it is missing). The fast tests at the top check
the URL handling of flows/server_db.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import pytest

from stethoscope.flows import server_db
from stethoscope.schemas.errors import UsageError
from tests.flows.conftest import (
    PROJECT,
    READY,
    STARTUP_TIMEOUT,
    PrefectStack,
    _free_port,
    _start_webhook,
    _wait_for_line,
    stop_serve,
)

POOL = "stethoscope"
WORKERS = ("team-a", "team-b")


# --- fast: the URL ----------------------------------------------------------------------------


def test_the_url_is_printed_with_its_password_masked() -> None:
    url = "postgresql+asyncpg://prefect:s3cr%40t@db.example:5432/prefect"
    assert server_db.mask(url) == "postgresql+asyncpg://prefect:***@db.example:5432/prefect"
    assert server_db.mask("postgresql+asyncpg://prefect@db:5432/p") == "postgresql+asyncpg://prefect@db:5432/p"
    log = "connect failed for password s3cr@t (s3cr%40t)"
    assert server_db.redact(log, url) == "connect failed for password *** (***)"
    assert server_db.describe(None, "/h") == "SQLite, /h/prefect.db"


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://u:p@db/prefect", "needs the asyncpg driver"),
    ("mysql+aiomysql://u:p@db/prefect", "expected postgresql+asyncpg://"),
    ("postgresql+asyncpg:///prefect", "no host"),
])
def test_a_url_prefect_cannot_use_is_refused_masked(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        server_db.check_url(url)
    assert ":p@" not in str(caught.value)
    assert server_db.check_url("postgresql+asyncpg://u:p@db:5432/prefect")


def test_the_worker_never_sees_the_database_settings() -> None:
    env = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "x", "PREFECT_API_DATABASE_PASSWORD": "y",
           "PREFECT_API_URL": "http://h/api", "HOME": "/root"}
    assert server_db.without_database_settings(env) == {"PREFECT_API_URL": "http://h/api",
                                                        "HOME": "/root"}
    assert server_db.configured_url(env) == "x"


def test_the_url_goes_to_the_server_only_and_a_team_host_serves_its_own_name(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from stethoscope.flows.serve import ServeOptions, prefect_environment, server_environment

    monkeypatch.delenv("PREFECT_SERVER_UI_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_API_DATABASE_PASSWORD", "from-env")
    url = "postgresql+asyncpg://u:p@db:5432/prefect"
    options = ServeOptions(port=4300, project_dir=tmp_path, host="0.0.0.0", database_url=url)
    env = prefect_environment(options)
    server = server_environment(options, env)
    assert not server_db.database_settings(env)  # the worker and every run
    assert server[server_db.URL_ENV] == url and server["PREFECT_API_DATABASE_PASSWORD"] == "from-env"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4300/api"  # this machine's own clients
    assert server["PREFECT_SERVER_API_HOST"] == "0.0.0.0"
    assert server["PREFECT_SERVER_UI_API_URL"] == f"http://{socket.getfqdn()}:4300/api"
    loopback = ServeOptions(port=4300, project_dir=tmp_path)
    assert "PREFECT_SERVER_UI_API_URL" not in server_environment(loopback, prefect_environment(loopback))


# --- a throw-away PostgreSQL --------------------------------------------------------------------


@dataclass
class Postgres:
    url: str  # postgresql+asyncpg://prefect:<password>@127.0.0.1:<port>/prefect
    password: str
    pid: int  # the postmaster's

    def query(self, sql: str) -> list[tuple]:
        import asyncpg

        async def run() -> list[tuple]:
            connection = await asyncpg.connect(self.url.replace("postgresql+asyncpg", "postgresql"))
            try:
                return [tuple(row) for row in await connection.fetch(sql)]
            finally:
                await connection.close()

        return asyncio.run(run())


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer's machine; in CI the test must run, so fail loudly."""
    if os.environ.get("CI") == "true" or os.environ.get("STETHOSCOPE_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)


def _postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL's bin directory (/usr/lib/postgresql/<version>/bin)."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bin_dir = _postgres_bin()
    if bin_dir is None:
        _unavailable("no /usr/lib/postgresql/*/bin/pg_ctl (apt-get install postgresql)")
    # initdb and postgres refuse to run as root: then run them as Debian's `postgres` user, in
    # a directory of its own outside pytest's (root-only) temporary tree.
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="stethoscope-pg-"))
    password = secrets.token_hex(12)
    (base / "pw").write_text(password + "\n")
    if owner is not None:
        for path in (base, base / "pw"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    data, port = base / "data", _free_port()

    def pg(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *argv], capture_output=True, text=True, timeout=timeout)

    started = False
    try:
        init = pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "stethoscope", f"--pwfile={base / 'pw'}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
                  "--no-sync", "--no-instructions")
        if init.returncode != 0:
            _unavailable(f"initdb failed ({init.returncode}): {init.stderr[-2000:]}")
        start = pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"), "-w",
                   "-t", "60", "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off",
                   "start")
        started = start.returncode == 0
        if not started:
            log = (base / "postgres.log").read_text(errors="replace")[-2000:] \
                if (base / "postgres.log").exists() else ""
            _unavailable(f"pg_ctl start failed ({start.returncode}): {start.stderr}{log}")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        admin = Postgres(url=f"postgresql+asyncpg://stethoscope:{password}@127.0.0.1:{port}/postgres",
                         password=password, pid=pid)
        # as the README sets it up: a login role without superuser, owning Prefect's database
        # (Prefect's migrations create the trusted extension pg_trgm there)
        secret = secrets.token_hex(12)
        admin.query(f"CREATE ROLE prefect LOGIN PASSWORD '{secret}'")
        admin.query("CREATE DATABASE prefect OWNER prefect")
        yield Postgres(url=f"postgresql+asyncpg://prefect:{secret}@127.0.0.1:{port}/prefect",
                       password=secret, pid=pid)
    finally:
        if started:
            stop = pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
            if stop.returncode != 0:  # the postmaster by its process id, then
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)
    assert not started or stop.returncode == 0, f"pg_ctl stop failed: {stop.stderr}"


# --- the team's stack -------------------------------------------------------------------------


@dataclass
class TeamStack:
    stack: PrefectStack
    workers: dict[str, subprocess.Popen]
    worker_logs: dict[str, Path]
    home: Path


@pytest.fixture(scope="module")
def team_stack(postgres: Postgres, tmp_path_factory) -> Iterator[TeamStack]:
    """`stethoscope serve --database-url ... --no-worker`, then two workers of the pool with
    the documented command, each running one flow run at a time."""
    root = tmp_path_factory.mktemp("team")
    data_root = root / "data"
    data_root.mkdir()
    webhook, hook_server = _start_webhook()
    port = _free_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PREFECT_API", "PREFECT_SERVER_DATABASE"))}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_V2_ENABLED": "false",
                "PREFECT_WORKER_QUERY_SECONDS": "1", "STETHOSCOPE_DATA_ROOTS": str(data_root),
                "STETHOSCOPE_PROGRESS": "0", "PREFECT_HOME": str(root / "server-home")})
    log = root / "serve.log"
    pids: dict[str, int] = {}
    workers: dict[str, subprocess.Popen] = {}
    worker_logs = {name: root / f"worker-{name}.log" for name in WORKERS}
    with open(log, "wb") as output:
        serve = subprocess.Popen(
            [sys.executable, "-m", "stethoscope.flows.cli", "serve", "--port", str(port),
             "--no-demo-cohort", "--no-worker", "--database-url", postgres.url],
            cwd=PROJECT, env=env, stdout=output, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        text = _wait_for_line(log, READY, serve, STARTUP_TIMEOUT)
        pids["Prefect server"] = int(re.search(r"^Prefect server: pid (\d+)", text, re.M)[1])  # type: ignore[index]
        # another machine: its own PREFECT_HOME, only the API address of the server
        for name in WORKERS:
            worker_env = {**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(root / f"home-{name}")}
            with open(worker_logs[name], "wb") as output:
                workers[name] = subprocess.Popen(
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                     "--type", "process", "--limit", "1", "--name", name],
                    cwd=PROJECT, env=worker_env, stdout=output, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True)
            pids[name] = workers[name].pid
        yield TeamStack(stack=PrefectStack(api=api, ui=f"http://127.0.0.1:{port}", data_root=data_root,
                                           cohort=data_root, webhook=webhook, pids=pids, log=log),
                        workers=workers, worker_logs=worker_logs, home=root / "server-home")
    finally:
        for process in workers.values():  # the other machines' workers first, by process id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in workers.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        exit_code, survivors = stop_serve(serve, hook_server, pids)
    assert exit_code == 0, f"serve exited {exit_code}:\n{log.read_text()[-3000:]}"
    assert not survivors, f"still running after serve stopped (killed now): {survivors}"


def _wait_for_workers(stack: PrefectStack, names: tuple[str, ...], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = stack.request("POST", f"/work_pools/{POOL}/workers/filter", json={})
        if {w["name"] for w in response.json()} >= set(names):
            return
        time.sleep(1)
    raise AssertionError(f"workers {names} did not register with pool {POOL} within {timeout} s")


def _submitted_by(run: dict) -> str:
    """The worker that ran the flow run: the label `prefect.worker.name` that the worker gives
    the run once its Pending state is accepted. (Both workers may log `submitting flow run` for
    the same run; the one whose Pending proposal loses aborts, so log lines do not tell.)"""
    labels = run.get("labels") or {}
    assert "prefect.worker.name" in labels, f"no worker label on the run: {labels}"
    return labels["prefect.worker.name"]


@pytest.mark.integration
def test_two_workers_run_two_flow_runs_at_once_on_postgresql(
        team_stack: TeamStack, postgres: Postgres) -> None:
    stack = team_stack.stack
    text = stack.log.read_text(errors="replace")
    assert "Prefect database: postgresql+asyncpg://prefect:***@127.0.0.1:" in text
    assert "worker: none here (--no-worker)" in text
    server_log = (team_stack.home / "server.log").read_text(errors="replace")
    assert postgres.password not in text + server_log
    assert not (team_stack.home / "prefect.db").exists()  # no SQLite database

    _wait_for_workers(stack, WORKERS)
    ids = {}
    # created back to back; each run simulates for ~6 s, long beside the 1 s the workers poll
    # at, so the second worker takes its run while the first still runs (100 users took ~1 s
    # and the runs sometimes did not overlap)
    for name in ("a", "b"):
        response = stack.create_run("simulate-cohort", "simulate-cohort", {"params": {
            "out_dir": str(stack.data_root / f"cohort-{name}"),
            "cohort": {"users": 800, "weeks": 2, "seed": 1}}})
        assert response.status_code == 201, response.text
        ids[name] = response.json()["id"]
    runs = {name: stack.wait_for_run(run_id, timeout=240) for name, run_id in ids.items()}
    for name, run in runs.items():
        assert run["state"]["type"] == "COMPLETED", (
            f"{name}: {run['state']}\n" + "\n".join(
                path.read_text(errors="replace")[-3000:] for path in team_stack.worker_logs.values()))
        assert (stack.data_root / f"cohort-{name}" / "users.parquet").is_file()

    # one run on each worker (each takes one at a time), and the two ran at the same time
    submitted_by = {name: _submitted_by(run) for name, run in runs.items()}
    assert set(submitted_by.values()) == set(WORKERS), submitted_by
    a, b = ({key: datetime.fromisoformat(runs[n][key]) for key in ("start_time", "end_time")}
            for n in ("a", "b"))
    assert a["start_time"] < b["end_time"] and b["start_time"] < a["end_time"], (
        f"the runs did not overlap: a {a['start_time']}..{a['end_time']}, "
        f"b {b['start_time']}..{b['end_time']}")

    # the state is in PostgreSQL: Prefect's tables, these runs, both workers of the pool
    stored = dict(postgres.query("SELECT id::text, state_type::text FROM flow_run"))
    assert {stored[ids["a"]], stored[ids["b"]]} == {"COMPLETED"}
    names = {row[0] for row in postgres.query("SELECT name FROM worker")}
    assert set(WORKERS) <= names
    deployments = {row[0] for row in postgres.query("SELECT name FROM deployment")}
    assert {"nightly-model-audit", "simulate-cohort"} <= deployments
