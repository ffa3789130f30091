"""File-level checks of the validation stage: is a file the cohort's own, can it be read, does it
meet the schema.

A file that fails here is set aside whole (copied to the run's rejected_files/, keeping its
permissions) with problems that name the file, the column, the rule and the fix; the rest of the
cohort goes on. A file that resolves outside the cohort directory (a symbolic link, or a file
under a linked directory) is refused by name and never read nor copied: the cohort is what the
run may read, and a link must not carry, say, another user's secret into a run directory that
others can read.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stethoscope.schemas.atomic import write_parquet_atomic
from stethoscope.schemas.errors import Problem
from stethoscope.schemas.tables import SENSOR_LOGS

# Strings stay dictionary-encoded from the Parquet reader through the checks to the writer: a
# user wears one device for weeks, so the gate compares int32 codes instead of strings, and the
# writer stores the dictionary as it is instead of hashing every string again.
DICT_STRING = pa.dictionary(pa.int32(), pa.string())
SENSOR_LOGS_DICT = pa.schema(
    [f.with_type(DICT_STRING) if pa.types.is_string(f.type) else f for f in SENSOR_LOGS],
    metadata=SENSOR_LOGS.metadata)
# What the row gate works on: every field nullable (the gate, not the reader, judges nulls).
CANONICAL = pa.schema([f.with_nullable(True) for f in SENSOR_LOGS_DICT])

_FIX_TYPES = {
    "user_id": "write user_id as a string column",
    "timestamp": "write timestamp as a UTC timestamp (pandas: pd.to_datetime(..., utc=True))",
    "heart_rate": "write heart_rate as float (bpm; null = not measured)",
    "steps": "write steps as an integer column with nulls (pandas: .astype('Int64'))",
    "device": "write device as a string column of device catalog keys",
}


@dataclass(frozen=True)
class FileCheck:
    path: Path
    name: str  # path relative to the cohort's sensor_logs/, as reports show it
    num_rows: int | None  # None when the file cannot be read at all
    problems: list[Problem] = field(default_factory=list)
    extra_columns: list[str] = field(default_factory=list)
    canonical: bool = False  # column names and types already exactly SENSOR_LOGS
    user_range: tuple[str, str] | None = None  # min/max user_id from Parquet statistics
    outside_cohort: bool = False  # refused unread: never copied into the run

    @property
    def ok(self) -> bool:
        return not self.problems


def resolves_outside(path: Path, cohort_root: Path) -> bool:
    """True when `path`, symbolic links followed, is not inside `cohort_root`."""
    resolved = Path(path).resolve()
    root = Path(cohort_root).resolve()
    return not (resolved == root or resolved.is_relative_to(root))


def refuse_outside(path: Path, relative_name: str) -> FileCheck:
    """The check of a file that resolves outside the cohort: refused by name, not read. The
    target is not named either: where a link points is not the run's business."""
    return FileCheck(path, relative_name, None, [Problem(
        rule="outside_cohort", file=relative_name,
        message="is a symbolic link (or lies under one) that resolves outside the cohort "
                "directory; it was not read and not copied.",
        fix="copy the file into the cohort's sensor_logs/ instead of linking to it, or remove "
            "the link")], outside_cohort=True)


def copy_keeping_mode(source: Path, target: Path) -> None:
    """Copy `source` to a new file `target` with the source's permission bits (never wider:
    the copy is created owner-only and opened up to the source's bits once complete)."""
    mode = stat.S_IMODE(os.stat(source).st_mode) & 0o777
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as inp:
        while chunk := inp.read(1 << 20):
            out.write(chunk)
    os.chmod(target, mode)


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _type_problem(name: str, t: pa.DataType) -> str | None:
    """None when the column's type is acceptable, else what is wrong with it."""
    if name in ("user_id", "device"):
        return None if _is_string(t) else f"expected a string column, found {t}"
    if name == "timestamp":
        if not pa.types.is_timestamp(t):
            return f"expected a timestamp column, found {t}"
        if t.tz is None:
            return "naive_timestamp"
        return None
    if name == "heart_rate":
        ok = pa.types.is_floating(t) or pa.types.is_integer(t)
        return None if ok else f"expected a float column, found {t}"
    if name == "steps":
        return None if pa.types.is_integer(t) else f"expected an integer column, found {t}"
    raise KeyError(name)


def check_file(path: Path, relative_name: str) -> FileCheck:
    """Read the Parquet footer only; never the data."""
    try:
        meta = pq.ParquetFile(path)
        schema = meta.schema_arrow
        num_rows = meta.metadata.num_rows
    except Exception as exc:  # any reader failure means "unreadable", with the reader's words
        return FileCheck(path, relative_name, None, [Problem(
            rule="unreadable_file", file=relative_name,
            message=f"cannot be read as Parquet ({type(exc).__name__}: {exc}).",
            fix="re-export the file; it was set aside whole and the rest of the cohort went on")])
    problems: list[Problem] = []
    for expected in SENSOR_LOGS:
        if expected.name not in schema.names:
            problems.append(Problem(
                rule="missing_column", file=relative_name, column=expected.name,
                message=f"column is missing (the file has {', '.join(schema.names)}).",
                fix=f"add the column: {_FIX_TYPES[expected.name]}"))
            continue
        found = schema.field(expected.name).type
        issue = _type_problem(expected.name, found)
        if issue == "naive_timestamp":
            problems.append(Problem(
                rule="naive_timestamp", file=relative_name, column="timestamp",
                message=f"timestamps carry no timezone ({found}); local and UTC cannot be told apart.",
                fix="localise at export (pandas: .dt.tz_localize(<IANA zone>)) or use `stethoscope import-csv`"))
        elif issue:
            problems.append(Problem(
                rule="wrong_type", file=relative_name, column=expected.name,
                message=issue + ".", fix=_FIX_TYPES[expected.name]))
    extra = [n for n in schema.names if n not in SENSOR_LOGS.names]
    canonical = [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in SENSOR_LOGS]
    return FileCheck(path, relative_name, num_rows, problems, extra, canonical, _user_range(meta))


def _user_range(meta: pq.ParquetFile) -> tuple[str, str] | None:
    """min/max user_id over the row groups, when every row group has statistics."""
    try:
        column = meta.schema_arrow.get_field_index("user_id")
        lows, highs = [], []
        for i in range(meta.metadata.num_row_groups):
            stats = meta.metadata.row_group(i).column(column).statistics
            if stats is None or not stats.has_min_max or stats.null_count:
                return None
            lows.append(stats.min)
            highs.append(stats.max)
    except Exception:
        return None
    if not lows:
        return None
    low, high = min(lows), max(highs)
    if isinstance(low, bytes):
        low, high = low.decode(), high.decode()
    return (low, high)


def read_canonical(path: Path) -> pa.Table:
    """Read a file that passed `check_file` into CANONICAL (lossless casts only: a cast that
    would lose information raises), string columns as dictionaries shared by all chunks."""
    table = pq.read_table(path, columns=SENSOR_LOGS.names, read_dictionary=["user_id", "device"])
    columns = [table[f.name].cast(f.type, safe=True) for f in CANONICAL]
    return pa.Table.from_arrays(columns, schema=CANONICAL).unify_dictionaries()


def write_sensor_logs(table: pa.Table, path: Path) -> None:
    """Write rows in CANONICAL as a SENSOR_LOGS file: nullability as the contract says, the
    dictionaries stored as Parquet dictionary pages. The Arrow schema is not stored, so every
    reader gets plain strings back, exactly SENSOR_LOGS."""
    # Statistics for every column but `device`: min/max over a dictionary column of a few long
    # runs cost a sixth of the write, and nothing prunes on device.
    write_parquet_atomic(table.cast(SENSOR_LOGS_DICT), path, store_schema=False,
                         write_statistics=["user_id", "timestamp", "heart_rate", "steps"])


def read_user_ids(path: Path) -> pa.Array:
    return pq.read_table(path, columns=["user_id"])["user_id"].combine_chunks().cast(pa.string()).unique()
