"""The validation stage's checks of a cohort's small tables: users.parquet (required) and
labels.parquet (optional). Every problem at once, as one DataContractError (never retried)."""

from __future__ import annotations

import zoneinfo
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.tables import SEXES
from stethoscope.tasks.shared.users import read_users


def load_users(path: Path) -> pd.DataFrame:
    """users.parquet, checked: every problem at once, as a DataContractError."""
    name = path.name
    users = read_users(path, stage="validate").to_pandas()
    problems = []
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
