"""The one reader of a cohort's users.parquet (user_id, age, sex, timezone; one row per user).

Each stage asks for the columns it needs; a missing file, an unreadable one or a missing column
is a DataContractError naming the stage, the file, the column and the fix. What a stage then
checks in the values (validation: unique ids, known zones and sexes) is the stage's own rule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.tables import USERS

_FIX = "write users.parquet with user_id, age, sex, timezone (one row per user)"


def read_users(path: Path, columns: Sequence[str] | None = None, stage: str = "validate"
               ) -> pa.Table:
    """users.parquet with `columns`; default: every column, the USERS contract's required."""
    path = Path(path)
    wanted = list(columns) if columns is not None else list(USERS.names)
    if not path.exists():
        raise DataContractError(f"{stage}: the users table {path} is missing", [Problem(
            rule="missing_file", file=path.name, message="the cohort has no users.parquet.",
            fix=_FIX)])
    try:
        schema = pq.read_schema(path)
        missing = [c for c in wanted if c not in schema.names]
        if missing:
            raise DataContractError(f"{stage}: the users table {path} lacks columns", [Problem(
                rule="missing_column", file=path.name, column=c, message="column is missing.",
                fix="add it (user_id str, age years, sex F/M/U, timezone IANA name)")
                for c in missing])
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except DataContractError:
        raise
    except Exception as exc:  # Arrow reports a damaged file in many ways
        raise DataContractError(f"{stage}: the users table {path} cannot be read", [Problem(
            rule="unreadable_file", file=path.name, message=f"{type(exc).__name__}: {exc}.",
            fix="re-write users.parquet")]) from exc


def timezones_of(users: pa.Table) -> dict[str, str]:
    """user_id -> IANA timezone name, from a table with both columns."""
    return dict(zip(users.column("user_id").to_pylist(), users.column("timezone").to_pylist(),
                    strict=True))
