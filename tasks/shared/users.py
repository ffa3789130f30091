"""The one reader of a cohort's users.parquet (user_id, age, sex, timezone; one row per user).

A missing file, an unreadable one, a missing column or user ids that are not strings is a
DataContractError naming the stage, the file, the column and the fix: the whole file is unusable.

Bad metadata of a *row* is not the file's fault: `split_users` sets aside every row of a user
whose metadata breaks a rule of `USER_RULES` (a null or blank id, an id on more than one row, a
time zone zoneinfo does not know, a sex other than F/M/U, an age outside [0, 120]), and
`read_users` hands every stage only the usable users. Validation keeps the rows set aside (and
quarantines the sensor rows of those users); later stages, reading the same file through the
same rules, never see them (docs/architecture.md §4.2)."""

from __future__ import annotations

import math
import zoneinfo
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.tables import SEXES, USERS

_FIX = "write users.parquet with user_id, age, sex, timezone (one row per user)"
AGE_RANGE = (0.0, 120.0)

# rule -> (column, what was expected, how to fix); a row set aside names the first it breaks.
USER_RULES: dict[str, tuple[str, str, str]] = {
    "missing_user_id": ("user_id", "a user id that is not null, empty or blank",
                        "give the row its user's id (the id the sensor logs use), or remove it"),
    "duplicate_user": ("user_id", "one row per user id; every row of a repeated id is ambiguous",
                       "keep the one right row of the user"),
    "unknown_timezone": ("timezone", "an IANA time zone name (zoneinfo.available_timezones())",
                         "use names such as 'Europe/Berlin' or 'Pacific/Honolulu'"),
    "unknown_sex": ("sex", "F, M or U (U: unknown)", "map the value to F, M or U"),
    "age_out_of_range": ("age", f"a number of years within [{AGE_RANGE[0]:g}, {AGE_RANGE[1]:g}], "
                         "or null (unknown)", "repair the age, or null it"),
}


@dataclass(frozen=True)
class UserSplit:
    """users.parquet split: `usable` rows (one per user, every rule met) and the rows
    `set_aside` as they came, each with the first rule it broke, that rule's column and the
    value found there (as text, null when null)."""

    usable: pa.Table
    set_aside: pa.Table

    @property
    def set_aside_ids(self) -> list[str]:
        """The distinct non-blank ids of the users set aside, sorted."""
        ids = self.set_aside["user_id"].cast(pa.string()).drop_null().to_pylist()
        return sorted({i for i in ids if i.strip()})


def read_users(path: Path, columns: Sequence[str] | None = None, stage: str = "validate"
               ) -> pa.Table:
    """The usable users of users.parquet with `columns` (default: every column of the file);
    the rows of users set aside by `split_users` are left out."""
    usable = read_user_split(path, stage).usable
    return usable.select(list(columns)) if columns is not None else usable


def read_user_split(path: Path, stage: str = "validate") -> UserSplit:
    """users.parquet, every column, split into usable users and users set aside."""
    return split_users(_read_table(Path(path), stage), Path(path).name, stage)


def split_users(table: pa.Table, file: str = "users.parquet", stage: str = "validate"
                ) -> UserSplit:
    """Set aside every row of a user whose metadata breaks a rule of USER_RULES (pure).

    `table` has the USERS columns; user ids must be strings (else a DataContractError: the
    column, not a row, is wrong)."""
    ids = table["user_id"]
    kind = ids.type.value_type if pa.types.is_dictionary(ids.type) else ids.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataContractError(f"{stage}: {file}: user ids are not strings", [Problem(
            rule="wrong_type", file=file, column="user_id",
            message=f"expected strings, found type {ids.type}.",
            fix="write user_id as a string column holding the user ids the sensor logs use")])
    masks = _rule_masks(table)
    first_broken = {row: next(name for name, mask in masks.items() if mask[row])
                    for row in range(table.num_rows)
                    if any(mask[row] for mask in masks.values())}  # in USER_RULES order
    aside = np.zeros(table.num_rows, dtype=bool)
    aside[list(first_broken)] = True
    return UserSplit(usable=table.filter(pa.array(~aside)) if first_broken else table,
                     set_aside=_with_reasons(table.take(pa.array(list(first_broken), pa.int64())),
                                             list(first_broken.values())))


def timezones_of(users: pa.Table) -> dict[str, str]:
    """user_id -> IANA timezone name, from a table with both columns."""
    return dict(zip(users.column("user_id").to_pylist(), users.column("timezone").to_pylist(),
                    strict=True))


def _read_table(path: Path, stage: str) -> pa.Table:
    if not path.exists():
        raise DataContractError(f"{stage}: the users table {path} is missing", [Problem(
            rule="missing_file", file=path.name, message="the cohort has no users.parquet.",
            fix=_FIX)])
    try:
        schema = pq.read_schema(path)
        missing = [c for c in USERS.names if c not in schema.names]
        if missing:
            raise DataContractError(f"{stage}: the users table {path} lacks columns", [Problem(
                rule="missing_column", file=path.name, column=c, message="column is missing.",
                fix="add it (user_id str, age years, sex F/M/U, timezone IANA name)")
                for c in missing])
        return pq.read_table(path)
    except DataContractError:
        raise
    except Exception as exc:  # Arrow reports a damaged file in many ways
        raise DataContractError(f"{stage}: the users table {path} cannot be read", [Problem(
            rule="unreadable_file", file=path.name, message=f"{type(exc).__name__}: {exc}.",
            fix="re-write users.parquet")]) from exc


def _rule_masks(table: pa.Table) -> dict[str, np.ndarray]:
    """Per rule of USER_RULES (in order), the rows that break it."""
    ids = table["user_id"].cast(pa.string()).to_pylist()
    blank = np.array([i is None or not i.strip() for i in ids], dtype=bool)
    times = Counter(i for i, b in zip(ids, blank, strict=True) if not b)
    return {
        "missing_user_id": blank,
        "duplicate_user": np.array([times[i] > 1 for i in ids], dtype=bool) & ~blank,
        "unknown_timezone": np.array([not (isinstance(z, str) and z in _zones())
                                      for z in table["timezone"].to_pylist()], dtype=bool),
        "unknown_sex": np.array([s not in SEXES for s in table["sex"].to_pylist()], dtype=bool),
        "age_out_of_range": np.array([_bad_age(a) for a in table["age"].to_pylist()], dtype=bool),
    }


def _bad_age(value: object) -> bool:
    """Not null, NaN (unknown, as pandas writes it) or a number of years within AGE_RANGE."""
    if value is None:
        return False
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True
    return not (math.isnan(number) or AGE_RANGE[0] <= number <= AGE_RANGE[1])


def _with_reasons(rows: pa.Table, reasons: list[str]) -> pa.Table:
    """`rows` as they came, plus the rule each broke, its column and the value found there."""
    columns = [USER_RULES[r][0] for r in reasons]
    values = [_as_text(rows[c][i].as_py()) for i, c in enumerate(columns)]
    return (rows.append_column("rule", pa.array(reasons, pa.string()))
            .append_column("column", pa.array(columns, pa.string()))
            .append_column("value", pa.array(values, pa.string())))


def _as_text(value: object) -> str | None:
    return None if value is None else str(value)


@cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())
