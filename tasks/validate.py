"""Validation stage: check a cohort against its data contract, keep everything.

Owns `<run>/validation/`: `clean/` (the rows that pass, canonical SENSOR_LOGS, each file holding
*all* rows of its users sorted by (user_id, timestamp)), `quarantine/` (every other row as it
came, the first rule it broke and where it came from), `rejected_files/` (files that cannot be
read or break the schema, copied whole), `report.json` and great-expectations `data_docs/`.
Invariant: rows_in == rows_clean + rows_quarantined, always.

Streaming: files sharing no user form units of one file; files that share users (found from
Parquet statistics, then exact user sets) form one unit, split into user buckets (by a hash of
user_id) of about `max_rows_in_memory / workers` rows. `workers` units are checked at once. Nothing is written in place: the
stage writes `validation.partial/` and renames it when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import zoneinfo
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from pydantic import Field

from schemas.config import StageConfig
from schemas.devices import DEVICE_CATALOG
from schemas.errors import DataContractError, Problem
from schemas.layout import CohortPaths, RunPaths
from schemas.tables import QUARANTINE, SENSOR_LOGS, SEXES
from tasks._validate_files import (
    FileCheck,
    check_file,
    read_canonical,
    read_user_ids,
    write_sensor_logs,
)
from tasks._validate_rules import (
    RULE_NAMES,
    RULES,
    CheckedRows,
    RowLimits,
    check_rows,
    dictionary_codes,
)
from tasks.io import list_parquet_files, write_json_atomic, write_parquet_atomic
from tasks.progress import track

if TYPE_CHECKING:
    from tasks._gx import GxSession

log = logging.getLogger("stethoscope.validate")


class ValidateConfig(StageConfig):
    heart_rate_min: float = Field(25.0, description="lowest plausible heart rate, bpm")
    heart_rate_max: float = Field(250.0, description="highest plausible heart rate, bpm")
    max_steps_per_minute: float = Field(250.0, gt=0, description="highest plausible cadence")
    earliest: datetime = Field(datetime(2010, 1, 1, tzinfo=UTC),
                               description="samples before this are quarantined")
    future_tolerance_minutes: float = Field(
        60.0, ge=0, description="samples later than now + this are quarantined")
    max_quarantine_share: float = Field(
        0.05, ge=0, le=1, description="fail when more than this share of rows is quarantined")
    great_expectations: bool = Field(True, description="run the GX suites and write Data Docs")
    gx_sample_rows: int = Field(100_000, ge=1000, description="rows in the GX sample")
    max_rows_in_memory: int = Field(20_000_000, ge=10_000,
                                    description="most rows held at once, over all workers")
    workers: int = Field(0, ge=0, description="units checked at once on threads (0: one per CPU core)")
    now: datetime | None = Field(None, description="'now' for the future check (default: wall clock)")


@dataclass(frozen=True)
class ValidationResult:
    """The small record the stage returns; details are in report.json."""

    run_dir: Path
    rows_in: int
    rows_clean: int
    rows_quarantined: int
    rows_in_rejected_files: int
    quarantined_share: float
    users: int
    files_read: int
    files_rejected: list[str]
    unknown_devices: dict[str, int]
    gx_success: bool | None
    warnings: list[str] = field(default_factory=list)

    @property
    def report(self) -> Path:
        return RunPaths(self.run_dir).validation_report

    @property
    def clean_dir(self) -> Path:
        return RunPaths(self.run_dir).clean

    def describe(self) -> str:
        paths = RunPaths(self.run_dir)
        lines = [
            f"validated {self.files_read} files: {self.rows_in:,} rows in, {self.rows_clean:,} clean, "
            f"{self.rows_quarantined:,} quarantined ({self.quarantined_share:.2%}), {self.users} users",
            f"  clean:      {paths.clean}",
            f"  quarantine: {paths.quarantine if self.rows_quarantined else '(none)'}",
            f"  report:     {paths.validation_report}",
        ]
        if self.gx_success is not None:
            lines.append(f"  data docs:  {paths.data_docs / 'index.html'} "
                         f"(great-expectations: {'pass' if self.gx_success else 'expectations failed'})")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --- the cohort's small tables ---------------------------------------------------------------


def load_users(path: Path) -> pd.DataFrame:
    """users.parquet, checked: every problem at once, as a DataContractError."""
    name = path.name
    if not path.exists():
        raise DataContractError(f"{path}: users table is missing", [Problem(
            rule="missing_file", file=name, message="the cohort has no users.parquet.",
            fix="write users.parquet with user_id, age, sex, timezone (one row per user)")])
    try:
        users = pq.read_table(path).to_pandas()
    except Exception as exc:
        raise DataContractError(f"{path}: users table cannot be read", [Problem(
            rule="unreadable_file", file=name, message=f"{type(exc).__name__}: {exc}.",
            fix="re-write users.parquet")]) from exc
    problems = []
    missing = [c for c in ("user_id", "age", "sex", "timezone") if c not in users.columns]
    problems += [Problem(rule="missing_column", file=name, column=c, message="column is missing.",
                         fix="add it (user_id str, age years, sex F/M/U, timezone IANA name)")
                 for c in missing]
    if not missing:
        dup = users["user_id"][users["user_id"].duplicated()].unique().tolist()
        if dup:
            problems.append(Problem(rule="duplicate_user", file=name, column="user_id", count=len(dup),
                                    message=f"user ids repeat: {dup[:5]}.", fix="keep one row per user"))
        zones = zoneinfo.available_timezones()
        bad_tz = sorted(set(users.loc[~users["timezone"].isin(zones), "timezone"].astype(str)))
        if bad_tz:
            problems.append(Problem(rule="unknown_timezone", file=name, column="timezone",
                                    message=f"not IANA timezone names: {bad_tz[:5]}.",
                                    fix="use names like 'Europe/Berlin' (zoneinfo.available_timezones())"))
        bad_sex = sorted(set(users.loc[~users["sex"].isin(SEXES), "sex"].astype(str)))
        if bad_sex:
            problems.append(Problem(rule="unknown_sex", file=name, column="sex",
                                    message=f"values {bad_sex[:5]} are not F, M or U.",
                                    fix="map them to F, M or U (unknown)"))
        age = pd.to_numeric(users["age"], errors="coerce")
        bad_age = int(((age < 0) | (age > 120) | (age.isna() & users["age"].notna())).sum())
        if bad_age:
            problems.append(Problem(rule="age_out_of_range", file=name, column="age", count=bad_age,
                                    message="ages must be numbers within [0, 120] years or null.",
                                    fix="repair or null the ages"))
    if problems:
        raise DataContractError(f"{path}: users table breaks its contract", problems)
    return users


def check_labels(path: Path) -> list[str]:
    """labels.parquet (optional): user_id plus 0/1/null condition columns. Returns the conditions."""
    if not path.exists():
        return []
    table = pq.read_table(path)
    problems = []
    if "user_id" not in table.column_names:
        problems.append(Problem(rule="missing_column", file=path.name, column="user_id",
                                message="column is missing.", fix="add user_id"))
    conditions = [c for c in table.column_names if c != "user_id"]
    for c in conditions:
        column = table[c]
        if not (pa.types.is_integer(column.type) or pa.types.is_boolean(column.type)):
            problems.append(Problem(rule="wrong_type", file=path.name, column=c,
                                    message=f"expected 0/1/null, found type {column.type}.",
                                    fix="write the condition as an integer column (pandas: Int8)"))
            continue
        values = set(pc.unique(column.cast(pa.int64()).drop_null()).to_pylist())
        if not values <= {0, 1}:
            problems.append(Problem(rule="label_not_binary", file=path.name, column=c,
                                    message=f"values {sorted(values - {0, 1})[:5]} are not 0/1.",
                                    fix="null = unknown; 0 = no; 1 = yes"))
    if problems:
        raise DataContractError(f"{path}: labels table breaks its contract", problems)
    return conditions


# --- planning: which files must be processed together -----------------------------------------


def plan_units(checks: list[FileCheck]) -> list[list[FileCheck]]:
    """Group files that share users (so every clean file holds all rows of its users).

    Parquet min/max statistics decide most cases without reading data; files whose user ranges
    overlap have their user_id column read to decide exactly."""
    order = sorted(range(len(checks)), key=lambda i: checks[i].user_range or ("", ""))
    parent = list(range(len(checks)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # candidate pairs: overlapping ranges (unknown range overlaps everything)
    users: dict[int, set[str]] = {}

    def user_set(i: int) -> set[str]:
        if i not in users:
            users[i] = set(read_user_ids(checks[i].path).to_pylist())
        return users[i]

    for a_pos, a in enumerate(order):
        ra = checks[a].user_range
        for b in order[a_pos + 1:]:
            rb = checks[b].user_range
            if ra is not None and rb is not None and rb[0] > ra[1]:
                break  # sorted by range start: no later file can overlap a
            if find(a) != find(b) and user_set(a) & user_set(b):
                parent[find(b)] = find(a)
    groups: dict[int, list[FileCheck]] = {}
    for i in range(len(checks)):
        groups.setdefault(find(i), []).append(checks[i])
    return sorted(groups.values(), key=lambda g: str(g[0].path))


# --- the stage -------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Running counts while streaming; per file and per rule."""

    per_file: dict[str, Counter] = field(default_factory=dict)
    unknown_devices: Counter = field(default_factory=Counter)
    users: int = 0
    gx_parts: list[pa.Table] = field(default_factory=list)

    def add(self, name: str, key: str, count: int) -> None:
        self.per_file.setdefault(name, Counter())[key] += int(count)

    def merge(self, other: _Tally) -> None:
        for name, counts in other.per_file.items():
            self.per_file.setdefault(name, Counter()).update(counts)
        self.unknown_devices.update(other.unknown_devices)
        self.users += other.users
        self.gx_parts += other.gx_parts


def validate_cohort(cohort: CohortPaths, run: RunPaths, config: ValidateConfig) -> ValidationResult:
    """Validate `cohort` into `run.validation`; raise DataContractError when unusable."""
    users = load_users(cohort.users)
    conditions = check_labels(cohort.labels)
    files = list_parquet_files(cohort.sensor_logs) if cohort.sensor_logs.exists() else []
    if not files:
        raise DataContractError(f"{cohort.sensor_logs}: no sensor logs", [Problem(
            rule="missing_file", file=str(cohort.sensor_logs), message="no files found.",
            fix="write the sensor logs as Parquet under <data>/sensor_logs/")])

    # Write a hidden sibling run directory, move its validation/ into place when complete.
    staged = RunPaths(run.root.parent / f".{run.root.name}.validate-partial")
    shutil.rmtree(staged.root, ignore_errors=True)
    now = config.now or datetime.now(UTC)
    limits = RowLimits(config.heart_rate_min, config.heart_rate_max, config.max_steps_per_minute,
                       5.0, 3600.0, config.earliest, now + timedelta(minutes=config.future_tolerance_minutes))
    known_users = pa.array(users["user_id"].astype(str).tolist(), pa.string())

    checks = [check_file(p, str(p.relative_to(cohort.sensor_logs))) for p in files]
    rejected = [c for c in checks if not c.ok]
    accepted = [c for c in checks if c.ok]
    for c in rejected:
        target = staged.rejected_files / c.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(c.path, target)
        log.warning("set aside %s: %s", c.name, "; ".join(p.render() for p in c.problems))

    total_rows = sum(c.num_rows or 0 for c in accepted)
    gx_every = max(1, -(-total_rows // config.gx_sample_rows)) if config.great_expectations else 0
    gx_started = _start_gx(users, config, staged.data_docs) if config.great_expectations else None
    tally = _Tally()
    units = plan_units(accepted)
    workers = config.workers or os.cpu_count() or 1
    # Units share no user, so they are checked on `workers` threads at once (Arrow and numpy
    # release the GIL in the heavy parts); each bucket holds at most max_rows_in_memory/workers.
    bucket_rows = max(1, config.max_rows_in_memory // workers)

    def check(numbered: tuple[int, list[FileCheck]]) -> _Tally:
        return _check_unit(*numbered, staged, known_users, limits, bucket_rows, gx_every)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validate") as pool:
        for outcome in track(pool.map(check, enumerate(units)), total=len(units), description="validating"):
            tally.merge(outcome)

    rows_in = sum(c["rows_in"] for c in tally.per_file.values())
    rows_clean = sum(c["rows_clean"] for c in tally.per_file.values())
    rows_quarantined = sum(c["rows_quarantined"] for c in tally.per_file.values())
    assert rows_in == rows_clean + rows_quarantined, "row accounting broke: a bug"
    rows_rejected = sum(c.num_rows or 0 for c in rejected)
    share = (rows_quarantined + rows_rejected) / max(1, rows_in + rows_rejected)

    warnings = [f"{c.name} set aside: {c.problems[0].message}" for c in rejected]
    warnings += [f"{c.name} is empty" for c in accepted if c.num_rows == 0]
    warnings += [f"{c.name}: extra columns ignored: {', '.join(c.extra_columns)}"
                 for c in accepted if c.extra_columns]
    if tally.unknown_devices:
        warnings.append("devices not in the catalog (stratum 'unknown'): "
                        + ", ".join(f"{k} ({n:,} rows)" for k, n in tally.unknown_devices.most_common()))

    gx = _finish_gx(gx_started, tally, users, config, now) if gx_started and rows_in else None
    report = _report(cohort, config, now, checks, tally, rows_in, rows_clean, rows_quarantined,
                     rows_rejected, share, conditions, warnings, gx)
    write_json_atomic(report, staged.validation_report)

    final = run.validation
    shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    staged.validation.rename(final)
    shutil.rmtree(staged.root)
    result = ValidationResult(
        run_dir=run.root, rows_in=rows_in, rows_clean=rows_clean, rows_quarantined=rows_quarantined,
        rows_in_rejected_files=rows_rejected, quarantined_share=share, users=tally.users,
        files_read=len(files), files_rejected=[c.name for c in rejected],
        unknown_devices=dict(tally.unknown_devices),
        gx_success=None if gx is None else all(o["success"] for o in gx["suites"]),
        warnings=warnings)
    if rows_clean == 0:
        raise DataContractError(f"{cohort.root}: no usable sensor rows (see {final / 'report.json'})",
                                [p for c in rejected for p in c.problems])
    if share > config.max_quarantine_share:
        top = Counter({k: v for c in tally.per_file.values() for k, v in c.items()
                       if k.startswith("rule:")}).most_common(3)
        raise DataContractError(
            f"validation: {share:.2%} of rows quarantined or set aside, above the bound of "
            f"{config.max_quarantine_share:.2%} (report: {final / 'report.json'})",
            [Problem(rule=k.removeprefix("rule:"), count=v, message=RULES_BY_NAME[k.removeprefix('rule:')][0],
                     fix=RULES_BY_NAME[k.removeprefix('rule:')][1]) for k, v in top]
            + [p for c in rejected for p in c.problems])
    return result


RULES_BY_NAME = {name: (expected, fix) for name, expected, fix in RULES.values()}


def _check_unit(unit_no: int, unit: list[FileCheck], staged: RunPaths, known_users: pa.Array,
                limits: RowLimits, bucket_rows: int, gx_every: int) -> _Tally:
    """Check one unit of files (sharing users) in user buckets of at most `bucket_rows` rows;
    write its clean and quarantined rows; return its counts."""
    tally = _Tally()
    rows = sum(c.num_rows or 0 for c in unit)
    num_buckets = max(1, -(-rows // bucket_rows))
    for bucket in range(num_buckets):
        parts, sources, positions = [], [], []
        for source_no, c in enumerate(unit):
            table = read_canonical(c.path)
            position = None
            if num_buckets > 1:
                keep = _bucket_of(table["user_id"], num_buckets) == bucket
                table, position = table.filter(pa.array(keep)), np.flatnonzero(keep)
            parts.append(table)
            sources.append(np.full(table.num_rows, source_no, dtype=np.int32))
            positions.append(np.arange(table.num_rows, dtype=np.int64) if position is None else position)
        table = pa.concat_tables(parts).unify_dictionaries() if len(parts) > 1 else parts[0]
        checked = check_rows(table, known_users, limits)
        name = f"part-{unit_no:05d}-{bucket:03d}.parquet"
        _write_outcome(unit, checked, name, staged, tally, num_buckets == 1)
        if checked.table.num_rows and gx_every:
            tally.gx_parts.append(checked.table.take(pa.array(np.arange(0, checked.table.num_rows, gx_every))))
        _count_rules(unit, checked, sources, positions, staged, name, tally)
    return tally


def _write_outcome(unit: list[FileCheck], checked: CheckedRows, name: str, staged: RunPaths,
                   tally: _Tally, whole_unit: bool) -> None:
    """Write the clean rows of one bucket; count its users and its devices outside the catalog."""
    clean_mask = checked.rule == 0
    all_clean = bool(clean_mask.all())
    if not clean_mask.any():
        return
    target = staged.clean / name
    if len(unit) == 1 and whole_unit and unit[0].canonical and all_clean and not checked.reordered:
        # Nothing to change: copy the bytes instead of re-encoding them.
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(unit[0].path, target)
        clean = checked.table
    else:
        clean = checked.table if all_clean else checked.table.filter(pa.array(clean_mask))
        write_sensor_logs(clean, target)
    # users with a clean row: one run each (rows are sorted by user)
    clean_per_run = np.add.reduceat(clean_mask, checked.user_starts) if not all_clean else None
    tally.users += checked.user_starts.size if all_clean else int(np.count_nonzero(clean_per_run))
    for device, count in _device_counts(clean["device"]).items():
        if device not in DEVICE_CATALOG:
            tally.unknown_devices[device] += count


def _count_rules(unit: list[FileCheck], checked: CheckedRows, sources: list[np.ndarray],
                 positions: list[np.ndarray], staged: RunPaths, name: str, tally: _Tally) -> None:
    """Count every row under its first broken rule, per file; write the quarantined rows with
    the rule and where they came from."""
    rule = checked.rule
    bad = rule != 0
    source = sources[0] if len(sources) == 1 else np.concatenate(sources)
    if bad.any():
        position = positions[0] if len(positions) == 1 else np.concatenate(positions)
        bad_rows = np.flatnonzero(bad)
        from_row = bad_rows if checked.source_row is None else checked.source_row[bad_rows]
        names = np.array([c.name for c in unit], dtype=object)
        rule_names = np.array([RULE_NAMES[r] for r in range(1, 8)], dtype=object)
        quarantined = checked.table.take(pa.array(bad_rows))
        quarantined = quarantined.append_column("rule", pa.array(rule_names[rule[bad_rows] - 1], pa.string())
        ).append_column("source_file", pa.array(names[source[from_row]], pa.string())
        ).append_column("source_row", pa.array(position[from_row], pa.int64()))
        write_parquet_atomic(quarantined.cast(QUARANTINE), staged.quarantine / name)

    for source_no, c in enumerate(unit):
        if len(unit) == 1:
            mine = rule
        else:  # source is in the order as read; rule in sorted order
            in_order = source if checked.source_row is None else source[checked.source_row]
            mine = rule[in_order == source_no]
        counts = np.bincount(mine, minlength=8)
        tally.add(c.name, "rows_in", int(mine.size))
        tally.add(c.name, "rows_clean", int(counts[0]))
        tally.add(c.name, "rows_quarantined", int(counts[1:].sum()))
        for code in range(1, 8):
            if counts[code]:
                tally.add(c.name, f"rule:{RULE_NAMES[code]}", int(counts[code]))


def _device_counts(device: pa.ChunkedArray) -> Counter:
    """Rows per device value. Devices come in long runs (a user wears one for weeks), so
    counting runs of dictionary codes costs one integer comparison per row."""
    counts: Counter = Counter()
    for chunk in device.chunks:
        if not len(chunk):
            continue
        codes = chunk.indices.to_numpy(zero_copy_only=False)
        starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
        lengths = np.diff(np.r_[starts, codes.size])
        values = chunk.dictionary.take(chunk.indices.take(pa.array(starts))).to_pylist()
        for value, length in zip(values, lengths.tolist(), strict=True):
            counts[value] += length
    return counts


def _bucket_of(user_id: pa.ChunkedArray, num_buckets: int) -> np.ndarray:
    """A stable bucket per user (hash of the id), so a user's rows land in one bucket
    (null user_id: bucket 0)."""
    codes = dictionary_codes(user_id)
    values = user_id.chunks[0].dictionary.to_numpy(zero_copy_only=False) if user_id.num_chunks else []
    hashed = pd.util.hash_array(np.asarray(values, dtype=object)) % num_buckets
    return np.r_[hashed, 0][codes].astype(np.int64)


def _start_gx(users: pd.DataFrame, config: ValidateConfig, docs: Path) -> Future[GxSession]:
    """Import GX and validate the users table on a background thread while the gate runs."""
    from tasks._gx import start_session

    users_frame = users.astype({"user_id": "str", "sex": "str", "timezone": "str"})
    users_frame["age"] = pd.to_numeric(users_frame["age"]).astype("float64")
    iana = sorted(zoneinfo.available_timezones())
    users_frame = users_frame.merge(pd.DataFrame({"timezone": iana, "timezone_iana": iana}),
                                    on="timezone", how="left", validate="many_to_one")
    return start_session(docs, {"users": (users_frame, {})})


def _finish_gx(started: Future[GxSession], tally: _Tally, users: pd.DataFrame, config: ValidateConfig,
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
    per_rule = Counter()
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


@task(name="validate", task_run_name="validate {cohort_dir.name}")
def validate_task(cohort_dir: Path, run_dir: Path, config: ValidateConfig) -> ValidationResult:
    """Prefect shell: validate the cohort into the run directory."""
    return validate_cohort(CohortPaths(cohort_dir), RunPaths(run_dir), config)
