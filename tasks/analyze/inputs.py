"""The input of the analyze stage: a predictions table checked against its contract.

The train stage writes every column of schemas.tables.PREDICTIONS; a table from anywhere else
needs only `user_id, task, y_true, y_score` (REQUIRED_COLUMNS). The other PREDICTIONS columns
are optional, and checked (type, nulls, domain) only when present; any further column is extra
metadata (docs/architecture.md §4.7).

`check_predictions` lists every way a table breaks that contract at once (missing required
columns, wrong types, nulls, values out of their domain, duplicate user-weeks, no evaluation
rows, strata it cannot form); `read_predictions` raises them as one DataContractError;
`normalise_predictions` turns a checked table into a frame with canonical dtypes, absent
columns staying absent (but `device_generation` derived from `device` through the catalog);
`evaluation_rows` says which rows are evaluated.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stethoscope.schemas.devices import UNKNOWN_STRATUM, device_generation
from stethoscope.schemas.errors import DataContractError, Problem, UsageError
from stethoscope.schemas.tables import PREDICTIONS, SEXES
from stethoscope.tasks.analyze.config import AGE_BAND, AnalyzeConfig


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_string(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_date(t: pa.DataType) -> bool:
    return pa.types.is_date(t) or pa.types.is_timestamp(t)


def _is_label(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_boolean(t)


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


_TYPE_RULES = {
    "user_id": (_is_string, "a string"),
    "week_start": (_is_date, "a date"),
    "task": (_is_string, "a string"),
    "split": (_is_string, "a string"),
    "y_true": (_is_label, "an integer 0/1"),
    "y_score": (pa.types.is_floating, "a float probability"),
    "device": (_is_string, "a string"),
    "device_generation": (pa.types.is_integer, "an integer (null = unknown device)"),
    "age": (_is_number, "a number of years"),
    "sex": (_is_string, "a string F/M/U"),
}


def _count_outside_unit(column: pa.ChunkedArray) -> int:
    score = pc.cast(column, pa.float64())
    inside = pc.and_(pc.greater_equal(score, 0.0), pc.less_equal(score, 1.0))  # NaN: false
    return int(pc.sum(pc.invert(inside)).as_py() or 0)


def _count_not_binary(column: pa.ChunkedArray) -> int:
    return int(pc.sum(pc.invert(pc.is_in(pc.cast(column, pa.int64()), pa.array([0, 1]))))
               .as_py() or 0)


def _count_bad_sex(column: pa.ChunkedArray) -> int:
    known = pc.fill_null(pc.is_in(pc.cast(column, pa.string()), pa.array(SEXES)), True)
    return int(pc.sum(pc.invert(known)).as_py() or 0)


_VALUE_RULES = {  # column: (count of bad rows, rule, what is wrong, fix)
    "y_score": (_count_outside_unit, "probability", "is outside [0, 1] (or NaN).",
                "pass probabilities (apply the sigmoid), not logits."),
    "y_true": (_count_not_binary, "binary_label", "is not 0 or 1.",
               "encode the label as 0/1; drop rows whose label is unknown."),
    "sex": (_count_bad_sex, "sex_values", f"is not one of {list(SEXES)} or null.",
            "map sexes to F, M and U (unknown)."),
}


REQUIRED_COLUMNS = ("user_id", "task", "y_true", "y_score")
# strata derived from another column: the stratum -> the columns it can come from
DERIVED_STRATA = {AGE_BAND: ("age",), "device_generation": ("device_generation", "device")}


def check_predictions(table: pa.Table, source: str, config: AnalyzeConfig) -> list[Problem]:
    """Every way `table` breaks the predictions contract (schemas.tables.PREDICTIONS, of which
    only REQUIRED_COLUMNS are required), at once: missing columns, wrong types, nulls, values
    out of their domain, duplicate user-weeks, strata that cannot be formed."""
    problems: list[Problem] = []
    usable: set[str] = set()
    for field in PREDICTIONS:
        name = field.name
        if name not in table.column_names:
            if name in REQUIRED_COLUMNS:
                problems.append(Problem(
                    "required_column", "is missing.",
                    f"add {name!r} ({field.type}); user_id, task, y_true and y_score are the "
                    "only required columns.", source, name))
            continue
        accepts, expected = _TYPE_RULES[name]
        actual = table.schema.field(name).type
        if not accepts(actual) and not (field.nullable and pa.types.is_null(actual)):
            problems.append(Problem("column_type", f"is {actual}, expected {expected}.",
                                    f"cast it to {field.type}.", source, name))
        elif not field.nullable and (nulls := table.column(name).null_count):
            problems.append(Problem("not_null", "holds nulls.", "drop or fill those rows.",
                                    source, name, nulls))
        else:
            usable.add(name)
    for name, (count_bad, rule, message, fix) in _VALUE_RULES.items():
        if name in usable and (bad := count_bad(table.column(name))):
            problems.append(Problem(rule, message, fix, source, name, bad))
    return (problems + _check_rows(table, usable, source, config)
            + _check_strata(table.column_names, source, config))


def _check_rows(table: pa.Table, usable: set[str], source: str,
                config: AnalyzeConfig) -> list[Problem]:
    """One prediction per user-week and task (when there are weeks); some evaluation rows
    (when there are splits)."""
    problems = []
    keys = ["user_id", "week_start", "task"]
    if usable.issuperset(keys):
        distinct = table.select(keys).group_by(keys).aggregate([([], "count_all")]).num_rows
        if table.num_rows > distinct:
            problems.append(Problem(
                "unique_user_week", "repeats a (user_id, week_start, task).",
                "keep one prediction per user-week and task.", source, "task",
                table.num_rows - distinct))
    if "split" in usable and table.num_rows and not pc.any(pc.is_in(pc.cast(table.column("split"), pa.string()),
                                                 pa.array(config.eval_splits))).as_py():
        problems.append(Problem(
            "evaluation_rows", f"has no row whose split is one of {list(config.eval_splits)}.",
            "set eval_splits in the analyze section of --config to the splits to evaluate, or "
            "drop the split column to evaluate every row.", source, "split"))
    return problems


def _check_strata(columns: list[str], source: str, config: AnalyzeConfig) -> list[Problem]:
    """Each named stratum (--strata, analyze.strata_columns) is a column of the table, or
    derived from one; the default strata are formed from what the table has."""
    problems = []
    leave_out = "leave it out of --strata (analyze.strata_columns)"
    for name in config.strata_columns or ():
        sources = DERIVED_STRATA.get(name, (name,))
        if name in REQUIRED_COLUMNS:
            problems.append(Problem(
                "strata_column", "is named as a stratum, but it identifies or scores a "
                "prediction: it is no metadata to group by.", f"{leave_out}.", source, name))
        elif not any(c in columns for c in sources):
            derived = (f" (derived from {' or '.join(map(repr, sources))})"
                       if sources != (name,) else "")
            problems.append(Problem(
                "strata_column", f"is named as a stratum{derived}, but the table has no such "
                f"column; it has {', '.join(columns)}.",
                f"add the column to the predictions table, or {leave_out}; without --strata "
                "the strata are the metadata columns the table has.", source, name))
    return problems


def check_predictions_file(path: Path, label: str | None = None) -> None:
    """Before anything else runs: `path` is a readable Parquet file with rows. Only the footer
    is read, so this answers at once however large the table is."""
    label = label or str(path)
    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except Exception as exc:  # Arrow reports a damaged or foreign file in many ways
        raise UsageError(f"{label}: not a readable Parquet file ({exc}); write the table with "
                         "pandas.DataFrame.to_parquet or pyarrow") from None
    if rows == 0:
        raise DataContractError(f"analyze: {path} has no rows, so there is nothing to analyse.", [
            Problem(rule="no_rows", file=str(path), message="the predictions table is empty.",
                    fix="check the export that wrote it: one row per user-week and task")])


def read_predictions(path: Path, config: AnalyzeConfig, require_rows: bool = False
                     ) -> pd.DataFrame:
    """Read and check `predictions.parquet`; raise DataContractError listing every problem.

    `require_rows`: a table without rows is an error (a table handed to `stethoscope analyze`)
    rather than nothing to analyse (`NO_PREDICTIONS`: a nightly run trained without labels)."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataContractError(f"analyze: cannot read predictions file {path}.", [Problem(
            "readable", f"is not a readable Parquet file ({exc}).",
            "point --predictions at predictions.parquet written by the train stage.",
            str(path))]) from exc
    if require_rows and table.num_rows == 0:
        raise DataContractError(f"analyze: {path} has no rows, so there is nothing to analyse.", [
            Problem("no_rows", "holds no prediction.",
                    "point --predictions at a table with one row per user-week and task (a run "
                    "trained without labels.parquet writes an empty one: add labels to the "
                    "cohort and run again).", str(path))])
    if problems := check_predictions(table, str(path), config):
        raise DataContractError(
            f"analyze: {path} breaks the predictions contract ({len(problems)} problems).",
            problems)
    return normalise_predictions(table)


def normalise_predictions(table: pa.Table) -> pd.DataFrame:
    """A checked table as a frame with canonical dtypes. Null sex is U, null device unknown;
    a table with `device` but no `device_generation` gets it from the device catalog (null for
    an unknown device); extra integer columns keep their integers (nullable Int64). Other
    absent optional columns stay absent."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, pc.cast(table.column(i), field.type.value_type))
    frame = table.to_pandas()
    frame["y_true"] = frame["y_true"].astype("int8")
    frame["y_score"] = frame["y_score"].astype("float64")
    for name in ("user_id", "task", "split"):
        if name in frame.columns:
            frame[name] = frame[name].astype(str)
    if "week_start" in frame.columns:
        frame["week_start"] = pd.to_datetime(frame["week_start"]).dt.date
    if "age" in frame.columns:
        frame["age"] = frame["age"].astype("float64")
    if "sex" in frame.columns:
        frame["sex"] = frame["sex"].fillna("U").astype(str)
    if "device" in frame.columns:
        frame["device"] = frame["device"].fillna(UNKNOWN_STRATUM).astype(str)
        if "device_generation" not in frame.columns:
            frame["device_generation"] = frame["device"].map(device_generation)
    if "device_generation" in frame.columns:
        frame["device_generation"] = frame["device_generation"].astype("Int16")
    known = {f.name for f in PREDICTIONS}
    for field in table.schema:
        if field.name not in known and pa.types.is_integer(field.type):
            frame[field.name] = frame[field.name].astype("Int64")  # not float64 when null
    return frame.reset_index(drop=True)


def evaluation_rows(frame: pd.DataFrame, config: AnalyzeConfig) -> pd.Series:
    """Which rows are evaluated: those of the evaluation splits, or all of a table without a
    split column."""
    if "split" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return frame["split"].isin(config.eval_splits)
