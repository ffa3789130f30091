"""How every file of a run is written: atomically. A file appears whole under its final name or
not at all, so a reader, a retried task or a resumed run never sees half a file. Used by the
stages (tasks/) and by the training callbacks (model/), hence its place in the lowest layer.

A file is written to a hidden sibling named after its host and process
(`.<name>.~<host>-<pid>-<random><suffix>`) and renamed over its name. A process killed while
writing (`kill -9`, a lost machine) leaves that sibling behind; the first write of a later
process into the same directory removes those of this host's processes that are gone. Those of
live processes, and of other hosts (a Dask worker on shared storage), are left alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


_HOST = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "host"
_TEMPORARY = re.compile(r"^\..+\.~(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-[a-z0-9_]+\.[a-z]+$")
_SWEPT: set[str] = set()  # directories this process has cleared of stale temporary files
_SWEPT_LOCK = threading.Lock()


@contextmanager
def atomic_path(path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary sibling of `path` (ending in `suffix`: Keras insists on `.keras`);
    rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.~{_HOST}-{os.getpid()}-", suffix=suffix,
                               dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet_atomic(table: pa.Table, path: Path, **kwargs: Any) -> Path:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return Path(path)


def write_json_atomic(obj: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(path)


def staging_dir(target: Path, purpose: str) -> Path:
    """A new hidden sibling of `target` for one attempt at writing it (a stage that writes a
    whole directory builds it here, then renames it into place): `.<name>.<purpose>-partial-
    <pid>-<random>`. Each attempt gets its own, so a retry never writes into the directory of an
    earlier attempt that is still running (a timed-out task keeps running in its thread). Those
    left by processes that are gone (a killed run) are removed first; a live process's are its
    own business."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{purpose}-partial-"
    for stale in target.parent.glob(f"{prefix}*"):
        pid = stale.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=target.parent))


def _sweep_once(directory: Path) -> None:
    """Remove the temporary files that this host's dead processes left in `directory`, the
    first time this process writes there (a directory's writes are one stage's, and the run
    lock keeps a second process from writing the run meanwhile)."""
    key = os.path.abspath(directory)
    with _SWEPT_LOCK:
        if key in _SWEPT:
            return
        _SWEPT.add(key)
    with os.scandir(directory) as entries:
        for entry in entries:
            found = _TEMPORARY.match(entry.name)
            if (found and found["host"] == _HOST and int(found["pid"]) != os.getpid()
                    and not _process_alive(int(found["pid"]))):
                Path(entry.path).unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
