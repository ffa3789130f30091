"""Validation stage: check a cohort against its data contract, keep everything.

Owns `<run>/validation/`: `clean/` (the rows that pass, canonical SENSOR_LOGS, each file holding
*all* rows of its users sorted by (user_id, timestamp)), `quarantine/` (every other row as it
came, the first rule it broke and where it came from), `rejected_files/` (files that cannot be
read or break the schema, copied whole), `report.json` and great-expectations `data_docs/`.
Invariant: rows_in == rows_clean + rows_quarantined, always.

Streaming: files sharing no user form units of one file; files that share users (found from
Parquet statistics, then exact user sets) form one unit, split into user buckets (by a hash of
user_id) of about `max_rows_in_memory / workers` rows; `workers` units are checked at once
(`tasks.validate.units`). Row rules: `tasks.validate.rules`; file checks:
`tasks.validate.files`; users and labels tables: `tasks.validate.tables`; great-expectations:
`tasks.validate.gx`. Nothing is written in place: the stage writes a hidden sibling directory and
renames it when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import zoneinfo
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stethoscope.schemas.atomic import staging_dir, write_json_atomic, write_parquet_atomic
from stethoscope.schemas.devices import DEVICE_CATALOG
from stethoscope.schemas.errors import DataContractError, Problem, UsageError
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.schemas.tables import SENSOR_LOGS
from stethoscope.tasks.shared.executor import map_ordered
from stethoscope.tasks.shared.io import list_parquet_files
from stethoscope.tasks.shared.progress import track
from stethoscope.tasks.shared.users import UserSplit
from stethoscope.tasks.validate.config import REJECTED_USERS_FILE, ValidateConfig, ValidationResult
from stethoscope.tasks.validate.files import (
    FileCheck,
    check_file,
    copy_keeping_mode,
    refuse_outside,
    resolves_outside,
)
from stethoscope.tasks.validate.findings import validation_findings
from stethoscope.tasks.validate.gx import GxSession
from stethoscope.tasks.validate.rules import RULES, RowLimits
from stethoscope.tasks.validate.tables import (
    check_labels,
    load_users,
    num_users_set_aside,
    set_aside_examples,
    set_aside_problems,
    set_aside_report,
)
from stethoscope.tasks.validate.units import KnownUsers, UnitTally, check_unit, plan_units

log = logging.getLogger("stethoscope.validate")


def validate_cohort(cohort: CohortPaths, run: RunPaths, config: ValidateConfig) -> ValidationResult:
    """Validate `cohort` into `run.validation`; raise DataContractError when unusable."""
    _refuse_run_inside(cohort, run)
    split = load_users(cohort.users)
    users = split.usable.to_pandas()
    # labels of users set aside still match users of users.parquet: the gate judges those
    named = pd.Series(users["user_id"].astype(str).tolist() + split.set_aside_ids, dtype=object)
    conditions = check_labels(cohort.labels, named)
    files = _sensor_files(cohort)
    now = config.now or datetime.now(UTC)
    # Write a hidden sibling run directory of this attempt, move its validation/ into place
    # when complete (schemas/atomic.py staging_dir: a retry never shares an earlier attempt's).
    with _staged(run) as staged:
        checks = [_check(p, cohort) for p in files]
        rejected = [c for c in checks if not c.ok]
        accepted = [c for c in checks if c.ok]
        _set_aside(rejected, staged)
        gx_started = _start_gx(users, config, staged.data_docs) if config.great_expectations else None
        tally = _check_units(accepted, split, staged, config, now)
        if split.set_aside.num_rows:  # nothing lost: the users' rows, why, column and value
            write_parquet_atomic(split.set_aside, staged.validation / REJECTED_USERS_FILE)

        rows_in = sum(c["rows_in"] for c in tally.per_file.values())
        rows_clean = sum(c["rows_clean"] for c in tally.per_file.values())
        rows_quarantined = sum(c["rows_quarantined"] for c in tally.per_file.values())
        assert rows_in == rows_clean + rows_quarantined, "row accounting broke: a bug"
        rows_rejected = sum(c.num_rows or 0 for c in rejected)
        rows_estimated = _rows_of_unreadable_files(rejected, accepted, rows_in)
        rows_aside = rows_rejected + rows_estimated
        share = (rows_quarantined + rows_aside) / max(1, rows_in + rows_aside)
        warnings = _warnings(rejected, accepted, tally)

        gx = _finish_gx(gx_started, tally, users, config, now) if gx_started and rows_in else None
        report = _report(cohort, config, now, checks, tally, rows_in, rows_clean, rows_quarantined,
                         rows_rejected, share, conditions, warnings, gx)
        report["rows_in_rejected_files_estimated"] = rows_estimated
        report["users_set_aside"] = set_aside_report(split.set_aside)
        write_json_atomic(report, staged.validation_report)
        shutil.rmtree(run.validation, ignore_errors=True)
        run.validation.parent.mkdir(parents=True, exist_ok=True)
        staged.validation.rename(run.validation)

    result = ValidationResult(
        run_dir=run.root, rows_in=rows_in, rows_clean=rows_clean, rows_quarantined=rows_quarantined,
        rows_in_rejected_files=rows_rejected, quarantined_share=share, users=tally.users,
        files_read=len(files), files_rejected=[c.name for c in rejected],
        unknown_devices=dict(tally.unknown_devices),
        gx_success=None if gx is None else all(o["success"] for o in gx["suites"]),
        warnings=warnings, rows_in_rejected_files_estimated=rows_estimated,
        users_set_aside=num_users_set_aside(split.set_aside),
        users_set_aside_by_rule=dict(Counter(split.set_aside["rule"].to_pylist())),
        users_set_aside_examples=set_aside_examples(split.set_aside))
    user_problems = set_aside_problems(split.set_aside, cohort.users.name)
    _raise_if_unusable(result, rejected, user_problems, tally, config, cohort,
                       run.validation_report)
    return replace(result, findings=validation_findings(result))


@contextmanager
def _staged(run: RunPaths) -> Iterator[RunPaths]:
    """A staging run directory for this attempt, removed when the block ends, whatever happens."""
    staged = RunPaths(staging_dir(run.root, "validate"))
    try:
        yield staged
    finally:
        shutil.rmtree(staged.root, ignore_errors=True)


def _rows_of_unreadable_files(rejected: list[FileCheck], accepted: list[FileCheck],
                              rows_in: int) -> int:
    """The rows a file that could not be read at all probably held, so that the gate counts
    what it could not read: its share of the cohort's bytes, at the rows per byte of the files
    that were read. A file refused for lying outside the cohort is not the cohort's data (and
    is not even measured); a file whose footer was read counts its own rows elsewhere."""
    read_bytes = sum(c.path.stat().st_size for c in accepted if c.num_rows)
    if not rows_in or not read_bytes:
        return 0
    unread_bytes = sum(c.path.stat().st_size for c in rejected
                       if c.num_rows is None and not c.outside_cohort and c.path.is_file())
    return round(unread_bytes * rows_in / read_bytes)


def _refuse_run_inside(cohort: CohortPaths, run: RunPaths) -> None:
    """A run directory inside the cohort would be read back as cohort data by the next run."""
    if not resolves_outside(run.root, cohort.root):
        raise UsageError(
            f"the run directory {run.root} is inside the cohort directory {cohort.root}: its "
            "clean logs would be read back as the cohort's own data. Write the run outside the "
            "cohort (e.g. runs/<run id>)")


def _check(path: Path, cohort: CohortPaths) -> FileCheck:
    """The file checks of one sensor-log file, or its refusal when it resolves outside the
    cohort (then it is not even opened)."""
    name = str(path.relative_to(cohort.sensor_logs))
    return refuse_outside(path, name) if resolves_outside(path, cohort.root) else check_file(path, name)


def _sensor_files(cohort: CohortPaths) -> list[Path]:
    """Every sensor-log file, and every symbolic link leading out of the cohort (to a directory,
    or to nothing), so that each is refused by name rather than skipped in silence."""
    files = list_parquet_files(cohort.sensor_logs) if cohort.sensor_logs.exists() else []
    if cohort.sensor_logs.is_dir():
        listed = set(files)
        files = sorted(files + [
            p for p in cohort.sensor_logs.rglob("*")
            if p.is_symlink() and p not in listed and resolves_outside(p, cohort.root)
            and not any(part.startswith((".", "_")) for part in p.relative_to(cohort.sensor_logs).parts)])
    if not files:
        raise DataContractError(f"{cohort.sensor_logs}: no sensor logs", [Problem(
            rule="missing_file", file=str(cohort.sensor_logs), message="no files found.",
            fix="write the sensor logs as Parquet under <data>/sensor_logs/")])
    return files


def _set_aside(rejected: list[FileCheck], staged: RunPaths) -> None:
    """Copy each file that failed its file checks to rejected_files/, as it was, with its own
    permissions; a file from outside the cohort is named, never copied."""
    for c in rejected:
        log.warning("%s %s: %s", "refused" if c.outside_cohort else "set aside", c.name,
                    "; ".join(p.render() for p in c.problems))
        if c.outside_cohort:
            continue
        target = staged.rejected_files / c.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            copy_keeping_mode(c.path, target)
        except OSError as exc:  # e.g. not readable by us: named in the report, not copied
            target.unlink(missing_ok=True)
            log.warning("could not copy %s to %s: %s", c.name, staged.rejected_files.name, exc)


def _check_units(accepted: list[FileCheck], split: UserSplit, staged: RunPaths,
                 config: ValidateConfig, now: datetime) -> UnitTally:
    """Check and write every unit of the accepted files, `workers` units at once (units share
    no user; Arrow, numpy and the Parquet writer release the GIL in the heavy parts)."""
    limits = RowLimits(config.heart_rate_min, config.heart_rate_max, config.max_steps_per_minute,
                       5.0, 3600.0, config.earliest,
                       now + timedelta(minutes=config.future_tolerance_minutes))
    known_users = KnownUsers(usable=split.usable["user_id"].combine_chunks().cast(pa.string()),
                             set_aside=pa.array(split.set_aside_ids, pa.string()))
    total_rows = sum(c.num_rows or 0 for c in accepted)
    gx_every = max(1, -(-total_rows // config.gx_sample_rows)) if config.great_expectations else 0
    workers = config.workers or os.cpu_count() or 1
    bucket_rows = max(1, config.max_rows_in_memory // workers)

    def check(numbered: tuple[int, list[FileCheck]]) -> UnitTally:
        return check_unit(*numbered, staged, known_users, limits, bucket_rows, gx_every)

    tally = UnitTally()
    units = plan_units(accepted)
    for outcome in track(map_ordered(check, enumerate(units), workers), total=len(units),
                         description="validating"):
        tally.merge(outcome)
    return tally


def _warnings(rejected: list[FileCheck], accepted: list[FileCheck], tally: UnitTally) -> list[str]:
    warnings = [f"{c.name} {'refused' if c.outside_cohort else 'set aside'}: {c.problems[0].message}"
                for c in rejected]
    warnings += [f"{c.name} is empty" for c in accepted if c.num_rows == 0]
    warnings += [f"{c.name}: extra columns ignored: {', '.join(c.extra_columns)}"
                 for c in accepted if c.extra_columns]
    if tally.unknown_devices:
        warnings.append("devices not in the catalog (stratum 'unknown'): "
                        + ", ".join(f"{k} ({n:,} rows)" for k, n in tally.unknown_devices.most_common()))
    return warnings


def _raise_if_unusable(result: ValidationResult, rejected: list[FileCheck],
                       user_problems: list[Problem], tally: UnitTally, config: ValidateConfig,
                       cohort: CohortPaths, report: Path) -> None:
    """The data-contract error when no row is usable or too many were quarantined (rows of
    users set aside for bad metadata count: `user_problems` names them)."""
    if result.rows_clean == 0:
        raise DataContractError(f"{cohort.root}: no usable sensor rows (see {report})",
                                [p for c in rejected for p in c.problems] + user_problems)
    share = result.quarantined_share
    if share > config.max_quarantine_share:
        top = Counter({k: v for c in tally.per_file.values() for k, v in c.items()
                       if k.startswith("rule:")}).most_common(3)
        estimated = (f", counting an estimated {result.rows_in_rejected_files_estimated:,} rows in "
                     "files that could not be read" if result.rows_in_rejected_files_estimated else "")
        raise DataContractError(
            f"validation: {share:.2%} of rows quarantined or set aside{estimated}, above the "
            f"bound of {config.max_quarantine_share:.2%} (report: {report})",
            [Problem(rule=k.removeprefix("rule:"), count=v, message=RULES_BY_NAME[k.removeprefix('rule:')][0],
                     fix=RULES_BY_NAME[k.removeprefix('rule:')][1]) for k, v in top]
            + [p for c in rejected for p in c.problems] + user_problems)


RULES_BY_NAME = {name: (expected, fix) for name, expected, fix in RULES.values()}


def _start_gx(users: pd.DataFrame, config: ValidateConfig, docs: Path) -> Future[GxSession]:
    """Import GX and validate the users table on a background thread while the gate runs."""
    from stethoscope.tasks.validate.gx import start_session

    users_frame = users.astype({"user_id": "str", "sex": "str", "timezone": "str"})
    users_frame["age"] = pd.to_numeric(users_frame["age"]).astype("float64")
    iana = sorted(zoneinfo.available_timezones())
    users_frame = users_frame.merge(pd.DataFrame({"timezone": iana, "timezone_iana": iana}),
                                    on="timezone", how="left", validate="many_to_one")
    return start_session(docs, {"users": (users_frame, {})})


def _finish_gx(started: Future[GxSession], tally: UnitTally, users: pd.DataFrame, config: ValidateConfig,
               now: datetime) -> dict:
    """Validate the gate's systematic sample of the rows as read; build the Data Docs."""
    sample = pa.concat_tables(tally.gx_parts).cast(pa.schema([f.with_nullable(True) for f in SENSOR_LOGS]))
    epoch_s = pc.divide(sample["timestamp"].cast(pa.int64()).cast(pa.float64()), 1e6)
    sample = sample.append_column("timestamp_epoch_s", epoch_s).to_pandas(
        types_mapper={pa.string(): pd.StringDtype()}.get)
    sample["steps"] = sample["steps"].astype("float64")  # 64-bit, nulls as NaN: GX's fast path
    timezones = users[["user_id", "timezone"]].astype(str).drop_duplicates("user_id")
    sample = sample.merge(timezones.rename(columns={"timezone": "users_timezone"}),
                          on="user_id", how="left", validate="many_to_one")
    parameters = {
        "heart_rate_min": config.heart_rate_min, "heart_rate_max": config.heart_rate_max,
        "steps_max_per_hour": config.max_steps_per_minute * 60,
        "mostly": 1.0 - config.max_quarantine_share,
        "earliest_epoch_s": config.earliest.timestamp(),
        "latest_epoch_s": (now + timedelta(minutes=config.future_tolerance_minutes)).timestamp(),
        "catalog_devices": sorted(DEVICE_CATALOG),
    }
    session = started.result()
    session.validate("sensor_logs", sample, parameters)
    session.build_docs()
    return {
        "sample_rows": len(sample),
        "data_docs": str(Path("data_docs") / "index.html"),
        "suites": [o.__dict__ for o in sorted(session.outcomes, key=lambda o: o.suite != "sensor_logs")],
    }


def _report(cohort, config, now, checks, tally, rows_in, rows_clean, rows_quarantined, rows_rejected,
            share, conditions, warnings, gx) -> dict:
    per_rule: Counter[str] = Counter()
    files = []
    for c in checks:
        name = c.name
        counts = tally.per_file.get(name, Counter())
        rules = {k.removeprefix("rule:"): v for k, v in counts.items() if k.startswith("rule:")}
        per_rule.update(rules)
        status = "rejected" if not c.ok else ("empty" if c.num_rows == 0 else "ok")
        files.append({
            "file": c.name, "status": status, "rows_in": counts.get("rows_in", 0) if c.ok else c.num_rows,
            "rows_clean": counts.get("rows_clean", 0), "rows_quarantined": counts.get("rows_quarantined", 0),
            "rules": rules, "extra_columns": c.extra_columns,
            "problems": [p.__dict__ for p in c.problems],
        })
    return {
        "cohort": str(cohort.root),
        "checked_at": now.isoformat(),
        "rows_in": rows_in, "rows_clean": rows_clean, "rows_quarantined": rows_quarantined,
        "rows_in_rejected_files": rows_rejected, "quarantined_share": share,
        "max_quarantine_share": config.max_quarantine_share,
        "users": tally.users, "conditions": conditions,
        "rules": {name: {"rows": per_rule.get(name, 0), "expected": expected, "fix": fix}
                  for name, expected, fix in RULES.values()},
        "unknown_devices": dict(tally.unknown_devices),
        "files": files, "warnings": warnings, "great_expectations": gx,
        "config": config.model_dump(mode="json"),
    }
