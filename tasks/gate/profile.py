"""The data profile of one run: a small JSON record that a later run compares itself with.

Per stratum (every user-week: "all"; one per device generation: "generation 1", ...; user-weeks
of devices outside the catalog: "unknown device") and per feature (`FEATURES`: coverage and the
synthetic targets of docs/architecture.md §4.5) a `FeatureSummary`: how many user-weeks hold a
value and how many do not, the mean, the standard deviation and the quantiles at the 101 levels
0.00, 0.01, ..., 1.00 (numpy's default linear interpolation, Hyndman & Fan 1996 type 7). A
summary of 101 quantiles is enough to redraw the distribution as a piecewise-linear CDF, which
is what `drift.py` compares, so the gate never re-reads last night's raw logs (issue #14).
Non-finite values count as missing. Each summary also counts the distinct users behind its
values: a user's weeks are alike, so `drift.py` takes users, not user-weeks, as the sample size
of its tests. Besides the features: the device mix (user-weeks per device key) and the number
of users, and from the validation report the rows in and the rows each rule quarantined (with
`files_set_aside`: the rows of files set aside whole, counted or estimated, as one more rule).

A profile stays under ~200 kB whatever the cohort's size (12 strata x 6 features x 101
quantiles, indented JSON). Only the user-week table is read (the columns needed, one row per
user-week), never the sensor logs. The JSON carries `version`; a profile of
another version is refused by `read_profile` (ValueError), so a change of its meaning never
compares silently against an old file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from stethoscope.schemas.atomic import write_json_atomic
from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.tables import USER_WEEK_TARGETS

PROFILE_VERSION = 1
FILES_SET_ASIDE = "files_set_aside"  # the quarantine entry of rows in files set aside whole
FEATURES: tuple[str, ...] = ("coverage", *USER_WEEK_TARGETS)
QUANTILE_LEVELS: tuple[float, ...] = tuple(i / 100 for i in range(101))
ALL = "all"
UNKNOWN_DEVICE = "unknown device"
_COLUMNS = ("user_id", "device", "device_generation", *FEATURES)


def generation_stratum(generation: int) -> str:
    """The stratum name of a device generation: "generation 3"."""
    return f"generation {generation}"


@dataclass(frozen=True)
class FeatureSummary:
    """One feature in one stratum. `n` counts user-weeks with a finite value, `missing` those
    without; mean, std (ddof=1; 0 for one value) and quantiles (at QUANTILE_LEVELS) are over the
    n values: None, None and () when n == 0."""

    n: int
    missing: int
    mean: float | None
    std: float | None
    quantiles: tuple[float, ...]
    users: int | None = None  # distinct users among the n; None when the table had no user_id


@dataclass(frozen=True)
class DataProfile:
    """What a later run needs of this run's data to tell whether the data moved."""

    features: dict[str, dict[str, FeatureSummary]]  # stratum -> feature -> summary
    device_mix: dict[str, int]  # device key -> user-weeks
    rows_in: int | None  # rows the validation read; None without a report
    quarantine: dict[str, int]  # rule -> rows it quarantined
    user_weeks: int
    users: int | None = None  # distinct users; None when the table had no user_id


def summarise(values: np.ndarray, user_codes: np.ndarray | None = None) -> FeatureSummary:
    """The summary of one feature's values (any float array; non-finite values are missing);
    `user_codes` (integers, one per value) count the distinct users behind the values."""
    values = np.asarray(values, dtype=float)
    present = np.isfinite(values)
    finite = values[present]
    n = int(finite.size)
    users = None if user_codes is None else int(np.unique(user_codes[present]).size)
    if n == 0:
        return FeatureSummary(0, int(values.size), None, None, (), users)
    quantiles = np.quantile(finite, QUANTILE_LEVELS)
    return FeatureSummary(
        n=n,
        missing=int(values.size - n),
        mean=float(finite.mean()),
        std=float(finite.std(ddof=1)) if n > 1 else 0.0,
        quantiles=tuple(float(q) for q in quantiles),
        users=users,
    )


def profile_frame(frame: pd.DataFrame, rows_in: int | None = None,
                  quarantine: Mapping[str, int] | None = None) -> DataProfile:
    """The profile of a user-week table (columns device, device_generation and FEATURES;
    user_id, when present, counts users) and, when given, of the validation's rows in and rows
    quarantined per rule."""
    codes = pd.factorize(frame["user_id"])[0] if "user_id" in frame else None
    # generation as floats, NaN for an unknown device (the column may be Int16 or float)
    generation = frame["device_generation"].to_numpy(dtype=float, na_value=np.nan)
    unknown = np.isnan(generation)
    strata = {ALL: np.ones(len(frame), dtype=bool)}
    for value in np.unique(generation[~unknown]).astype(int):
        strata[generation_stratum(int(value))] = generation == value
    if unknown.any():
        strata[UNKNOWN_DEVICE] = unknown
    values = {name: frame[name].to_numpy(dtype=float, na_value=np.nan) for name in FEATURES}
    features = {
        stratum: {name: summarise(values[name][rows], None if codes is None else codes[rows])
                  for name in FEATURES}
        for stratum, rows in strata.items()
    }
    mix = frame["device"].value_counts(sort=False)
    return DataProfile(
        features=features,
        device_mix={str(key): int(count) for key, count in sorted(mix.items())},
        rows_in=rows_in,
        quarantine={rule: int(rows) for rule, rows in (quarantine or {}).items()},
        user_weeks=len(frame),
        users=None if codes is None else int(np.unique(codes).size),
    )


def profile_run(user_weeks_file: Path, validation_report: Path | None) -> DataProfile:
    """The profile of a run from its user-week table and (when given) its validation report."""
    names = set(pq.read_schema(user_weeks_file).names)
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise DataContractError(
            f"gate: cannot profile {user_weeks_file}: the user-week table lacks columns",
            [Problem("user_week_columns", f"column missing; expected every column of "
                     f"schemas.tables.USER_WEEKS ({', '.join(_COLUMNS)} at least).",
                     "re-run the labels stage, which writes the table of this version",
                     file=str(user_weeks_file), column=c) for c in missing])
    frame = pq.read_table(user_weeks_file, columns=list(_COLUMNS)).to_pandas()
    rows_in, quarantine = None, {}
    if validation_report is not None:
        report = json.loads(Path(validation_report).read_text())
        quarantine = {rule: int(entry["rows"]) for rule, entry in report["rules"].items()}
        # rows of whole files set aside (counted, or estimated from their bytes when unreadable)
        # compare like a rule's: a night that loses a file more than the reference is a drift
        aside = (int(report.get("rows_in_rejected_files", 0) or 0)
                 + int(report.get("rows_in_rejected_files_estimated", 0) or 0))
        quarantine[FILES_SET_ASIDE] = aside
        rows_in = int(report["rows_in"]) + aside
    return profile_frame(frame, rows_in, quarantine)


def profile_to_dict(profile: DataProfile) -> dict[str, Any]:
    """The JSON form of a profile, with its version."""
    return {"version": PROFILE_VERSION, **asdict(profile)}


def profile_from_dict(data: Mapping[str, Any]) -> DataProfile:
    """A profile from its JSON form; ValueError when it is of another version or malformed."""
    version = data.get("version")
    if version != PROFILE_VERSION:
        raise ValueError(
            f"data profile of version {version!r}, expected {PROFILE_VERSION}: it was written "
            "by another release of stethoscope. Re-run the reference run (or bless a run made "
            "by this release) to compare against it.")
    try:
        features = {
            stratum: {name: FeatureSummary(
                n=int(s["n"]), missing=int(s["missing"]),
                mean=None if s["mean"] is None else float(s["mean"]),
                std=None if s["std"] is None else float(s["std"]),
                quantiles=tuple(float(q) for q in s["quantiles"]),
                users=None if s.get("users") is None else int(s["users"]))
                for name, s in summaries.items()}
            for stratum, summaries in data["features"].items()
        }
        return DataProfile(
            features=features,
            device_mix={str(k): int(v) for k, v in data["device_mix"].items()},
            rows_in=None if data["rows_in"] is None else int(data["rows_in"]),
            quarantine={str(k): int(v) for k, v in data["quarantine"].items()},
            user_weeks=int(data["user_weeks"]),
            users=None if data.get("users") is None else int(data["users"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ValueError(
            f"data profile of version {PROFILE_VERSION} is malformed ({error!r}); expected "
            "the fields written by write_profile. Re-run the run that wrote it.") from error


def write_profile(profile: DataProfile, path: Path) -> Path:
    """Write a profile as JSON, atomically."""
    return write_json_atomic(profile_to_dict(profile), path)


def read_profile(path: Path) -> DataProfile:
    """Read a profile written by `write_profile`; ValueError (naming the file) when the file is
    not JSON, is of another version or lacks a field."""
    try:
        return profile_from_dict(json.loads(Path(path).read_text()))
    except (ValueError, AttributeError) as error:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: {error}") from error
