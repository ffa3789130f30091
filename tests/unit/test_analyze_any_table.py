"""The analyze stage on predictions tables from anywhere (issue #12): only user_id, task, y_true
and y_score are required; week_start, split, device, device_generation, age and sex are used
when present; extra columns that are groupings are strata by default.

Tiny seeded tables built here, analysed through the file reader (`analyze_predictions`), so the
contract check, the normalisation and the core all run."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.layout import CohortPaths
from stethoscope.schemas.summary import PredictionsSection, status_of
from stethoscope.tasks.analyze.analysis import analyze_predictions
from stethoscope.tasks.analyze.config import AnalysisResult, AnalyzeConfig
from stethoscope.tasks.analyze.inputs import normalise_predictions, read_predictions
from stethoscope.tasks.analyze.metadata import with_default_strata
from stethoscope.tasks.shared.calendar import week_window
from tests.unit.prediction_tables import minimal_table, per_user

FAST = AnalyzeConfig(num_bootstrap=300, num_permutations=300)
REQUIRED = ["user_id", "task", "y_true", "y_score"]


def with_weeks(frame: pd.DataFrame) -> pd.DataFrame:
    """week_start: consecutive Mondays per user and task."""
    week = frame.groupby(["user_id", "task"]).cumcount()
    return frame.assign(week_start=[date(2024, 1, 1) + timedelta(weeks=int(w)) for w in week])


def write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path, index=False)
    return path


def analyse(frame: pd.DataFrame, tmp_path: Path, config: AnalyzeConfig = FAST,
            **cohort: Path) -> AnalysisResult:
    return analyze_predictions(write(frame, tmp_path / "predictions.parquet"), tmp_path / "out",
                               config, **cohort)


def strata_of(result: AnalysisResult) -> pd.DataFrame:
    return pd.read_parquet(result.tables["strata"])


# --- a custom column as a stratum ---------------------------------------------------------


def test_planted_weak_value_of_a_custom_column_is_flagged_and_nothing_else(tmp_path):
    """`site=B`'s scores are mostly noise: its stratum is flagged, A and C are not. The table
    has no week_start, split, device, age or sex; its other extras are no default strata."""
    frame, noise = minimal_table(num_users=300, rows_per_user=2, seed=1)
    site = per_user(frame, np.random.default_rng(2).choice(["A", "B", "C"], 300))
    weak = site == "B"
    logit = np.log(frame["y_score"] / (1 - frame["y_score"])) + np.where(weak, 3.0, 0.0) * noise
    frame = frame.assign(
        y_score=1 / (1 + np.exp(-logit)), site=site,
        coverage=np.random.default_rng(3).uniform(0.5, 1, len(frame)).round(1),  # a measurement
        note=[f"n{i % 40}" for i in range(len(frame))],  # 40 values: an identifier
        batch="2024-06")  # one value: nothing to compare
    result = analyse(frame, tmp_path)

    strata = strata_of(result)
    assert set(strata["column"]) == {"site"}
    flagged = strata[strata["flagged"]]
    assert flagged[["column", "value"]].values.tolist() == [["site", "B"]]
    b = flagged.iloc[0]
    assert b["delta_vs_rest"] < 0 and b["delta_ci_high"] < 0 and b["p_adjusted"] < 0.05
    assert not strata.loc[strata["value"] != "B", "underpowered"].any()  # A and C were tested
    weak_findings = [f for f in result.findings if f.code == "WEAK_STRATUM"]
    assert len(weak_findings) == 1 and "site=B" in weak_findings[0].message
    assert [f.code for f in result.findings if f.severity != "info"] == ["WEAK_STRATUM"]


def test_no_difference_in_a_custom_column_is_not_flagged(tmp_path):
    frame, _ = minimal_table(num_users=300, rows_per_user=2, seed=4)
    frame["site"] = per_user(frame, np.random.default_rng(5).choice(["A", "B", "C"], 300))
    strata = strata_of(analyse(frame, tmp_path))
    assert set(strata["value"]) == {"A", "B", "C"} and not strata["flagged"].any()


# --- the four required columns only -------------------------------------------------------


def test_four_columns_only_are_analysed_and_the_missing_baseline_is_said_plainly(tmp_path):
    frame, _ = minimal_table(num_users=120, rows_per_user=2, seed=6,
                             tasks=("diabetes", "sleep_apnea"))
    assert list(frame.columns) == REQUIRED
    result = analyse(frame, tmp_path)

    for task in result.tasks:
        rows = frame[frame["task"] == task.task]
        assert task.n == len(rows)
        assert task.auroc == pytest.approx(roc_auc_score(rows["y_true"], rows["y_score"]),
                                           abs=1e-12)
        assert task.baseline_auroc is None and task.corr_with_baseline is None
    (said,) = [f for f in result.findings if f.code == "BASELINE_NO_METADATA"]
    assert said.severity == "info"
    assert "baseline was not fitted" in said.message
    assert "neither an age nor a sex column" in said.message
    assert "diabetes, sleep_apnea" in said.message
    assert {"BASELINE_UNAVAILABLE", "METADATA_DOMINATED"}.isdisjoint(
        f.code for f in result.findings)
    tasks = pd.read_parquet(result.tables["tasks"])
    assert tasks["baseline_fit"].tolist() == ["no-metadata"] * 2
    assert tasks["baseline_features"].isna().all()

    assert result.strata == [] and strata_of(result).empty  # no metadata, no strata
    assert status_of(result.findings) == "pass"
    assert result.top_losses and all(r.week_start is None for r in result.top_losses)
    assert "week_start" in result.week_plots_skipped
    # curves and calibration per task; no baseline scatter, no strata forest
    assert {p.name for p in result.plots} == {
        f"{kind}_{task}.png" for kind in ("roc_pr", "calibration")
        for task in ("diabetes", "sleep_apnea")}
    section = json.loads((tmp_path / "out" / "analysis.json").read_text())["predictions"]
    assert PredictionsSection.model_validate(section) == result.predictions_section()
    assert AnalysisResult.model_validate_json(result.model_dump_json()) == result
    assert result.outcome().stage == "predictions"


@pytest.mark.parametrize("weeks, splits", [(True, False), (False, True), (True, True)])
def test_week_start_and_split_are_used_when_present(tmp_path, weeks, splits):
    """With splits the train rows fit the baseline and only val/test rows are evaluated;
    without, every row is evaluated and the baseline is cross-fitted by user."""
    frame, _ = minimal_table(num_users=160, rows_per_user=2, seed=7)
    rng = np.random.default_rng(8)
    frame = frame.assign(age=per_user(frame, rng.uniform(20, 80, 160).round()),
                         sex=per_user(frame, rng.choice(["F", "M"], 160)))
    if weeks:
        frame = with_weeks(frame)
    if splits:
        frame["split"] = per_user(frame, rng.choice(["train", "test"], 160))
    result = analyse(frame, tmp_path)

    (task,) = pd.read_parquet(result.tables["tasks"]).to_dict("records")
    evaluated = frame[frame["split"] == "test"] if splits else frame
    assert task["n"] == len(evaluated)
    assert task["baseline_fit"] == ("train" if splits else "cross-fit")
    assert task["baseline_features"] == "age and sex" and task["baseline_auroc"] is not None
    baseline = pd.read_parquet(result.tables["baseline_scores"])
    assert ("week_start" in baseline) == weeks and ("split" in baseline) == splits
    assert all((r.week_start is not None) == weeks for r in result.top_losses)
    assert [s.column for s in result.strata[:1]] == ["sex"]  # sex, then age bands


def test_without_week_start_many_rows_per_user_are_fine_but_with_it_duplicates_are_not(
        tmp_path):
    frame, _ = minimal_table(num_users=60, rows_per_user=3, seed=9)
    read_predictions(write(frame, tmp_path / "a.parquet"), FAST)  # no weeks: no duplicates
    dated = with_weeks(frame)
    dated.loc[1, "week_start"] = dated.loc[0, "week_start"]
    with pytest.raises(DataContractError) as caught:
        read_predictions(write(dated, tmp_path / "b.parquet"), FAST)
    assert [(p.rule, p.column) for p in caught.value.problems] == [("unique_user_week", "task")]


def test_baseline_on_age_alone_when_the_table_has_no_sex(tmp_path):
    frame, _ = minimal_table(num_users=300, rows_per_user=2, seed=10)
    age = per_user(frame, np.random.default_rng(11).uniform(20, 85, 300).round(1))
    risk = 0.08 * (age - 50)
    y = np.random.default_rng(12).random(len(frame)) < 1 / (1 + np.exp(-risk))
    frame = frame.assign(age=age, y_true=y.astype("int8"),
                         y_score=1 / (1 + np.exp(-0.07 * (age - 50))))  # the network is age
    result = analyse(frame, tmp_path)
    (task,) = pd.read_parquet(result.tables["tasks"]).to_dict("records")
    assert task["baseline_features"] == "age" and task["baseline_fit"] == "cross-fit"
    (dominated,) = [f for f in result.findings if f.code == "METADATA_DOMINATED"]
    assert "logistic regression on age;" in dominated.message
    assert {s.column for s in result.strata} == {"age_band"}


def test_device_generation_is_derived_from_device(tmp_path):
    frame, _ = minimal_table(num_users=200, rows_per_user=1, seed=13)
    devices = ["apple_watch_1st_gen", "apple_watch_series_4", "fitbit_charge_4", "no_such_watch"]
    frame["device"] = per_user(frame, np.random.default_rng(14).choice(devices, 200))
    normalised = normalise_predictions(pa.Table.from_pandas(frame, preserve_index=False))
    generation = normalised.drop_duplicates("device").set_index("device")["device_generation"]
    assert generation.dtype == "Int16" and generation.isna().to_dict() == {
        "apple_watch_1st_gen": False, "apple_watch_series_4": False, "fitbit_charge_4": False,
        "no_such_watch": True}
    assert generation.dropna().to_dict() == {"apple_watch_1st_gen": 1, "apple_watch_series_4": 4,
                                             "fitbit_charge_4": 4}
    strata = strata_of(analyse(frame, tmp_path))
    assert set(strata["column"]) == {"device_generation"}
    assert set(strata["value"]) == {"1", "4", "unknown"}


# --- which columns are strata -------------------------------------------------------------


def test_default_strata_are_the_metadata_present_and_the_extra_groupings():
    frame, _ = minimal_table(num_users=40, rows_per_user=1, seed=15)
    rng = np.random.default_rng(16)
    extras = pd.DataFrame({
        "site": rng.choice(["A", "B", "C"], 40),
        "cohort": pd.array([1, 2] * 19 + [None, None], dtype="Int32"),  # integers with nulls
        "smoker": rng.random(40) < 0.3,
        "coverage": rng.uniform(0, 1, 40).round(1),  # floats: measurements, not groups
        "visit": [date(2024, 1, 1) + timedelta(days=i % 3) for i in range(40)],  # dates
        "note": [f"n{i}" for i in range(40)],  # more than max_levels values
        "batch": "b1",  # a single value
        "timezone": "Europe/Berlin",  # a pattern column, not a default stratum
    })
    table = pa.Table.from_pandas(pd.concat([frame, extras], axis=1), preserve_index=False)
    normalised = normalise_predictions(table)
    assert with_default_strata(normalised, FAST).strata_columns == ("site", "cohort", "smoker")
    with_metadata = normalised.assign(age=50.0, sex="F", device="fitbit_charge_4")
    assert with_default_strata(normalise_predictions(pa.Table.from_pandas(
        with_metadata, preserve_index=False)), FAST).strata_columns == (
        "device_generation", "sex", "age_band", "site", "cohort", "smoker")
    named = FAST.with_strata(["coverage"])
    assert with_default_strata(normalised, named) is named


def test_named_strata_the_table_cannot_form_are_one_typed_error(tmp_path):
    frame, _ = minimal_table(num_users=30, rows_per_user=1, seed=17)
    path = write(frame.assign(site="A", device="fitbit_charge_4"), tmp_path / "p.parquet")
    config = FAST.with_strata(["site", "device_generation", "age_band", "clinic", "y_score"])
    with pytest.raises(DataContractError) as caught:
        read_predictions(path, config)
    problems = {p.column: p for p in caught.value.problems}
    assert set(problems) == {"age_band", "clinic", "y_score"}  # device_generation: from device
    assert {p.rule for p in problems.values()} == {"strata_column"}
    assert all(p.file == str(path) and "--strata" in p.fix for p in problems.values())
    assert "derived from 'age'" in problems["age_band"].message
    text = str(caught.value)
    assert str(path) in text and "column 'clinic'" in text and "Fix:" in text


def test_an_empty_strata_list_analyses_no_strata(tmp_path):
    frame, _ = minimal_table(num_users=60, rows_per_user=1, seed=18)
    result = analyse(frame.assign(site=per_user(frame, np.array(["A", "B"] * 30))), tmp_path,
                     FAST.with_strata([]))
    assert result.strata == []


def test_strata_names_are_checked_in_the_config():
    assert FAST.with_strata([" site", "age_band "]).strata_columns == ("site", "age_band")
    assert FAST.with_strata(None).strata_columns is None
    with pytest.raises(ValidationError, match="empty column name"):
        FAST.with_strata(["site", ""])
    with pytest.raises(ValidationError, match="more than once"):
        AnalyzeConfig(strata_columns=("site", "site"))


# --- week plots from a cohort directory ---------------------------------------------------


def _cohort(frame: pd.DataFrame, root: Path, timezone: str) -> CohortPaths:
    """A cohort as users deliver them: two sensor-log files of different but accepted types
    (ns timestamps, integer heart rate, dictionary ids; us timestamps, float heart rate)."""
    cohort = CohortPaths(root)
    cohort.sensor_logs.mkdir(parents=True)
    for i, (user_id, rows) in enumerate(frame.groupby("user_id")):
        start, _ = week_window(rows["week_start"].min(), timezone)
        times = start + pd.to_timedelta(np.arange(0, 7 * 24 * len(rows)) * 60, unit="min")
        heart_rate = 60 + np.arange(len(times)) % 20
        if i % 2:
            table = pa.table({"user_id": pa.array([user_id] * len(times)).dictionary_encode(),
                              "timestamp": pa.array(times, pa.timestamp("ns", tz="UTC")),
                              "heart_rate": pa.array(heart_rate, pa.int32()),
                              "steps": pa.array(np.arange(len(times)) % 7, pa.int32()),
                              "device": ["fitbit_charge_4"] * len(times)})
        else:
            table = pa.table({"user_id": [user_id] * len(times),
                              "timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
                              "heart_rate": pa.array(heart_rate + 0.5, pa.float32()),
                              "steps": pa.array(np.arange(len(times)) % 7, pa.int64()),
                              "device": ["fitbit_charge_4"] * len(times)})
        pq.write_table(table, cohort.sensor_logs / f"part-{i:03d}.parquet")
    pd.DataFrame({"user_id": sorted(frame["user_id"].unique()), "age": 40.0, "sex": "U",
                  "timezone": timezone}).to_parquet(cohort.users, index=False)
    return cohort


def test_weeks_of_top_rows_are_drawn_from_a_cohort_directory(tmp_path):
    frame = with_weeks(minimal_table(num_users=30, rows_per_user=2, seed=19)[0])
    cohort = _cohort(frame, tmp_path / "cohort", "America/New_York")
    result = analyse(frame, tmp_path, AnalyzeConfig(top_k=2, num_bootstrap=100,
                                                    num_permutations=100),
                     sensor_logs_dir=cohort.sensor_logs, users_file=cohort.users)
    assert result.week_plots_skipped is None and len(result.week_plots) == 8
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.week_plots)

    with pytest.raises(DataContractError) as caught:
        analyse(frame, tmp_path, FAST, sensor_logs_dir=tmp_path / "nowhere" / "sensor_logs",
                users_file=cohort.users)
    (problem,) = caught.value.problems
    assert problem.rule == "missing_directory" and "--data" in problem.fix
