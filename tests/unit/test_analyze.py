"""The analyze stage on small seeded prediction frames built here (no trained model needed)."""

from __future__ import annotations

import json
import pickle
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from stethoscope.schemas.errors import DataContractError
from stethoscope.schemas.summary import PredictionsSection
from stethoscope.schemas.tables import PREDICTIONS
from stethoscope.tasks.analyze.analysis import analyze_frame, analyze_predictions
from stethoscope.tasks.analyze.config import AnalysisResult, AnalyzeConfig
from stethoscope.tasks.analyze.inputs import normalise_predictions, read_predictions
from stethoscope.tasks.analyze.metadata import age_bands
from stethoscope.tasks.analyze.plots import load_samples
from stethoscope.tasks.shared import stats as _stats
from stethoscope.tasks.shared.calendar import week_window

FAST = {"num_bootstrap": 300, "num_permutations": 300}
DEVICES = {1: "apple_watch_1st_gen", 2: "apple_watch_series_2", 3: "apple_watch_series_3",
           4: "apple_watch_series_4"}


def user_weeks(num_users: int = 240, weeks: int = 3, seed: int = 0,
               train_share: float = 0.0) -> tuple[pd.DataFrame, np.random.Generator]:
    """One row per user-week with the metadata of predictions.parquet (no task columns yet)."""
    rng = np.random.default_rng(seed)
    generation = rng.integers(1, 5, num_users)
    users = pd.DataFrame({
        "user_id": [f"u{i:04d}" for i in range(num_users)],
        "age": rng.uniform(20, 85, num_users).round(1),
        "sex": rng.choice(["F", "M"], num_users),
        "device_generation": generation,
        "device": [DEVICES[g] for g in generation],
        "split": np.where(rng.random(num_users) < train_share, "train", "test"),
    })
    frame = users.loc[np.repeat(users.index, weeks)].reset_index(drop=True)
    frame["week_start"] = [date(2024, 1, 1) + timedelta(weeks=int(w))
                           for w in np.tile(np.arange(weeks), num_users)]
    return frame, rng


def with_predictions(frame: pd.DataFrame, y: np.ndarray, logit: np.ndarray,
                     task: str = "sleep_apnea") -> pd.DataFrame:
    return frame.assign(task=task, y_true=np.asarray(y, dtype="int8"),
                        y_score=1 / (1 + np.exp(-np.asarray(logit, dtype=float))))


def analyze(frame: pd.DataFrame, **config: object):
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return analyze_frame(normalise_predictions(table), AnalyzeConfig(**config))


def noisy_generation(seed: int, num_users: int = 300, weeks: int = 3, weak: int = 1,
                     weak_noise: float = 3.0) -> pd.DataFrame:
    """A good network except on one device generation, whose scores are much noisier."""
    frame, rng = user_weeks(num_users, weeks, seed)
    latent = rng.normal(size=len(frame))
    y = latent + rng.normal(size=len(frame)) > 0.3
    noise = np.where(frame["device_generation"] == weak, weak_noise, 0.5)
    return with_predictions(frame, y, 2 * latent + noise * rng.normal(size=len(frame)))


def stratum(tables, column: str, value: str, task: str = "sleep_apnea") -> pd.Series:
    rows = tables.strata
    match = rows[(rows["task"] == task) & (rows["column"] == column) & (rows["value"] == value)]
    assert len(match) == 1, f"no single stratum {column}={value}"
    return match.iloc[0]


def codes(tables) -> list[str]:
    return [f.code for f in tables.findings]


# --- AUROC and its interval ---------------------------------------------------------------


def test_auroc_equals_scikit_learn_with_ties_and_weights():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) * 0.6 + 0.4 * y, 1)  # many ties
    weights = rng.integers(0, 4, (3, 500)).astype(float)
    ranked = _stats.RankedScores(scores, y)
    assert ranked.auroc()[0] == pytest.approx(roc_auc_score(y, scores), abs=1e-12)
    expected = [roc_auc_score(y, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(ranked.auroc(weights), expected, atol=1e-12)
    inside = rng.random(500) < 0.3
    auroc_in, auroc_out = ranked.groups(ranked.sort(weights)).split(
        ranked.groups(ranked.sort(weights * inside)))
    np.testing.assert_allclose(auroc_in, [roc_auc_score(y[inside], scores[inside],
                                                        sample_weight=w[inside]) for w in weights],
                               atol=1e-12)
    np.testing.assert_allclose(auroc_out, [roc_auc_score(y[~inside], scores[~inside],
                                                         sample_weight=w[~inside])
                                           for w in weights], atol=1e-12)


def test_task_auroc_equals_scikit_learn_on_evaluation_rows():
    frame, rng = user_weeks(200, 2, seed=1, train_share=0.4)
    latent = rng.normal(size=len(frame))
    data = with_predictions(frame, latent > 0, latent + rng.normal(size=len(frame)))
    tables = analyze(data, **FAST)
    evaluated = data[data["split"] == "test"]
    task = tables.tasks.iloc[0]
    assert task["n"] == len(evaluated)
    assert task["auroc"] == pytest.approx(roc_auc_score(evaluated["y_true"],
                                                        evaluated["y_score"]), abs=1e-12)
    assert task["auroc_ci_low"] < task["auroc"] < task["auroc_ci_high"]


def test_bootstrap_resamples_users_not_rows():
    """Ten identical weeks per user carry no more information than one: the interval must not
    shrink (a row bootstrap would shrink it about sqrt(10) = 3.2 times)."""
    frame, rng = user_weeks(150, 1, seed=2)
    latent = rng.normal(size=len(frame))
    one_week = with_predictions(frame, latent + rng.normal(size=len(frame)) > 0, latent)
    ten_weeks = pd.concat([one_week.assign(week_start=one_week["week_start"] + timedelta(weeks=w))
                           for w in range(10)], ignore_index=True)
    widths = []
    for data in (one_week, ten_weeks):
        task = analyze(data, num_bootstrap=1000, num_permutations=100).tasks.iloc[0]
        widths.append(task["auroc_ci_high"] - task["auroc_ci_low"])
    assert widths[1] == pytest.approx(widths[0], rel=0.25)


# --- strata -------------------------------------------------------------------------------


def test_planted_weak_stratum_is_flagged_with_negative_delta():
    tables = analyze(noisy_generation(seed=0), num_bootstrap=500, num_permutations=500)
    weak = stratum(tables, "device_generation", "1")
    assert weak["flagged"]
    assert weak["delta_vs_rest"] < 0 and weak["delta_ci_high"] < 0
    assert weak["p_adjusted"] < 0.05
    others = tables.strata[(tables.strata["column"] == "device_generation")
                           & (tables.strata["value"] != "1")]
    assert not others["flagged"].any()
    assert "WEAK_STRATUM" in codes(tables)
    finding = next(f for f in tables.findings if f.code == "WEAK_STRATUM")
    assert "device_generation=1" in finding.message and finding.severity == "warning"


def test_no_true_difference_is_rarely_flagged_over_20_seeds():
    seeds_with_flags, all_flags, p_values = 0, 0, []
    for seed in range(20):
        frame, rng = user_weeks(200, 3, seed=100 + seed)
        latent = rng.normal(size=len(frame))  # independent of every metadata column
        data = with_predictions(frame, latent + rng.normal(size=len(frame)) > 0, 1.5 * latent)
        strata = analyze(data, **FAST).strata
        seeds_with_flags += bool(strata["flagged"].any())
        all_flags += int(strata["flagged"].sum())
        p_values += strata["p_value"].dropna().tolist()
    assert seeds_with_flags <= 2  # at most 10% of 20 runs
    assert all_flags <= 0.1 * len(p_values)
    # the raw permutation p-values are roughly uniform, not stuck at 1 (a test that can fail)
    assert 0.3 < np.mean(p_values) < 0.7


def test_tiny_stratum_is_reported_underpowered_never_passed():
    frame, rng = user_weeks(200, 3, seed=4)
    frame.loc[frame["user_id"].isin(["u0000", "u0001", "u0002"]), "device_generation"] = 5
    latent = rng.normal(size=len(frame))
    data = with_predictions(frame, latent + rng.normal(size=len(frame)) > 0, latent)
    tables = analyze(data, **FAST)
    tiny = stratum(tables, "device_generation", "5")
    assert tiny["underpowered"] and not tiny["flagged"]
    assert pd.isna(tiny["p_value"]) and pd.isna(tiny["p_adjusted"])
    assert "3 users" in tiny["reason"]
    assert tiny["min_detectable_delta"] > 0 and tiny["min_detectable_delta"] > stratum(
        tables, "device_generation", "1")["min_detectable_delta"]
    finding = next(f for f in tables.findings if f.code == "UNDERPOWERED_STRATUM")
    assert finding.severity == "info" and "device_generation" in finding.message
    assert "5 (n=9" in finding.message
    record = next(s for s in _records(tables).strata if s.value == "5")
    assert record.p_value is None and record.flagged is False


def test_unknown_device_generation_is_its_own_stratum():
    data = noisy_generation(seed=5, weak_noise=0.5)
    data["device_generation"] = data["device_generation"].astype("Int16")
    data.loc[data["user_id"] < "u0030", "device_generation"] = pd.NA
    tables = analyze(data, **FAST)
    assert stratum(tables, "device_generation", "unknown")["n"] == 30 * 3


# --- metadata baseline --------------------------------------------------------------------


@pytest.mark.parametrize("train_share, fit", [(0.5, "train"), (0.0, "cross-fit")])
def test_network_that_is_a_function_of_age_and_sex_is_metadata_dominated(train_share, fit):
    frame, rng = user_weeks(400, 2, seed=6, train_share=train_share)
    metadata = 0.06 * (frame["age"] - 50) + 0.8 * (frame["sex"] == "M")
    y = rng.random(len(frame)) < 1 / (1 + np.exp(-(metadata + rng.normal(size=len(frame)))))
    tables = analyze(with_predictions(frame, y, 0.05 * (frame["age"] - 50)
                                      + 0.6 * (frame["sex"] == "M")), **FAST)
    task = tables.tasks.iloc[0]
    assert task["baseline_fit"] == fit
    assert task["corr_with_baseline"] > 0.9
    assert "METADATA_DOMINATED" in codes(tables)


def test_network_with_signal_beyond_metadata_is_not_metadata_dominated():
    frame, rng = user_weeks(400, 2, seed=7, train_share=0.5)
    latent = rng.normal(size=len(frame))
    metadata = 0.03 * (frame["age"] - 50)
    y = latent + metadata + 0.5 * rng.normal(size=len(frame)) > 0
    tables = analyze(with_predictions(frame, y, 2 * latent + metadata), **FAST)
    task = tables.tasks.iloc[0]
    assert task["gain_ci_low"] > 0 and task["gain_p_value"] < 0.05
    assert abs(task["corr_with_baseline"]) < 0.9
    assert "METADATA_DOMINATED" not in codes(tables)


# --- wins, losses and loss patterns -------------------------------------------------------


def test_planted_loss_pattern_found_and_equally_common_value_not_reported():
    frame, rng = user_weeks(300, 3, seed=8)
    frame["site"] = rng.choice(["north", "south"], len(frame))  # extra metadata, no effect
    y = rng.random(len(frame)) < 0.4
    logit = np.where(y, 2.5, -2.5) + rng.normal(size=len(frame))
    blind = (frame["device_generation"] == 3) & y  # this device misses every positive
    logit = np.where(blind, -3 + 0.3 * rng.normal(size=len(frame)), logit)
    tables = analyze(with_predictions(frame, y, logit), **FAST)
    patterns = tables.loss_patterns.set_index(["column", "value"])
    planted = patterns.loc[("device", "apple_watch_series_3")]
    assert planted["reported"] and planted["lift"] > 2 and planted["q_value"] < 1e-6
    assert patterns.loc[("device_generation", "3"), "reported"]
    for value in ("north", "south"):
        assert not patterns.loc[("site", value), "reported"]
    assert not patterns.xs("sex", level="column")["reported"].any()
    messages = [f.message for f in tables.findings if f.code == "LOSS_PATTERN"]
    assert any("device=apple_watch_series_3" in m for m in messages)
    assert not any("site=" in m for m in messages)


def test_top_predictions_are_the_most_confident_of_each_kind():
    frame, rng = user_weeks(150, 2, seed=9)
    y = rng.random(len(frame)) < 0.3
    data = with_predictions(frame, y, 1.5 * (2 * y - 1) + rng.normal(size=len(frame)))
    tables = analyze(data, top_k=5, **FAST)
    top = tables.top_predictions
    threshold = np.sort(data["y_score"])[::-1][int(y.sum()) - 1]
    fp = top[top["kind"] == "FP"]
    negatives_above = data[(data["y_true"] == 0) & (data["y_score"] >= threshold)]
    assert fp["y_score"].tolist() == sorted(negatives_above["y_score"], reverse=True)[:5]
    fn = top[top["kind"] == "FN"]
    assert (fn["y_true"] == 1).all() and fn["y_score"].is_monotonic_increasing
    tp, tn = top[top["kind"] == "TP"], top[top["kind"] == "TN"]
    assert tp["y_score"].iloc[0] == data.loc[data["y_true"] == 1, "y_score"].max()
    assert tn["y_score"].iloc[0] == data.loc[data["y_true"] == 0, "y_score"].min()
    assert {r.kind for r in _records(tables).top_losses} == {"FP", "FN"}


# --- the simulated cohort's structure -----------------------------------------------------


def test_oldest_generation_effect_of_the_simulator_is_found():
    """Predictions shaped like the simulator plants them (metadata effects on the labels, the
    oldest generation's sensor noisier); the end-to-end version belongs to the flow tests."""
    frame, rng = user_weeks(500, 2, seed=10, train_share=0.3)
    frame.loc[frame["user_id"] >= "u0480", "device"] = "no_such_watch"
    frame["device_generation"] = frame["device_generation"].astype("Int16")
    frame.loc[frame["device"] == "no_such_watch", "device_generation"] = pd.NA
    parts = []
    for task_name in ("sleep_apnea", "diabetes"):
        latent = rng.normal(size=len(frame))
        metadata = 0.02 * (frame["age"] - 50) + 0.3 * (frame["sex"] == "M")
        y = latent + metadata + 0.7 * rng.normal(size=len(frame)) > 0.5
        noise = np.where(frame["device_generation"].fillna(0) == 1, 3.5, 0.6)
        parts.append(with_predictions(frame, y, 2 * latent + metadata
                                      + noise * rng.normal(size=len(frame)), task_name))
    tables = analyze(pd.concat(parts, ignore_index=True), num_bootstrap=500,
                     num_permutations=500)
    generations = tables.strata[tables.strata["column"] == "device_generation"]
    flagged = generations[generations["flagged"]]
    assert sorted(flagged["task"]) == ["diabetes", "sleep_apnea"]
    assert set(flagged["value"]) == {"1"} and (flagged["delta_vs_rest"] < 0).all()
    assert "unknown" in set(generations["value"])


# --- files, contract and records ----------------------------------------------------------


def _records(tables) -> AnalysisResult:
    from stethoscope.tasks.analyze.records import stratum_records, task_records, top_loss_records

    return AnalysisResult(tasks=task_records(tables.tasks), strata=stratum_records(tables.strata),
                          top_losses=top_loss_records(tables.top_predictions),
                          findings=tables.findings, tables={}, plots=[], week_plots=[])


def test_bad_predictions_file_names_every_broken_column(tmp_path: Path):
    frame, rng = user_weeks(20, 1, seed=11)
    data = with_predictions(frame, rng.random(20) < 0.5, rng.normal(size=20))
    data.loc[0, "y_score"] = 1.5
    data["y_true"] = data["y_true"].astype(int)
    data.loc[1, "y_true"] = 2
    data = data.drop(columns=["task"]).assign(device_generation=data["device_generation"]
                                              .astype(str))
    path = tmp_path / "predictions.parquet"
    data.to_parquet(path, index=False)
    with pytest.raises(DataContractError) as caught:
        read_predictions(path, AnalyzeConfig())
    found = {(p.column, p.rule) for p in caught.value.problems}
    assert found == {("task", "required_column"), ("y_score", "probability"),
                     ("y_true", "binary_label"), ("device_generation", "column_type")}
    text = str(caught.value)
    assert str(path) in text and "Fix:" in text


def test_unreadable_file_is_a_data_contract_error(tmp_path: Path):
    path = tmp_path / "predictions.parquet"
    path.write_text("not parquet")
    with pytest.raises(DataContractError, match="readable"):
        read_predictions(path, AnalyzeConfig())


def test_empty_predictions_are_analysed_as_nothing_to_analyse(tmp_path: Path):
    path = tmp_path / "predictions.parquet"
    pq.write_table(PREDICTIONS.empty_table(), path)  # train writes this when there are no labels
    result = analyze_predictions(path, tmp_path / "out", AnalyzeConfig(**FAST))
    assert [f.code for f in result.findings] == ["NO_PREDICTIONS"]
    assert result.tasks == [] and result.strata == [] and result.plots == []
    assert pd.read_parquet(result.tables["strata"]).empty


def test_single_class_task_is_not_evaluable_and_others_still_are():
    frame, rng = user_weeks(120, 2, seed=14)
    latent = rng.normal(size=len(frame))
    data = pd.concat([with_predictions(frame, latent > 0, latent, "sleep_apnea"),
                      with_predictions(frame, np.zeros(len(frame)), latent, "diabetes")],
                     ignore_index=True)
    tables = analyze(data, **FAST)
    records = {t.task: t for t in _records(tables).tasks}
    assert records["diabetes"].auroc is None and records["diabetes"].auroc_ci is None
    assert records["sleep_apnea"].auroc == pytest.approx(1.0)
    assert [f.message.split(":")[0] for f in tables.findings
            if f.code == "TASK_NOT_EVALUABLE"] == ["task diabetes"]
    assert not tables.strata.loc[tables.strata["task"] == "diabetes", "flagged"].any()


def _sensor_logs(frame: pd.DataFrame, directory: Path, timezone: str) -> None:
    """Half-hourly samples over every user-week, written with nanosecond timestamps."""
    rows = []
    for user_id, week_start in frame[["user_id", "week_start"]].drop_duplicates().itertuples(
            index=False):
        start, _ = week_window(week_start, timezone)
        times = start + pd.to_timedelta(np.arange(0, 7 * 48) * 30, unit="min")
        rows.append(pd.DataFrame({"user_id": user_id, "timestamp": times,
                                  "heart_rate": 60 + 10 * np.sin(np.arange(len(times))),
                                  "steps": np.arange(len(times)) % 50, "device": "fitbit_charge_4"}))
    logs = pd.concat(rows, ignore_index=True)
    schema = pa.schema([("user_id", pa.string()), ("timestamp", pa.timestamp("ns", tz="UTC")),
                        ("heart_rate", pa.float64()), ("steps", pa.int64()),
                        ("device", pa.string())])
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(logs, schema=schema, preserve_index=False),
                   directory / "part-0.parquet", row_group_size=2000)


def test_analyze_predictions_writes_tables_plots_and_records(tmp_path: Path):
    data = noisy_generation(seed=12, num_users=60, weeks=2, weak_noise=0.5)
    path = tmp_path / "predictions.parquet"
    data.to_parquet(path, index=False)
    users = data[["user_id"]].drop_duplicates().assign(age=40.0, sex="F",
                                                        timezone="Europe/Berlin")
    users.to_parquet(tmp_path / "users.parquet", index=False)
    _sensor_logs(data, tmp_path / "sensor_logs", "Europe/Berlin")
    config = AnalyzeConfig(top_k=2, **FAST)

    alone = analyze_predictions(path, tmp_path / "alone", config)
    assert alone.week_plots == [] and "sensor logs" in alone.week_plots_skipped

    result = analyze_predictions(path, tmp_path / "run", config, tmp_path / "sensor_logs",
                                 tmp_path / "users.parquet")
    assert result.week_plots_skipped is None and len(result.week_plots) == 8
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.week_plots + result.plots)
    assert {p.name for p in result.plots} == {"roc_pr_sleep_apnea.png",
                                              "calibration_sleep_apnea.png",
                                              "scatter_sleep_apnea.png",
                                              "forest_sleep_apnea.png"}
    assert {"calibration", "operating_points"} <= set(result.tables)
    strata = pd.read_parquet(result.tables["strata"])
    assert {"underpowered", "min_detectable_delta", "p_adjusted", "flagged"} <= set(strata)
    top = pd.read_parquet(result.tables["top_predictions"])
    assert top["week_plot"].notna().all()
    assert set(pd.read_parquet(result.tables["loss_patterns"])["column"]) >= {"timezone"}
    assert len(pd.read_parquet(result.tables["baseline_scores"])) == len(data)
    section = json.loads((tmp_path / "run" / "analysis.json").read_text())["predictions"]
    assert PredictionsSection.model_validate(section) == result.predictions_section()
    assert AnalysisResult.model_validate_json(result.model_dump_json()) == result
    assert pickle.loads(pickle.dumps(result)) == result
    assert result.tasks[0].auroc == pytest.approx(
        roc_auc_score(data["y_true"], data["y_score"]), abs=1e-12)


def test_week_samples_are_read_for_one_user_and_week_only(tmp_path: Path):
    frame, _ = user_weeks(3, 3, seed=13)
    _sensor_logs(frame, tmp_path / "logs", "America/New_York")
    start, end = week_window(date(2024, 1, 8), "America/New_York")
    samples = load_samples(tmp_path / "logs", ["u0001"], start, end)
    assert set(samples["user_id"]) == {"u0001"} and len(samples) == 7 * 48
    assert samples["timestamp"].min() == start and samples["timestamp"].max() < end


def test_week_samples_never_come_from_a_link_out_of_the_sensor_logs(tmp_path: Path):
    """`analyze --data COHORT`: a file linked into sensor_logs/ from elsewhere is not read."""
    frame, _ = user_weeks(3, 3, seed=13)
    _sensor_logs(frame, tmp_path / "logs", "America/New_York")
    _sensor_logs(frame, tmp_path / "elsewhere", "America/New_York")
    secret = sorted((tmp_path / "elsewhere").rglob("*.parquet"))[0]
    for f in sorted((tmp_path / "logs").rglob("*.parquet")):
        f.unlink()
    (tmp_path / "logs" / "linked.parquet").symlink_to(secret)
    start, end = week_window(date(2024, 1, 8), "America/New_York")
    assert load_samples(tmp_path / "logs", ["u0001"], start, end).empty


def test_week_window_is_local_and_dst_correct():
    start, end = week_window(date(2024, 3, 4), "America/New_York")  # DST begins 10 March
    assert start == pd.Timestamp("2024-03-04 05:00", tz="UTC")
    assert end - start == pd.Timedelta(hours=7 * 24 - 1)


# --- small pure pieces --------------------------------------------------------------------


def test_age_bands():
    ages = pd.Series([29.9, 30, 44.9, 45, 75, 90, np.nan])
    assert age_bands(ages, (30, 45, 60, 75)).tolist() == [
        "<30", "30-44", "30-44", "45-59", "75+", "75+", "unknown"]


def test_p_value_adjustments():
    p = [0.01, 0.04, 0.03, 0.5]
    assert _stats.adjust_p_values(p, "bh") == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert _stats.adjust_p_values(p, "holm") == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_sequential_p_value_stops_early_and_is_bounded_below():
    always = (np.ones(100) for _ in range(10))
    assert _stats.sequential_p_value(always, 0.5) == 1.0
    never = (np.zeros(100) for _ in range(3))
    assert _stats.sequential_p_value(never, 0.5) == pytest.approx(1 / 301)
    assert _stats.permutations_needed(40, 0.05, 300) == 1600


def test_config_rejects_unknown_keys_and_unsorted_bands():
    with pytest.raises(ValueError):
        AnalyzeConfig(num_bootstraps=10)
    with pytest.raises(ValueError):
        AnalyzeConfig(age_band_edges=(45, 30))
