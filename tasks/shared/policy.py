"""One retry policy and one cache policy, unpacked into every stage's Prefect task.

Retries are for the world, not for bugs: a stage is retried (exponential backoff with jitter)
only when it failed on something transient — I/O, the network, a resource that may come back.
A broken data contract, bad usage or a programming error fails at once.

Caching: a stage's result is persisted and keyed on (its inputs — with every path replaced by a
fingerprint of the files under it —, its configuration, the code of stethoscope). Re-running a
failed flow run, or the same run again, resumes after the last finished stage; a changed input
file, config value or line of code recomputes. A cached result is reused only while the files the
stage wrote are still there as written (`tasks/shared/outputs.py`): a deleted run directory, a
truncated shard or a changed small file recomputes the stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from stethoscope.schemas.atomic import write_json_atomic
from stethoscope.schemas.errors import StethoscopeError, permanent_filesystem_error
from stethoscope.tasks.shared import outputs as written

log = logging.getLogger("stethoscope.policy")

# Transient: the world may be different on the next attempt.
_TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError, MemoryError)
# Never transient, even when they subclass a transient type.
_PERMANENT: tuple[type[BaseException], ...] = (StethoscopeError, FileNotFoundError, PermissionError,
                                               NotADirectoryError, IsADirectoryError)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: an OSError, a timeout..., but not one of the filesystem errors no
    retry mends (read-only or full disk, not a directory, no permission: schemas/errors.py)."""
    if isinstance(exc, _PERMANENT) or permanent_filesystem_error(exc) is not None:
        return False
    return isinstance(exc, _TRANSIENT)


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry_condition_fn: retry only when the failure was transient."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # the state's own exception, re-raised
        return is_transient(exc)
    return False


@cache
def code_fingerprint() -> str:
    """A hash of every source file of the packages a stage runs (tasks, model, schemas)."""
    import stethoscope.model
    import stethoscope.schemas
    import stethoscope.tasks

    digest = hashlib.sha256()
    for package in (stethoscope.tasks, stethoscope.model, stethoscope.schemas):
        for folder in map(Path, package.__path__):
            for path in sorted(folder.rglob("*")):
                if path.suffix in {".py", ".json", ".j2"} and "__pycache__" not in path.parts:
                    digest.update(f"{package.__name__}/{path.relative_to(folder)}".encode())
                    digest.update(path.read_bytes())
    return digest.hexdigest()


def path_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of every file under `path` (cheap: no reads)."""
    path = Path(path)
    if not path.exists():
        return f"missing:{path}"
    entries = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256(str(path.resolve()).encode())
    for p in entries:
        stat = p.stat()
        digest.update(f"{p.relative_to(path) if p != path else p.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _stable(value: Any) -> Any:
    if isinstance(value, Path):
        return {"path": str(value), "fingerprint": path_fingerprint(value)}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return _stable(vars(value))
    return value if isinstance(value, str | int | float | bool | type(None)) else repr(value)


@dataclass
class StageCache(CachePolicy):
    """Cache key: task name + inputs (paths fingerprinted) + stethoscope's code, trusted only
    while the files the stage wrote are intact.

    `outputs` names the path parameters a stage writes: they enter the key by name, not by
    content, which the stage itself changes. `inputs_within` narrows a directory parameter to
    the sub-paths the stage reads (training reads `<run>/sequences`, not the rest of the run
    directory). Both kinds of parameter are watched: what the stage wrote under them is
    recorded when it completes (`record_outputs`), and a later run reuses the cached result
    only while those files are intact; otherwise the key changes and the stage recomputes (a
    run directory deleted by hand, a truncated shard, a missing model)."""

    outputs: tuple[str, ...] = ()
    inputs_within: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        if os.environ.get("STETHOSCOPE_NO_CACHE") == "1":
            return None
        keyed = {}
        for name, value in inputs.items():
            if name in self.outputs and isinstance(value, Path):
                keyed[name] = {"output": str(value)}
            elif name in self.inputs_within and isinstance(value, Path):
                keyed[name] = {sub: _stable(value / sub) for sub in self.inputs_within[name]}
            else:
                keyed[name] = _stable(value)
        payload = {"task": task_ctx.task.name, "inputs": keyed, "code": code_fingerprint()}
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        watched = sorted(Path(v) for n, v in inputs.items()
                         if isinstance(v, Path) and (n in self.outputs or n in self.inputs_within))
        return _key_while_intact(key, task_ctx, watched) if watched else key


# Task runs whose outputs are recorded when they complete: task run id -> what to record.
_PENDING: dict[Any, _Pending] = {}
_PENDING_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Pending:
    manifest: Path
    base_key: str
    key: str
    watched: list[Path]
    before: written.Snapshot


def _manifest_file(task_name: str, watched: list[Path]) -> Path:
    """Where the record of a stage's outputs lives: beside Prefect's persisted results (which it
    vouches for), not in the run directory, so that deleting the run deletes the files but not
    the record that they should be there."""
    name = hashlib.sha256(json.dumps([task_name, *map(str, watched)]).encode()).hexdigest()
    return Path(PREFECT_LOCAL_STORAGE_PATH.value()) / "stethoscope-outputs" / f"{name}.json"


def _key_while_intact(key: str, task_ctx: Any, watched: list[Path]) -> str:
    """`key`'s recorded cache key when the outputs recorded for it are intact; else a key of
    this task run alone, under which the stage recomputes (and records its outputs anew)."""
    manifest = _manifest_file(task_ctx.task.name, watched)
    record = _read_record(manifest)
    problems = written.broken(record["files"]) if record and record.get("base_key") == key else None
    if record and problems == []:
        final = str(record["key"])
    else:
        final = hashlib.sha256(f"{key}|{task_ctx.task_run.id}".encode()).hexdigest()
        if problems:
            log.warning("%s: its cached result is not reused, its outputs changed: %s%s",
                        task_ctx.task.name, "; ".join(problems[:3]),
                        f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
    with _PENDING_LOCK:  # a retry keeps the snapshot taken before the first attempt
        if task_ctx.task_run.id not in _PENDING:
            _PENDING[task_ctx.task_run.id] = _Pending(manifest, key, final, watched,
                                                      written.snapshot(watched))
    return final


def _read_record(manifest: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def record_outputs(task: Any, task_run: Any, state: Any) -> None:
    """Prefect on_completion hook: record the files this task run wrote under its watched
    paths (nothing when its result came from the cache: the record already holds them)."""
    with _PENDING_LOCK:
        pending = _PENDING.pop(task_run.id, None)
    if pending is None or state.name == "Cached":
        return
    write_json_atomic({"base_key": pending.base_key, "key": pending.key,
                       "watched": [str(p) for p in pending.watched],
                       "files": written.record_written(pending.watched, pending.before)},
                      pending.manifest)


def announce_attempt(task: Any, task_run: Any, state: Any) -> None:
    """Prefect on_running hook: one line when a stage starts (DEBUG; INFO for a retry, with the
    attempt's number), so a log says which stage was running when a process died."""
    attempt, attempts = task_run.run_count, 1 + (task.retries or 0)
    if attempt > 1:
        log.info("%s: attempt %d of %d started", task_run.name, attempt, attempts)
    else:
        log.debug("%s: started", task_run.name)


def forget_outputs(task: Any, task_run: Any, state: Any) -> None:
    """Prefect on_failure hook: a failed task run records nothing."""
    with _PENDING_LOCK:
        _PENDING.pop(task_run.id, None)


def stage_options(timeout_seconds: float, retries: int = 2, outputs: tuple[str, ...] = (),
                  inputs_within: dict[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Keyword arguments for `task.with_options(...)`: the one policy, with a stage's timeout
    and the names of its output path parameters (see StageCache)."""
    return {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=5),
        "retry_jitter_factor": 0.5,
        "retry_condition_fn": retry_on_transient,
        "timeout_seconds": timeout_seconds,
        "persist_result": True,
        "cache_policy": StageCache(outputs=outputs, inputs_within=inputs_within or {}),
        "on_running": [announce_attempt],
        "on_completion": [record_outputs],
        "on_failure": [forget_outputs],
    }
