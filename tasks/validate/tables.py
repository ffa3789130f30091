"""The validation stage's checks of a cohort's small tables: users.parquet (required) and
labels.parquet (optional), before any sensor log is read.

users.parquet: a whole-file problem (missing, unreadable, a missing column, ids that are not
strings) is a DataContractError; a user whose row breaks a rule of `shared.users.USER_RULES` is
set aside (its sensor rows are quarantined under `bad_user_metadata`, and the gate counts them),
so one bad row no longer stops the cohort. labels.parquet: every problem at once, as one
DataContractError (never retried), so a table that would break a later stage (a label column
Keras cannot name a layer after, labels of nobody) fails the run here, not after hours of
training."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.tasks.shared.users import USER_RULES, UserSplit, read_user_split
from stethoscope.tasks.validate.config import REJECTED_USERS_FILE

# A condition becomes the model head `head_<condition>` and the Keras scope of its layers.
LABEL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def load_users(path: Path) -> UserSplit:
    """users.parquet split into usable users and the rows set aside for bad metadata
    (`tasks.shared.users`, rules USER_RULES). A whole-file problem (missing, unreadable, a
    missing column, user ids that are not strings) is a DataContractError."""
    return read_user_split(path, stage="validate")


def set_aside_problems(aside: pa.Table, file: str, examples: int = 5) -> list[Problem]:
    """One Problem per rule that set users aside: the users, the column and the values found
    (data text quoted with repr and cut short: never trusted)."""
    problems = []
    for rule, (column, expected, fix) in USER_RULES.items():
        rows = aside.filter(pc.equal(aside["rule"], rule))
        if not rows.num_rows:
            continue
        described = list(dict.fromkeys(describe_set_aside(u, column, v) for u, v in zip(
            rows["user_id"].to_pylist(), rows["value"].to_pylist(), strict=True)))
        shown = ", ".join(described[:examples])
        more = f" and {len(described) - examples} more" if len(described) > examples else ""
        problems.append(Problem(
            rule=rule, file=file, column=column, count=rows.num_rows,
            message=f"rows set aside, expected {expected}: {shown}{more}.",
            fix=f"{fix}; every row set aside is in validation/rejected_users.parquet"))
    return problems


def set_aside_report(aside: pa.Table, listed: int = 100) -> dict:
    """report.json's account of the users set aside: rows per rule and the reasons of the
    first `listed` rows (every row is in rejected_users.parquet)."""
    rules = aside["rule"].to_pylist()
    shown = aside.slice(0, listed)
    return {
        "file": REJECTED_USERS_FILE if aside.num_rows else None,
        "users": num_users_set_aside(aside), "rows": aside.num_rows,
        "rules": {rule: {"rows": rules.count(rule), "column": column, "expected": expected,
                         "fix": fix} for rule, (column, expected, fix) in USER_RULES.items()},
        "set_aside": shown.select(["user_id", "rule", "column", "value"]).to_pylist(),
    }


def num_users_set_aside(aside: pa.Table) -> int:
    """Users set aside: a repeated id once, each row without an id as one."""
    ids = aside["user_id"].cast(pa.string()).to_pylist()
    named = {i for i in ids if i is not None and i.strip()}
    return len(named) + sum(1 for i in ids if i is None or not i.strip())


def set_aside_examples(aside: pa.Table, examples: int = 5) -> list[str]:
    """The first few users set aside, described (the rows of a repeated id once)."""
    described = (describe_set_aside(u, c, v) for u, c, v in zip(
        *(aside[k].to_pylist() for k in ("user_id", "column", "value")), strict=True))
    return list(dict.fromkeys(described))[:examples]


def describe_set_aside(user_id: object, column: str, value: object) -> str:
    """"user 'u3' (timezone 'Mars/Olympus')": data strings quoted, escaped and cut short."""
    return f"user {quote(user_id)} ({column} {quote(value)})"


def quote(value: object, width: int = 40) -> str:
    """A data value as a short Python literal: control characters and quotes escaped."""
    if value is None:
        return "null"
    text = str(value)
    return repr(text[:width]) + ("…" if len(text) > width else "")


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
