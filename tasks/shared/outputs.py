"""What a stage left behind: the files it wrote, recorded when it finished, so that its cached
result is trusted only while those files are still there as written (docs/architecture.md §6.2).

A cached result is a promise about files: "validation/clean/ holds these rows". The promise
breaks when someone deletes the run directory, truncates a shard or a disk loses a file; the
cache key (inputs, config, code) cannot see any of that. So when a stage completes, the files
under its output paths that are new or changed since it started are recorded with their size
(and a sha256 when small); before its cached result is reused, each recorded file must still
have that size and checksum. Big files are checked by size only: a truncated file changes size,
and reading gigabytes to trust a cache would cost what recomputing saves.

Recording only the files that changed during the stage matters for stages whose output path is
the whole run directory (validate, report): the files of other stages under it are theirs.
Pure functions without Prefect; `tasks/shared/policy.py` calls them around a task run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files up to this size are checksummed when recorded and checked; larger ones by size only.
CHECKSUM_MAX_BYTES = 1 << 20

Snapshot = dict[str, tuple[int, int]]  # path -> (size, mtime_ns)
Recorded = dict[str, dict[str, object]]  # path -> {"size": int, "sha256": str | None}


def snapshot(paths: list[Path]) -> Snapshot:
    """Size and modification time of every file under `paths` (stat only, no reads)."""
    found: Snapshot = {}
    for root in paths:
        for file in _files_under(Path(root)):
            try:
                stat = file.stat()
            except FileNotFoundError:  # a temporary file renamed away meanwhile
                continue
            found[str(file)] = (stat.st_size, stat.st_mtime_ns)
    return found


def record_written(paths: list[Path], before: Snapshot) -> Recorded:
    """The files under `paths` that are new or changed since `before`, with size and checksum."""
    now = snapshot(paths)
    return {name: {"size": size, "sha256": _sha256(Path(name)) if size <= CHECKSUM_MAX_BYTES else None}
            for name, (size, mtime) in sorted(now.items()) if before.get(name) != (size, mtime)}


def broken(recorded: Recorded) -> list[str]:
    """Why the recorded files no longer hold what was written: one line per file that is
    missing, of another size, or (small files) of other content; [] when all are intact."""
    problems = []
    for name, expected in recorded.items():
        path = Path(name)
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != expected["size"]:
            problems.append(f"{name} has {path.stat().st_size} bytes, {expected['size']} were written")
        elif expected.get("sha256") and _sha256(path) != expected["sha256"]:
            problems.append(f"{name} changed since it was written (checksum)")
    return problems


def _files_under(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()
