"""The process settings every entry point (the command line, the Python API) applies before
Prefect or TensorFlow is imported: telemetry off, servers on 127.0.0.1, stethoscope's own log
lines sent to the Prefect UI with the run's, and one readable log format that names the task run
a line comes from. A value the user set in the environment is never overridden."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Literal

Verbosity = Literal["quiet", "normal", "verbose"]

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # the embedded server's telemetry
    "PREFECT_SERVER_API_HOST": "127.0.0.1",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "stethoscope",  # our loggers reach the run's logs in the UI
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # Prefect waits 20 s for its embedded server; on a busy 2-core machine (a training beside
    # it) it can take longer, and the command then died as a "bug". Measured: 20 s timed out
    # with a demo and two test runs on the same cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
# Libraries that log at INFO for every call, or at DEBUG whatever the caller wants.
_CHATTY = ("httpx", "httpcore", "matplotlib", "PIL", "numba", "great_expectations", "urllib3",
           "asyncio", "aiosqlite", "alembic", "uvicorn", "docket", "distributed")


def set_defaults(runs_dir: Path | None = None) -> None:
    """Our defaults, under whatever the user set. With `runs_dir`, Prefect's state (the embedded
    server's database, persisted task results, hence resume) lives in `<runs_dir>/.prefect`
    unless PREFECT_HOME is set: never in the user's home directory by surprise."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if runs_dir is not None and "PREFECT_HOME" not in os.environ:
        os.environ["PREFECT_HOME"] = str(Path(runs_dir).resolve() / ".prefect")


def make_prefect_home() -> None:
    """Create PREFECT_HOME (Prefect does not create its parents) once a flow is about to start,
    so that a command refused for bad usage leaves nothing behind."""
    if "PREFECT_HOME" in os.environ:
        Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)


def _bad_input(exc: BaseException | None) -> bool:
    """A data-contract or usage error, or a disk or path no retry mends (schemas/errors.py):
    its message already says what and where, so no traceback."""
    from stethoscope.schemas.errors import StethoscopeError, permanent_filesystem_error

    if exc is None:
        return False
    return isinstance(exc, StethoscopeError) or permanent_filesystem_error(exc) is not None


class _RunFormatter(logging.Formatter):
    """`time LEVEL logger [task run]: message`; the task run when Prefect logged the line. A
    failure that is a data-contract or usage error (exit 2) is shown without its traceback:
    its message already names the file, column, rule and fix. Any other keeps it (a bug)."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and _bad_input(record.exc_info[1]):
            record = logging.makeLogRecord({**record.__dict__, "exc_info": None,
                                            "exc_text": None})
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        record.where = f"{record.name} [{run}]" if run else record.name
        return super().format(record)


class _NoTracebackForBadInput(logging.Filter):
    """Prefect's engines log a failed flow or task run with its traceback, through Prefect's
    own console handler (which _RunFormatter never sees). A data-contract or usage error is bad
    input, not a bug: its message names file, column, rule and fix, so the traceback is dropped
    (docs/architecture.md §5.4: no traceback on exit 2). Any other exception keeps it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _bad_input(record.exc_info[1]):
            record.exc_info, record.exc_text = None, None
        return True


_NO_TRACEBACK_FOR_BAD_INPUT = _NoTracebackForBadInput()


class _ThreadTimeoutNotice(logging.Filter):
    """Prefect warns, for every task with a timeout run in a worker thread, that the timeout
    cannot interrupt blocking calls. Known and accepted (the timeout still fails the task once
    the call returns): say it once in the docs, not once per task per night."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread" not in record.getMessage()


_POLICY_HOOKS = ("record_outputs", "forget_outputs", "announce_attempt")


class _OutputRecordHooks(logging.Filter):
    """Prefect logs two lines for every state hook it runs ("Running hook 'x' ...", "Hook 'x'
    finished ..."); the policy's hooks that record a stage's outputs or announce its attempts
    (tasks/shared/policy.py) run for every stage and say nothing worth reading themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage().lower()
        return not any(f"hook {name!r}" in message for name in _POLICY_HOOKS)


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a test's capture, a notebook's
    redirect), never to a stream that was replaced and closed since."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_worker_logging() -> None:
    """In a Dask worker process (flows/execution.py registers this at worker start): the same
    quiet libraries and Prefect filters as the command line's process."""
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())
    logging.getLogger("prefect.task_runs").addFilter(_OutputRecordHooks())
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NO_TRACEBACK_FOR_BAD_INPUT)


def configure_logging(verbosity: Verbosity = "normal") -> None:
    """Log to stderr. quiet: warnings and errors only; verbose: stethoscope's loggers at DEBUG
    (other libraries stay at INFO)."""
    handler = _CurrentStderr(sys.stderr)
    handler.setFormatter(_RunFormatter("%(asctime)s %(levelname)s %(where)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbosity == "quiet" else logging.INFO)
    ours = logging.getLogger("stethoscope")
    ours.setLevel({"quiet": logging.WARNING, "normal": logging.INFO,
                   "verbose": logging.DEBUG}[verbosity])
    configure_worker_logging()  # the libraries and Prefect filters, as in a Dask worker
    if verbosity == "quiet":
        logging.getLogger("prefect").setLevel(logging.WARNING)
