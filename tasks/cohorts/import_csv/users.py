"""The users of `stethoscope import-csv`: their metadata and `users.parquet`.

Per field, an explicit option wins over the user's row in the users CSV, which wins over the
default (`resolve_profile`). `read_users_csv` and `metadata_problems` check the CSV and the
options (IANA timezone, age in [0, 130], sex F/M/U) and list every problem at once;
`users_table` builds the USERS table.
"""

from __future__ import annotations

import csv
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa

from stethoscope.schemas.errors import DataContractError, Problem, UsageError
from stethoscope.schemas.tables import SEXES, USERS
from stethoscope.tasks.cohorts.import_csv.config import ImportConfig, UserProfile

DEFAULT_TIMEZONE = "UTC"
DEFAULT_DEVICE = "fitbit_charge_4"
DEFAULT_SEX = "U"
_USERS_CSV_COLUMNS = ("user_id", "timezone", "device", "age", "sex")


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


def metadata_problems(values: dict, where: str, file: str | None) -> list[Problem]:
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

def read_users_csv(path: Path) -> dict[str, dict[str, str]]:
    """users CSV rows by user_id (empty cells dropped); every problem raised at once."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header = [h.strip().lower() for h in next(reader, [])]
            rows = [[v.strip() for v in row] for row in reader]
    except OSError as exc:
        raise UsageError(f"cannot read --users-csv {path}: {exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataContractError("the users CSV cannot be read", [Problem(
            "unreadable_file", f"is not a UTF-8 CSV text file ({type(exc).__name__}: {exc}).",
            "pass --users-csv a CSV with a header row: user_id and any of timezone, device, "
            "age, sex.", file=str(path))]) from exc
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
        problems += metadata_problems(row, f"line {line}", str(path))
        by_user[user] = row
    if problems:
        raise DataContractError("the users CSV breaks its contract", problems)
    return by_user
