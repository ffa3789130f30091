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
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import secrets
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from schemas.config import StageConfig
from schemas.devices import is_known_device
from schemas.errors import DataContractError, Problem, UsageError
from schemas.layout import CohortPaths
from schemas.tables import SENSOR_LOGS, SEXES, USERS
from tasks.io import write_parquet_atomic
from tasks.progress import track

log = logging.getLogger("stethoscope.import_csv")

Channel = Literal["heart_rate", "steps"]
CHANNELS: tuple[Channel, ...] = ("heart_rate", "steps")
DEFAULT_TIMEZONE = "UTC"
DEFAULT_DEVICE = "fitbit_charge_4"
DEFAULT_SEX = "U"

# Accepted spellings (lower case, spaces and dashes as underscores). A column is recognised only
# when exactly one of a role's spellings is present; anything else is a DataContractError.
_TIME_NAMES = ("datetime", "date_time", "timestamp", "local_time", "local_datetime")
_VALUE_NAMES: dict[Channel, tuple[str, ...]] = {
    "heart_rate": ("heartrate", "heart_rate", "hr", "bpm", "value"),
    "steps": ("steps", "step_count", "steps_count", "value"),
}
_USER_NAMES = ("user", "user_id")
_FILE_PATTERN = re.compile(r"^(?P<user>.+)_(?P<kind>hr|steps)\.csv(?P<zip>\.zip)?$", re.IGNORECASE)
_FILE_KIND: dict[str, Channel] = {"hr": "heart_rate", "steps": "steps"}
_USERS_CSV_COLUMNS = ("user_id", "timezone", "device", "age", "sex")
_US_PER_S = 1_000_000
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
class UserProfile:
    """One user's resolved metadata."""

    user_id: str
    timezone: str
    device: str
    age: float | None
    sex: str


@dataclass(frozen=True)
class LocalisedTimes:
    """Wall-clock times converted to UTC (int64 microseconds since the epoch)."""

    utc_us: np.ndarray
    num_nonexistent: int
    num_ambiguous_resolved: int
    num_ambiguous_unresolved: int


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


@dataclass(frozen=True)
class _Columns:
    """Which header names play which role in one export file."""

    time: str
    value: str
    user: str | None


# --- pure functions ------------------------------------------------------------------------


def localise_wall_clock(local: np.ndarray, timezone: str) -> LocalisedTimes:
    """Convert naive wall-clock times (datetime64, in file order) to UTC (module docstring)."""
    index = pd.DatetimeIndex(np.asarray(local, dtype="datetime64[us]"))
    n = len(index)
    # Both readings of every row; they differ only in the fall-back hour, and are NaT (the
    # minimum int64) only in the spring-forward gap.
    first = index.tz_localize(timezone, ambiguous=np.ones(n, bool), nonexistent="NaT").asi8
    second = index.tz_localize(timezone, ambiguous=np.zeros(n, bool), nonexistent="NaT").asi8
    nonexistent = first == np.iinfo(np.int64).min
    earlier, later = np.minimum(first, second), np.maximum(first, second)
    utc = earlier.copy()

    if nonexistent.any():
        # The last instant before the gap carries the offset in force before it.
        gap = index[nonexistent]
        before = gap.tz_localize(timezone, nonexistent="shift_backward")
        offset_us = before.tz_localize(None).asi8 - before.asi8
        utc[nonexistent] = gap.asi8 - offset_us

    ambiguous = ~nonexistent & (first != second)
    wall = index.asi8
    resolved = unresolved = 0
    for run in _ambiguous_runs(np.flatnonzero(ambiguous), wall):
        steps_back = np.flatnonzero(np.diff(wall[run]) < 0)
        if len(steps_back) == 1:
            second_pass = run[steps_back[0] + 1 :]
            utc[second_pass] = later[second_pass]
            resolved += len(run)
        else:
            unresolved += len(run)
    return LocalisedTimes(utc, int(nonexistent.sum()), resolved, unresolved)


def _ambiguous_runs(positions: np.ndarray, wall_us: np.ndarray) -> Iterator[np.ndarray]:
    """Runs of consecutive ambiguous rows; a new local date starts a new run (transition)."""
    if len(positions) == 0:
        return
    day = wall_us[positions] // (86_400 * _US_PER_S)
    breaks = np.flatnonzero((np.diff(positions) != 1) | (np.diff(day) != 0)) + 1
    yield from np.split(positions, breaks)


def drop_duplicate_instants(utc_us: np.ndarray) -> tuple[np.ndarray, int]:
    """Row positions (sorted by time) that keep the first row, in file order, of every instant;
    and how many rows were dropped."""
    order = np.argsort(utc_us, kind="stable")
    ordered = utc_us[order]
    keep = np.ones(len(order), bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return order[keep], int((~keep).sum())


def join_channels(
    user_id: str, device: str, channels: dict[Channel, tuple[np.ndarray, pa.Array]]
) -> pa.Table:
    """Full outer join of each channel's (sorted unique utc_us, values) on the timestamp."""
    timestamps = np.unique(np.concatenate([t for t, _ in channels.values()] or [np.empty(0, "i8")]))
    n = len(timestamps)
    columns: dict[str, pa.Array] = {}
    for channel, type_ in (("heart_rate", pa.float64()), ("steps", pa.int64())):
        if channel not in channels:
            columns[channel] = pa.nulls(n, type_)
            continue
        times, values = channels[channel]
        take = np.full(n, -1, dtype=np.int64)
        take[np.searchsorted(timestamps, times)] = np.arange(len(times))
        # take() with a null index yields null: the rows this channel has no sample for.
        columns[channel] = values.take(pa.array(take, mask=take < 0)).cast(type_)
    return pa.table(
        {
            "user_id": pa.repeat(pa.scalar(user_id), n),
            "timestamp": pa.array(timestamps, type=pa.timestamp("us", tz="UTC")),
            "heart_rate": columns["heart_rate"],
            "steps": columns["steps"],
            "device": pa.repeat(pa.scalar(device), n),
        },
        schema=SENSOR_LOGS,
    )


def map_columns(header: list[str], channel: Channel, file: str) -> _Columns | list[Problem]:
    """Find the time, value and (optional) user column of an export by their header names."""
    by_name = {re.sub(r"[\s\-]+", "_", name.strip().lower()): name for name in header}
    problems: list[Problem] = []
    found: dict[str, str | None] = {}
    for role, names, required in (
        ("time", _TIME_NAMES, True),
        ("value", _VALUE_NAMES[channel], True),
        ("user", _USER_NAMES, False),
    ):
        matches = [by_name[n] for n in names if n in by_name]
        found[role] = matches[0] if len(matches) == 1 else None
        expected = names[0]
        if len(matches) > 1:
            problems.append(Problem(
                "ambiguous_column", f"columns {matches} could all be the {role} column.",
                f"keep one of them, or rename it to {expected!r}.", file=file, column=matches[0]))
        elif required and not matches:
            problems.append(Problem(
                "missing_column", f"no {role} column; expected one named {expected!r} "
                f"(or one of {list(names[1:])}); the header is {header}.",
                f"rename the column to {expected!r}.", file=file, column=expected))
    if problems:
        return problems
    return _Columns(time=found["time"], value=found["value"], user=found["user"])


def resolve_profile(user_id: str, config: ImportConfig, row: dict[str, str]) -> UserProfile:
    """Option > users-CSV row > default, field by field."""
    age = config.age if config.age is not None else (float(row["age"]) if row.get("age") else None)
    return UserProfile(
        user_id=user_id,
        timezone=config.timezone or row.get("timezone") or DEFAULT_TIMEZONE,
        device=config.device or row.get("device") or DEFAULT_DEVICE,
        age=age,
        sex=config.sex or (row.get("sex") or "").upper() or DEFAULT_SEX,
    )


def users_table(profiles: list[UserProfile]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {"user_id": p.user_id, "age": p.age, "sex": p.sex, "timezone": p.timezone}
            for p in profiles
        ],
        schema=USERS,
    )


def _metadata_problems(values: dict, where: str, file: str | None) -> list[Problem]:
    """Check metadata values (options or one users-CSV row); each problem says where."""
    problems = []
    tz = values.get("timezone")
    if tz:
        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(Problem(
                "unknown_timezone", f"{where}: {tz!r} is not an IANA timezone.",
                "use a name like 'Europe/Berlin' or 'America/New_York'.", file=file,
                column="timezone"))
    age = values.get("age")
    if age not in (None, ""):
        try:
            ok = 0 <= float(age) <= 130
        except ValueError:
            ok = False
        if not ok:
            problems.append(Problem(
                "bad_age", f"{where}: age {age!r} is not a number of years in [0, 130].",
                "give the age in years, or leave it empty for unknown.", file=file, column="age"))
    sex = values.get("sex")
    if sex and str(sex).upper() not in SEXES:
        problems.append(Problem(
            "bad_sex", f"{where}: sex {sex!r} is not one of {list(SEXES)}.",
            "use F, M or U (unknown), or leave it empty.", file=file, column="sex"))
    return problems


# --- I/O helpers ---------------------------------------------------------------------------


def find_exports(source: Path) -> tuple[dict[str, dict[Channel, Path]], list[Problem]]:
    """Export files in `source` by user and channel; other files are left alone."""
    exports: dict[str, dict[Channel, Path]] = {}
    problems = []
    for path in sorted(source.iterdir()):
        match = _FILE_PATTERN.match(path.name)
        if not match or not path.is_file():
            continue
        user, channel = match["user"], _FILE_KIND[match["kind"].lower()]
        if user.startswith((".", "_")):
            problems.append(Problem(
                "bad_user_id", f"user id {user!r} starts with '.' or '_', which the cohort "
                "reader skips as a hidden file.", "rename the file.", file=str(path)))
            continue
        previous = exports.setdefault(user, {}).setdefault(channel, path)
        if previous != path:
            problems.append(Problem(
                "duplicate_export", f"{previous.name} and {path.name} are both the {channel} "
                f"export of user {user!r}.", "keep only one of them.", file=str(path)))
    return exports, problems


@contextmanager
def _open_export(path: Path) -> Iterator[io.BufferedIOBase]:
    """A binary stream of the CSV, unzipping `.zip` files (which must hold one CSV)."""
    if path.suffix.lower() != ".zip":
        with path.open("rb") as stream:
            yield stream
        return
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataContractError("cannot open an export", [Problem(
            "unreadable_file", f"not a readable zip archive ({exc}).",
            "re-download the export, or unzip it and pass the .csv.", file=str(path))]) from exc
    with archive:
        members = [
            m for m in archive.infolist()
            if not m.is_dir() and not Path(m.filename).name.startswith(".")
            and not m.filename.startswith("__MACOSX")
        ]
        if len(members) != 1:
            raise DataContractError("cannot open an export", [Problem(
                "unreadable_file", f"expected exactly one CSV in the archive, found "
                f"{[m.filename for m in members]}.", "zip one CSV per file.", file=str(path))])
        with archive.open(members[0]) as stream:
            yield stream


def read_header(path: Path) -> list[str]:
    with _open_export(path) as stream:
        first_line = io.TextIOWrapper(stream, encoding="utf-8-sig").readline()
    return next(csv.reader([first_line]), [])


def read_export(
    path: Path, columns: _Columns, channel: Channel, user_id: str
) -> tuple[np.ndarray, pa.Array]:
    """(naive wall-clock datetime64[us], values) of one export, in file order."""
    names = [columns.time, columns.value] + ([columns.user] if columns.user else [])
    with _open_export(path) as stream:
        table = pacsv.read_csv(
            stream,
            convert_options=pacsv.ConvertOptions(
                include_columns=names, column_types={n: pa.string() for n in names},
                strings_can_be_null=True,
            ),
        )
    times = _cast(table[columns.time], pa.timestamp("us"), path, columns.time,
                  "naive local ISO 8601 times like '2020-05-19 00:00:00'",
                  "write wall-clock times without a zone offset, as YYYY-MM-DD HH:MM:SS.")
    values = _cast(table[columns.value], pa.float64(), path, columns.value, "numbers",
                   "remove or blank the values that are not numbers.")
    problems = []
    if times.null_count:
        problems.append(Problem("missing_time", "rows without a time.", "remove those rows.",
                                file=str(path), column=columns.time, count=times.null_count))
    if channel == "steps":
        whole = pc.and_(pc.is_finite(values), pc.equal(values, pc.floor(values)))
        num_bad = pc.sum(pc.invert(whole)).as_py() or 0
        if num_bad:
            problems.append(Problem(
                "bad_steps", "step counts that are not whole finite numbers.",
                "export whole step counts per interval.", file=str(path), column=columns.value,
                count=num_bad))
    if columns.user:
        others = [u for u in pc.unique(table[columns.user].drop_null()).to_pylist() if u != user_id]
        if others:
            problems.append(Problem(
                "user_mismatch", f"the file name says user {user_id!r}, the column holds "
                f"{others[:5]}.", "rename the file after its user, or split it by user.",
                file=str(path), column=columns.user))
    if problems:
        raise DataContractError(f"{path.name} breaks the export contract", problems)
    return times.to_numpy(zero_copy_only=False).astype("datetime64[us]"), values


def _cast(
    column: pa.ChunkedArray, type_: pa.DataType, path: Path, name: str, expected: str, fix: str
) -> pa.Array:
    try:
        return pc.cast(column, type_).combine_chunks()
    except pa.ArrowInvalid as exc:
        raise DataContractError(f"{path.name} breaks the export contract", [Problem(
            "unparsable_value", f"{exc}; expected {expected}.", fix, file=str(path), column=name,
        )]) from exc


def read_users_csv(path: Path) -> dict[str, dict[str, str]]:
    """users CSV rows by user_id (empty cells dropped); every problem raised at once."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            rows = [[v.strip() for v in row] for row in reader]
    except OSError as exc:
        raise UsageError(f"cannot read --users-csv {path}: {exc}") from exc
    problems = []
    unknown = [h for h in header if h not in _USERS_CSV_COLUMNS]
    if "user_id" not in header or unknown:
        problems.append(Problem(
            "bad_users_header", f"header {header}: expected 'user_id' and any of "
            f"{list(_USERS_CSV_COLUMNS[1:])}; unknown: {unknown}.",
            "rename or remove the columns.", file=str(path)))
        raise DataContractError("the users CSV breaks its contract", problems)
    by_user: dict[str, dict[str, str]] = {}
    for line, values in enumerate(rows, start=2):
        if not any(values):
            continue
        row = {k: v for k, v in zip(header, values, strict=False) if v}
        user = row.get("user_id", "")
        if not user or user in by_user:
            problems.append(Problem(
                "bad_user_id", f"line {line}: user_id {user!r} is empty or repeated.",
                "give every user exactly one row.", file=str(path), column="user_id"))
            continue
        problems += _metadata_problems(row, f"line {line}", str(path))
        by_user[user] = row
    if problems:
        raise DataContractError("the users CSV breaks its contract", problems)
    return by_user


# --- the command ---------------------------------------------------------------------------


def import_csv_exports(source: Path, out: Path, config: ImportConfig) -> ImportResult:
    """Import every user's exports in `source` into a new cohort directory `out`."""
    started = time.perf_counter()
    source, out = Path(source), Path(out)
    _check_paths(source, out)
    option_problems = _metadata_problems(config.model_dump(), "option", None)
    if option_problems:
        raise UsageError("; ".join(p.render() for p in option_problems))
    users_rows = read_users_csv(config.users_csv) if config.users_csv else {}

    exports, problems = find_exports(source)
    if not exports and not problems:
        raise UsageError(f"no <USER>_hr.csv[.zip] or <USER>_steps.csv[.zip] in {source}.")
    column_maps: dict[Path, _Columns] = {}
    for files in exports.values():  # every header is checked before any data is read
        for channel, path in files.items():
            try:
                mapped = map_columns(read_header(path), channel, str(path))
            except DataContractError as exc:
                mapped = exc.problems
            if isinstance(mapped, list):
                problems += mapped
            else:
                column_maps[path] = mapped
    if problems:
        raise DataContractError(_NOTHING_WRITTEN, problems)

    profiles = [resolve_profile(user, config, users_rows.get(user, {})) for user in sorted(exports)]
    staging = out.parent / f".{out.name}.importing-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        cohort = CohortPaths(staging)
        imports = []
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
    warnings = _warnings(imports, exports, users_rows)
    return ImportResult(source, out, tuple(imports), warnings, time.perf_counter() - started)


def _check_paths(source: Path, out: Path) -> None:
    if not source.is_dir():
        raise UsageError(f"--source {source} is not a directory of CSV exports.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(
            f"--out {out} exists and is not an empty directory; refusing to write "
            "into it. Choose a new directory, or remove this one first.")
    out.parent.mkdir(parents=True, exist_ok=True)


def _import_user(
    profile: UserProfile, files: dict[Channel, Path], column_maps: dict[Path, _Columns]
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
    "ChannelImport", "ImportConfig", "ImportResult", "LocalisedTimes", "UserImport",
    "UserProfile", "drop_duplicate_instants", "import_csv_exports", "join_channels",
    "localise_wall_clock", "map_columns", "resolve_profile",
]
