"""Vendor CSV exports -> a cohort directory (`stethoscope import-csv`).

Input: a folder holding, per user, `<USER>_hr.csv[.zip]` (row index, `user`, `datetime`,
`heartrate`) and `<USER>_steps.csv[.zip]` (row index, `user`, `datetime`, `steps`), `datetime`
being naive local wall-clock time. Output: a cohort directory (docs/architecture.md §4) with
`sensor_logs/<user_id>.parquet` in the SENSOR_LOGS schema and `users.parquet` in the USERS schema;
no labels (exports carry none). Heart rate and steps are joined on the exact timestamp (full
outer join), each at its own cadence: nothing is resampled. A user with one file only is
imported with the other channel null.

Wall clock -> UTC, done per user and per file (`localise_wall_clock`):
- nonexistent times (the spring-forward gap) are read with the offset in force before the gap,
  i.e. shifted forward by the gap (02:30 -> 03:30 in Europe/Berlin), and counted;
- ambiguous times (the fall-back hour) are resolved by order: in each run of consecutive
  ambiguous rows, rows before the one backward step of the wall clock are the first pass
  (daylight time), the rest the second pass (standard time). A run with no backward step (one
  pass only) or several (rows out of order) cannot be resolved; it is read as the first pass
  and counted as unresolved. No DST case ever raises.
Duplicate instants within one file (after conversion to UTC, so a shifted gap time that lands
on a recorded one is a duplicate too) keep their first row in file order; the others are
counted and dropped, so timestamps are strictly increasing per user.

Metadata per user: explicit option > the user's row in the users CSV > default (timezone UTC,
device fitbit_charge_4, age unknown, sex U). The cohort is staged in a hidden sibling directory
and renamed into place at the end, so a failed import leaves nothing half-written.

The parts live in private modules: finding, mapping and reading export files in
`tasks/cohorts/import_csv/exports.py`, wall clock -> UTC, duplicates and the channel join in
`tasks/cohorts/import_csv/clock.py`, user metadata and the users CSV in `tasks/cohorts/import_csv/users.py`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from stethoscope.schemas.atomic import write_parquet_atomic
from stethoscope.schemas.devices import is_known_device
from stethoscope.schemas.errors import DataContractError, Problem, UsageError
from stethoscope.schemas.layout import CohortPaths
from stethoscope.tasks.cohorts.import_csv.clock import (
    drop_duplicate_instants,
    join_channels,
    localise_wall_clock,
)
from stethoscope.tasks.cohorts.import_csv.config import (
    Channel,
    ChannelImport,
    ImportConfig,
    ImportResult,
    UserImport,
    UserProfile,
)
from stethoscope.tasks.cohorts.import_csv.exports import (
    ExportColumns,
    find_exports,
    map_columns,
    read_export,
    read_header,
)
from stethoscope.tasks.cohorts.import_csv.users import (
    metadata_problems,
    read_users_csv,
    resolve_profile,
    users_table,
)
from stethoscope.tasks.shared.progress import track

log = logging.getLogger("stethoscope.import_csv")


_NOTHING_WRITTEN = "the exports break their contract; nothing was written"


def import_csv_exports(source: Path, out: Path, config: ImportConfig) -> ImportResult:
    """Import every user's exports in `source` into a new cohort directory `out`."""
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    _check_paths(source, out)
    option_problems = metadata_problems(config.model_dump(), "option", None)
    if option_problems:
        raise UsageError("; ".join(p.render() for p in option_problems))
    users_rows = read_users_csv(config.users_csv) if config.users_csv else {}

    exports, problems = find_exports(source)
    if not exports and not problems:
        raise UsageError(f"no <USER>_hr.csv[.zip] or <USER>_steps.csv[.zip] in {source}.")
    column_maps, header_problems = _map_headers(exports)
    problems += header_problems
    if problems:
        raise DataContractError(_NOTHING_WRITTEN, problems)

    profiles = [resolve_profile(user, config, users_rows.get(user, {})) for user in sorted(exports)]
    imports = _write_cohort(out, profiles, exports, column_maps)
    warnings = _warnings(imports, exports, users_rows)
    return ImportResult(source, out, tuple(imports), warnings, time.perf_counter() - started)


def _map_headers(
    exports: dict[str, dict[Channel, Path]],
) -> tuple[dict[Path, ExportColumns], list[Problem]]:
    """The column map of every export, or the problems of its header; every header is checked
    before any data is read."""
    column_maps: dict[Path, ExportColumns] = {}
    problems: list[Problem] = []
    for files in exports.values():
        for channel, path in files.items():
            try:
                mapped = map_columns(read_header(path), channel, str(path))
            except DataContractError as exc:
                mapped = exc.problems
            if isinstance(mapped, list):
                problems += mapped
            else:
                column_maps[path] = mapped
    return column_maps, problems


def _write_cohort(
    out: Path, profiles: list[UserProfile], exports: dict[str, dict[Channel, Path]],
    column_maps: dict[Path, ExportColumns],
) -> list[UserImport]:
    """Import every user into a hidden sibling of `out`, then rename it into place; when a file
    breaks its contract, go on to name every broken file, then remove the staged cohort."""
    staging = out.parent / f".{out.name}.importing-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        cohort = CohortPaths(staging)
        imports, problems = [], []
        for profile in track(profiles, total=len(profiles), description="import-csv"):
            try:
                table, user_import = _import_user(profile, exports[profile.user_id], column_maps)
            except DataContractError as exc:  # go on, so that every broken file is named
                problems += exc.problems
                continue
            write_parquet_atomic(table, cohort.sensor_logs / f"{profile.user_id}.parquet")
            imports.append(user_import)
            log.debug("%s", user_import.describe())
        if problems:
            raise DataContractError(_NOTHING_WRITTEN, problems)
        if not any(i.num_rows for i in imports):
            raise DataContractError("the exports hold no rows; nothing was written",
                                    _no_rows(exports))
        write_parquet_atomic(users_table(profiles), cohort.users)
        if out.exists():
            out.rmdir()  # empty (checked); replaced by the staged cohort
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return imports


def _no_rows(exports: dict[str, dict[Channel, Path]]) -> list[Problem]:
    """Exports that hold a header only, all of them: a cohort of no samples is no cohort."""
    return [Problem(
        "no_rows", "holds a header but no rows; no export in the source holds a sample.",
        "export the samples (a header and one row per sample), or point --source at the "
        "folder that holds them.", file=str(path))
        for files in exports.values() for path in files.values()]


def _check_paths(source: Path, out: Path) -> None:
    if not source.is_dir():
        raise UsageError(f"--source {source} is not a directory of CSV exports.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            f"--out {out} exists and is not an empty directory; refusing to write "
            "into it. Choose a new directory, or remove this one first.")
    out.parent.mkdir(parents=True, exist_ok=True)


def _import_user(
    profile: UserProfile, files: dict[Channel, Path], column_maps: dict[Path, ExportColumns]
) -> tuple[pa.Table, UserImport]:
    channels: dict[Channel, tuple[np.ndarray, pa.Array]] = {}
    reports = []
    for channel, path in sorted(files.items()):
        local, values = read_export(path, column_maps[path], channel, profile.user_id)
        times = localise_wall_clock(local, profile.timezone)
        keep, num_duplicates = drop_duplicate_instants(times.utc_us)
        channels[channel] = (times.utc_us[keep], values.take(pa.array(keep)))
        reports.append(ChannelImport(
            channel, path.name, len(local), times.num_nonexistent, times.num_ambiguous_resolved,
            times.num_ambiguous_unresolved, num_duplicates))
    table = join_channels(profile.user_id, profile.device, channels)
    stamps = table["timestamp"]
    return table, UserImport(
        profile=profile,
        channels=tuple(reports),
        num_rows=table.num_rows,
        num_heart_rate=table.num_rows - table["heart_rate"].null_count,
        num_steps=table.num_rows - table["steps"].null_count,
        first_timestamp=stamps[0].as_py() if table.num_rows else None,
        last_timestamp=stamps[-1].as_py() if table.num_rows else None,
    )


def _warnings(
    imports: list[UserImport], exports: dict[str, dict[Channel, Path]],
    users_rows: dict[str, dict[str, str]],
) -> tuple[str, ...]:
    warnings = []
    for user in imports:
        uid, device = user.profile.user_id, user.profile.device
        warnings += [f"user {uid} has no {channel} export: {channel} is null."
                     for channel in user.missing_channels]
        if user.num_rows == 0:
            warnings.append(f"user {uid} has no samples (its exports hold a header only).")
        if not is_known_device(device):
            warnings.append(f"user {uid}: device {device!r} is not in the device catalog "
                            "(stratum 'unknown').")
    unused = sorted(set(users_rows) - set(exports))
    if unused:
        warnings.append(f"users CSV rows without exports (ignored): {unused[:10]}")
    return tuple(warnings)
