"""Which run is tonight's reference, and blessing one (docs/architecture.md §7.4).

In order: the run pinned by the caller (`--baseline RUN_DIR`, the flow's `baseline`); else the
run blessed for this flow in `<runs>/blessed.json` (`stethoscope bless RUN_DIR`), until
another is blessed; else the last run of the same flow in the same runs directory whose
status was not `fail` and that finished before this one started. A run is known by its
`summary.json`; nothing else of it is read but the small files its gate stage wrote.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from stethoscope.schemas.atomic import write_json_atomic
from stethoscope.schemas.errors import UsageError
from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.summary import ReferenceRun, Summary
from stethoscope.tasks.gate.config import BLESSED_FILE

log = logging.getLogger("stethoscope.gate")


@dataclass(frozen=True)
class Reference:
    run: RunPaths
    summary: Summary
    record: ReferenceRun


def read_summary(run_dir: Path) -> Summary | None:
    """A run's summary.json, or None when it has none or it cannot be read (logged)."""
    path = RunPaths(Path(run_dir)).summary
    if not path.is_file():
        return None
    try:
        return Summary.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("skipped %s as a reference: its summary.json cannot be read (%s)", path,
                    str(exc).splitlines()[0])
        return None


def find_reference(run_dir: Path, flow: str | None, started_at: datetime,
                   pinned: Path | None = None) -> Reference | None:
    """The reference of the run at `run_dir` (see the module docstring); None when there is
    none. A pinned run that has no readable summary is a UsageError: the caller asked for it."""
    run_dir = Path(run_dir)
    if pinned is not None:
        summary = read_summary(pinned)
        if summary is None:
            raise UsageError(f"baseline {pinned}: no readable summary.json there; give the "
                             "directory of a finished stethoscope run")
        return _reference(Path(pinned), summary, "pinned")
    runs_dir = run_dir.parent
    blessed = blessed_run(runs_dir, flow)
    if blessed is not None and blessed.resolve() != run_dir.resolve():
        summary = read_summary(blessed)
        if summary is not None:
            return _reference(blessed, summary, "blessed")
        log.warning("the blessed run %s has no readable summary.json; using the last good run",
                    blessed)
    candidates = []
    for child in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if not child.is_dir() or child.is_symlink() or child.resolve() == run_dir.resolve():
            continue
        summary = read_summary(child)
        if (summary is not None and summary.flow == flow and summary.status != "fail"
                and summary.finished_at <= started_at):
            candidates.append((summary.finished_at, child, summary))
    if not candidates:
        return None
    _, child, summary = max(candidates, key=lambda c: c[0])
    return _reference(child, summary, "last_good")


def _reference(path: Path, summary: Summary,
               chosen: Literal["pinned", "blessed", "last_good"]) -> Reference:
    return Reference(RunPaths(path), summary, ReferenceRun(
        run_id=summary.run_id, path=str(path.resolve()), chosen=chosen,
        status=summary.status, finished_at=summary.finished_at))


# --- blessing -------------------------------------------------------------------------------


def blessed_file(runs_dir: Path) -> Path:
    return Path(runs_dir) / BLESSED_FILE


def blessed_run(runs_dir: Path, flow: str | None) -> Path | None:
    """The run blessed for `flow` in `runs_dir`, if any (its directory, which may be gone)."""
    path = blessed_file(runs_dir)
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text()).get(flow or "")
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("%s cannot be read (%s); no run is blessed", path, exc)
        return None
    return Path(runs_dir) / entry["run_id"] if isinstance(entry, dict) and "run_id" in entry else None


def bless(run_dir: Path) -> tuple[Summary, Path]:
    """Mark the run at `run_dir` as the reference of its flow in its runs directory, until
    another is blessed. Refuses a run without a summary, a failed run, or one of no flow."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is None:
        raise UsageError(f"bless {run_dir}: no readable summary.json there; bless the "
                         "directory of a finished stethoscope run")
    if summary.status == "fail":
        raise UsageError(f"bless {run_dir}: its status is fail; a reference should be a run "
                         "you trust (fix what failed, then bless a passing run)")
    if not summary.flow:
        raise UsageError(f"bless {run_dir}: its summary.json names no flow (written before "
                         "schema 1.2); re-run it, then bless the new run")
    path = blessed_file(run_dir.parent)
    entries = {}
    if path.is_file():
        try:
            entries = json.loads(path.read_text())
        except ValueError:
            entries = {}
    entries[summary.flow] = {"run_id": run_dir.name, "blessed_at": datetime.now(UTC).isoformat()}
    write_json_atomic(entries, path)
    return summary, path
