"""The export files of `stethoscope import-csv`: finding them, mapping their columns, reading them.

`find_exports` lists `<USER>_hr.csv[.zip]` and `<USER>_steps.csv[.zip]` by user and channel;
`map_columns` recognises the time, value and (optional) user column of a header by their
accepted spellings; `read_export` reads one file (unzipping it if needed) into naive wall-clock
times and values, raising a DataContractError that lists every problem of the file.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.tasks.cohorts.import_csv.config import Channel

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
_INT64_LIMIT = 2.0**63  # steps are int64: |steps| < 2**63 (as a float64)


@dataclass(frozen=True)
class ExportColumns:
    """Which header names play which role in one export file."""

    time: str
    value: str
    user: str | None


def map_columns(header: list[str], channel: Channel, file: str) -> ExportColumns | list[Problem]:
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
    time, value = found["time"], found["value"]
    assert time is not None and value is not None  # a required role without a match is a problem
    return ExportColumns(time=time, value=value, user=found["user"])

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
def _open_export(path: Path) -> Iterator[IO[bytes]]:
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
    try:
        with _open_export(path) as stream:
            first_line = io.TextIOWrapper(stream, encoding="utf-8-sig").readline()
        return next(csv.reader([first_line]), [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataContractError("cannot read an export", [_unreadable(path, exc)]) from exc


def _unreadable(path: Path, exc: Exception) -> Problem:
    return Problem(
        "unreadable_file", f"is not a UTF-8 CSV text file ({type(exc).__name__}: {exc}).",
        "re-download the export (a CSV with a header row), or remove the file.", file=str(path))


def read_export(
    path: Path, columns: ExportColumns, channel: Channel, user_id: str
) -> tuple[np.ndarray, pa.Array]:
    """(naive wall-clock datetime64[us], values) of one export, in file order."""
    names = [columns.time, columns.value] + ([columns.user] if columns.user else [])
    try:
        with _open_export(path) as stream:
            table = pacsv.read_csv(
                stream,
                convert_options=pacsv.ConvertOptions(
                    include_columns=names, column_types={n: pa.string() for n in names},
                    strings_can_be_null=True,
                ),
            )
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeDecodeError) as exc:  # bytes past the header
        raise DataContractError(f"{path.name} breaks the export contract",
                                [_unreadable(path, exc)]) from exc
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
        # whole, but beyond a 64-bit integer (steps are stored as int64)
        huge = pc.and_(whole, pc.greater_equal(pc.abs(values), _INT64_LIMIT))
        num_huge = pc.sum(huge).as_py() or 0
        if num_bad:
            problems.append(Problem(
                "bad_steps", "step counts that are not whole finite numbers.",
                "export whole step counts per interval.", file=str(path), column=columns.value,
                count=num_bad))
        if num_huge:
            largest = pc.max(pc.abs(values.filter(huge))).as_py()
            problems.append(Problem(
                "steps_out_of_range", "step counts beyond the 64-bit integer range (|steps| >= "
                f"2**63, up to {largest:.3g}); no count is that large.",
                "export the step count per interval; blank the values that are not counts.",
                file=str(path), column=columns.value, count=num_huge))
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
