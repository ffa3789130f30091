"""The validation stage's checks of a cohort's small tables: users.parquet (required) and
labels.parquet (optional). Every problem at once, as one DataContractError (never retried).

Both are checked before any sensor log is read, so a table that would break a later stage
(a null user id, a label column Keras cannot name a layer after, labels of nobody) fails the
run here, not after hours of training."""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.tables import SEXES
from stethoscope.tasks.shared.users import read_users

# A condition becomes the model head `head_<condition>` and the Keras scope of its layers.
LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def load_users(path: Path) -> pd.DataFrame:
    """users.parquet, checked: every problem at once, as a DataContractError."""
    name = path.name
    table = read_users(path, stage="validate")
    problems = _user_id_problems(table["user_id"], name, "the user ids the sensor logs use")
    users = table.to_pandas()
    ids = users["user_id"]
    dup = ids[ids.duplicated() & ids.notna()].unique().tolist()
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


def check_labels(path: Path, user_ids: pd.Series | None = None) -> list[str]:
    """labels.parquet (optional): user_id plus 0/1/null condition columns whose names can name
    a Keras layer; some of its user ids must be users (`user_ids`, from users.parquet).
    Returns the conditions."""
    if not path.exists():
        return []
    try:
        table = pq.read_table(path)
    except Exception as exc:  # Arrow reports a damaged file in many ways
        raise DataContractError(f"{path}: labels table cannot be read", [Problem(
            rule="unreadable_file", file=path.name,
            message=f"cannot be read as Parquet ({type(exc).__name__}: {exc}).",
            fix="re-write labels.parquet (user_id plus one 0/1 column per condition), or "
                "remove it to train without labels")]) from exc
    problems = []
    if "user_id" not in table.column_names:
        problems.append(Problem(rule="missing_column", file=path.name, column="user_id",
                                message="column is missing.", fix="add user_id"))
    else:
        id_problems = _user_id_problems(table["user_id"], path.name, "the ids of users.parquet")
        problems += id_problems
        if not id_problems and user_ids is not None:
            problems += _match_problems(table["user_id"], user_ids, path.name)
    conditions = [c for c in table.column_names if c != "user_id"]
    for c in conditions:
        if not LABEL_NAME.match(c):
            suggestion = _layer_name(c)
            problems.append(Problem(
                rule="bad_label_name", file=path.name, column=c,
                message="cannot name a condition: each condition becomes the model head "
                        "head_<condition>, and Keras layer names take ASCII letters, digits "
                        "and underscores, starting with a letter.",
                fix=f"rename the column, e.g. to {suggestion!r} "
                    f"(pandas: labels.rename(columns={{{c!r}: {suggestion!r}}}))"))
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


def _user_id_problems(column: pa.ChunkedArray, file: str, ids: str) -> list[Problem]:
    """A user_id column is strings, none null, empty or blank."""
    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return [Problem(rule="wrong_type", file=file, column="user_id",
                        message=f"expected strings, found type {column.type}.",
                        fix=f"write user_id as a string column holding {ids}")]
    plain = column.cast(pa.string())
    blank = pc.equal(pc.utf8_trim_whitespace(plain), "").fill_null(True)
    missing = int(pc.sum(blank).as_py() or 0)
    if not missing:
        return []
    return [Problem(rule="missing_user_id", file=file, column="user_id", count=missing,
                    message="user ids are null, empty or blank.",
                    fix=f"give every row its user's id ({ids}), or remove the rows")]


def _match_problems(labels_ids: pa.ChunkedArray, user_ids: pd.Series, file: str) -> list[Problem]:
    """Labels that match no user would train a 'supervised' model on masked labels only."""
    known = pa.array(user_ids.astype(str).tolist(), pa.string())
    ids = labels_ids.cast(pa.string())
    if len(ids) and pc.any(pc.is_in(ids, value_set=known)).as_py():
        return []
    examples = pc.unique(ids).to_pylist()[:3]
    return [Problem(
        rule="labels_match_no_user", file=file, column="user_id", count=len(ids),
        message=f"no user id of the labels is a user of users.parquet (labels hold e.g. "
                f"{examples}; users e.g. {user_ids.astype(str).head(3).tolist()}): every label "
                "would be unknown and training would learn nothing.",
        fix="write the user ids of users.parquet (and the sensor logs) into labels.user_id, "
            "or remove labels.parquet to train without labels")]


def _layer_name(name: str) -> str:
    """A usable condition name close to `name`: 'high blood pressure' -> 'high_blood_pressure'."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")
    if not cleaned:
        return "condition"
    return cleaned if cleaned[0].isalpha() else f"c_{cleaned}"
