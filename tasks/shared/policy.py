"""One retry policy and one cache policy, unpacked into every stage's Prefect task.

Retries are for the world, not for bugs: a stage is retried (exponential backoff with jitter)
only when it failed on something transient — I/O, the network, a resource that may come back.
A broken data contract, bad usage or a programming error fails at once.

Caching: a stage's result is persisted and keyed on (its inputs — with every path replaced by a
fingerprint of the files under it —, its configuration, the code of stethoscope). Re-running a
failed flow run, or the same run again, resumes after the last finished stage; a changed input
file, config value or line of code recomputes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from stethoscope.schemas.errors import StethoscopeError

# Transient: the world may be different on the next attempt.
_TRANSIENT: tuple[type[BaseException], ...] = (OSError, TimeoutError, ConnectionError, MemoryError)
# Never transient, even when they subclass a transient type.
_PERMANENT: tuple[type[BaseException], ...] = (StethoscopeError, FileNotFoundError, PermissionError,
                                               NotADirectoryError, IsADirectoryError)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _PERMANENT):
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
    """Cache key: task name + inputs (paths fingerprinted) + stethoscope's code.

    `outputs` names the path parameters a stage writes: they enter the key by name, not by
    content, which the stage itself changes (so a run directory deleted by hand is not
    noticed: give the re-run a new run id). `inputs_within` narrows a directory parameter to the sub-paths the stage reads
    (training reads `<run>/sequences`, not the rest of the run directory)."""

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
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


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
    }
