"""Parquet file discovery shared by the stages. Atomic writes are in schemas/atomic.py."""

from __future__ import annotations

from pathlib import Path


def list_parquet_files(root: Path) -> list[Path]:
    """Every data file below `root` (a file, or a directory with hive partitions allowed), in a
    stable order. Hidden and underscore files (`_SUCCESS`, `.x.tmp`) are skipped; anything else
    is returned, so that a file which is not Parquet is named and set aside, never ignored."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )


def inside(root: Path, files: list[Path]) -> tuple[list[Path], list[Path]]:
    """(`files` that resolve — symlinks followed — inside `root`, those that resolve outside):
    a link in a cohort to a file elsewhere is never read as the cohort's data."""
    base = Path(root).resolve()
    kept: list[Path] = []
    refused: list[Path] = []
    for f in files:
        (kept if Path(f).resolve().is_relative_to(base) else refused).append(f)
    return kept, refused
