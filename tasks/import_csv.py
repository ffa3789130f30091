"""Vendor CSV exports -> a cohort directory (`stethoscope import-csv`).

Input: a folder holding, per user, `<USER>_hr.csv[.zip]` (row index, `user`, `datetime`,
`heartrate`) and `<USER>_steps.csv[.zip]` (row index, `user`, `datetime`, `steps`), `datetime`
being naive local wall-clock time. Output: a cohort directory (DESIGN section 3) with
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
`tasks/_csv_exports.py`, wall clock -> UTC, duplicates and the channel join in
`tasks/_csv_clock.py`, user metadata and the users CSV in `tasks/_csv_users.py`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from schemas.config import StageConfig
from schemas.devices import is_known_device
from schemas.errors import DataContractError, Problem, UsageError
from schemas.layout import CohortPaths
from tasks._csv_clock import (
    LocalisedTimes,
    drop_duplicate_instants,
    join_channels,
    localise_wall_clock,
)
from tasks._csv_exports import (
    CHANNELS,
    Channel,
    ExportColumns,
    find_exports,
    map_columns,
    read_export,
    read_header,
)
from tasks._csv_users import (
    DEFAULT_DEVICE,
    DEFAULT_SEX,
    DEFAULT_TIMEZONE,
    UserProfile,
    metadata_problems,
    read_users_csv,
    resolve_profile,
    users_table,
)
from tasks.io import write_parquet_atomic
from tasks.progress import track

log = logging.getLogger("stethoscope.import_csv")

_NOTHING_WRITTEN = "the exports break their contract; nothing was written"


class ImportConfig(StageConfig):
    """Metadata the exports lack. None = take it from `users_csv`, else the default. Values are
    checked when the import starts (UsageError), like those of the users CSV."""

    timezone: str | None = None
    device: str | None = None
    age: float | None = None
    sex: Literal["F", "M", "U"] | None = None
    users_csv: Path | None = None



@dataclass(frozen=True)
class ChannelImport:
    """What happened to one export file."""

    channel: Channel
    file: str
    num_rows_read: int
    num_nonexistent: int
    num_ambiguous_resolved: int
    num_ambiguous_unresolved: int
    num_duplicates: int


@dataclass(frozen=True)
class UserImport:
    """One user's import: metadata, per-file counts, and the written table's shape."""

    profile: UserProfile
    channels: tuple[ChannelImport, ...]
    num_rows: int
    num_heart_rate: int
    num_steps: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None

    @property
    def missing_channels(self) -> tuple[Channel, ...]:
        present = {c.channel for c in self.channels}
        return tuple(c for c in CHANNELS if c not in present)

    def _total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.channels)

    @property
    def num_nonexistent(self) -> int:
        return self._total("num_nonexistent")

    @property
    def num_ambiguous_resolved(self) -> int:
        return self._total("num_ambiguous_resolved")

    @property
    def num_ambiguous_unresolved(self) -> int:
        return self._total("num_ambiguous_unresolved")

    @property
    def num_duplicates(self) -> int:
        return self._total("num_duplicates")

    def describe(self) -> str:
        p = self.profile
        span = (
            f"{self.first_timestamp:%Y-%m-%d %H:%M:%S}..{self.last_timestamp:%Y-%m-%d %H:%M:%S} UTC"
            if self.first_timestamp and self.last_timestamp
            else "no samples"
        )
        return (
            f"{p.user_id}: {self.num_rows:,} rows (hr {self.num_heart_rate:,}, steps "
            f"{self.num_steps:,}), {span}, {p.timezone}, {p.device}; nonexistent "
            f"{self.num_nonexistent}, ambiguous {self.num_ambiguous_resolved} resolved + "
            f"{self.num_ambiguous_unresolved} unresolved, duplicates {self.num_duplicates}"
        )


@dataclass(frozen=True)
class ImportResult:
    """The cohort written and what happened to every user."""

    source: Path
    out: Path
    users: tuple[UserImport, ...]
    warnings: tuple[str, ...]
    seconds: float

    @property
    def num_rows(self) -> int:
        return sum(u.num_rows for u in self.users)

    def describe(self) -> str:
        lines = [
            f"{len(self.users)} users, {self.num_rows:,} rows from {self.source} "
            f"-> {self.out} in {self.seconds:.1f} s"
        ]
        lines += [f"  {u.describe()}" for u in self.users]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------


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
        write_parquet_atomic(users_table(profiles), cohort.users)
        if out.exists():
            out.rmdir()  # empty (checked); replaced by the staged cohort
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return imports


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


__all__ = [
    "CHANNELS", "DEFAULT_DEVICE", "DEFAULT_SEX", "DEFAULT_TIMEZONE", "Channel", "ChannelImport",
    "ImportConfig", "ImportResult", "LocalisedTimes", "UserImport", "UserProfile",
    "drop_duplicate_instants", "import_csv_exports", "join_channels", "localise_wall_clock",
    "map_columns", "resolve_profile",
]
