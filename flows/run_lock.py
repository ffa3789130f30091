"""One writer per run directory: a run id is locked while a flow writes it (issue #17).

Two flows writing one run directory would interleave their files, and whichever finished last
would leave a summary that describes neither. So every flow that writes a run directory takes
an exclusive `fcntl.flock` on `<runs>/.<run_id>.lock` for its whole body (`writes_run`, one
decorator under `@flow`: the command line, the Python API and a deployment's worker all go
through it). A second flow on the same run id fails at once with a `UsageError` (exit 2) naming
the directory and the process that holds it.

Why flock: the kernel drops the lock when its process dies, however it dies (kill -9, a crashed
worker), so a stale lock never blocks a resume; the file stays, holding the last holder's PID
for the message. The file is never deleted: deleting it while another process opens it would let
two processes each lock a different file of the same name. It sits beside the run directory, not
in it: a run refused before it writes (a missing cohort) leaves no run directory behind, and a
run directory deleted by hand during a run does not take the lock with it.
"""

from __future__ import annotations

import fcntl
import functools
import inspect
import os
import socket
import threading
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from stethoscope.flows.roots import check_run_dir
from stethoscope.schemas.errors import UsageError

P = ParamSpec("P")
R = TypeVar("R")

# Run directories this process holds: resolved path -> open descriptor and nesting depth, so that
# a flow calling another flow on the same run (or a retried flow in-process) does not lock itself out.
_HELD: dict[Path, list[int]] = {}
_HELD_LOCK = threading.Lock()


def lock_file(run_dir: Path) -> Path:
    """`<runs>/.<run_id>.lock`: the lock of the run directory `<runs>/<run_id>`."""
    return run_dir.parent / f".{run_dir.name}.lock"


@contextmanager
def hold_run(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock for the block; UsageError when another process holds it."""
    key = Path(run_dir).resolve()
    with _HELD_LOCK:
        if key in _HELD:
            _HELD[key][1] += 1
        else:
            _HELD[key] = [_acquire(Path(run_dir)), 1]
    try:
        yield
    finally:
        with _HELD_LOCK:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                os.close(_HELD.pop(key)[0])  # closing the descriptor releases the lock


def writes_run(run_dir_of: Callable[[dict[str, Any]], Path]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a flow function (under `@flow`) to hold its run directory's lock while it runs.
    `run_dir_of` maps the flow's bound arguments (name -> value) to its run directory."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            run_dir = check_run_dir(run_dir_of(bound.arguments))  # in the roots, links followed
            with hold_run(run_dir):
                return fn(*args, **kwargs)

        # Prefect builds the parameter form and validates parameters from the signature; its
        # annotations, strings here, would be resolved in this module's namespace: resolve them.
        hints = typing.get_type_hints(fn)
        locked.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[p.replace(annotation=hints.get(p.name, p.annotation))
                        for p in signature.parameters.values()],
            return_annotation=hints.get("return", signature.return_annotation))
        return locked

    return decorate


def _acquire(run_dir: Path) -> int:
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file(run_dir), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "an unknown process"
        os.close(fd)
        raise UsageError(
            f"run directory {run_dir} is being written by another run ({holder}): one run id, "
            "one run at a time. Wait for it to finish (or stop that process), or give this run "
            "another --out / run_id") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                  f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n".encode(), 0)
    return fd
