"""Evidence before verdicts (issue #13): intervals that behave at small n, findings that claim
only what the data support, curves and calibration per task.

The statistics against references (scipy's BCa, scikit-learn's average precision and Brier
score), degenerate intervals against hand-built cases, the verdicts on seeded tables whose
truth is known (tests/unit/prediction_tables.py). The false-alarm share and the power over
many tables: tests/unit/test_analyze_false_alarms.py (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, brier_score_loss

from stethoscope.schemas.findings import REGISTRY, FindingCode
from stethoscope.schemas.summary import SCHEMA_FILE, PredictionsSection, Summary, status_of
from stethoscope.tasks.analyze import metrics
from stethoscope.tasks.analyze.analysis import analyze_frame, analyze_predictions
from stethoscope.tasks.analyze.config import AnalyzeConfig
from stethoscope.tasks.analyze.inputs import normalise_predictions
from stethoscope.tasks.shared import bootstrap
from stethoscope.tasks.shared import stats as _stats
from tests.unit.prediction_tables import (
    metadata_network_table,
    null_table,
    sigmoid,
    weak_generation_table,
)

FAST = AnalyzeConfig(num_bootstrap=400, num_permutations=300)


def analyze(frame: pd.DataFrame, config: AnalyzeConfig = FAST):
    return analyze_frame(normalise_predictions(pa.Table.from_pandas(frame, preserve_index=False)),
                         config)


def codes(tables, severity: str | None = None) -> list[str]:
    return [f.code for f in tables.findings if severity is None or f.severity == severity]


# --- BCa intervals over users -------------------------------------------------------------


@pytest.mark.parametrize("num_users", [15, 60])
def test_bca_interval_matches_scipy_with_users_as_observations(num_users):
    """A user-level statistic (mean of per-user values) gets scipy.stats.bootstrap's BCa
    interval, up to Monte Carlo error."""
    values = np.random.default_rng(num_users).exponential(size=num_users)

    def mean(counts: np.ndarray) -> np.ndarray:
        return (counts @ values / counts.sum(axis=1))[None, :]

    replicates = bootstrap.replicate(mean, num_users, num_users, 20_000,
                                     np.random.default_rng(1))
    ours = bootstrap.estimate(replicates, 0, 0.05)
    theirs = stats.bootstrap((values,), np.mean, method="BCa", n_resamples=20_000,
                             random_state=2).confidence_interval
    width = theirs.high - theirs.low
    assert ours.value == pytest.approx(values.mean())
    assert ours.ci == pytest.approx((theirs.low, theirs.high), abs=0.03 * width)


def test_grouped_jackknife_keeps_the_acceleration():
    """More users than groups: the leave-one-group-out acceleration is close to the
    leave-one-user-out one (same BCa interval up to Monte Carlo error)."""
    values = np.random.default_rng(3).exponential(size=1000)

    def mean(counts: np.ndarray) -> np.ndarray:
        return (counts @ values / counts.sum(axis=1))[None, :]

    exact = bootstrap.replicate(mean, 1000, 1000, 4000, np.random.default_rng(4),
                                max_groups=1000)
    grouped = bootstrap.Replicates(exact.observed, exact.draws, bootstrap.replicate(
        mean, 1000, 1000, 100, np.random.default_rng(5), max_groups=100).jackknife)
    low, high = bootstrap.estimate(exact, 0, 0.05).ci
    assert bootstrap.estimate(grouped, 0, 0.05).ci == pytest.approx((low, high),
                                                                  abs=0.02 * (high - low))


def _auroc_estimate(y: np.ndarray, scores: np.ndarray, user_index: np.ndarray):
    comparison = _stats.compare_task(scores, y, user_index, None, [], _stats.Resampling(
        500, 100, 0.05, np.random.default_rng(0)))
    return comparison.auroc


def test_interval_of_a_perfect_auroc_on_eight_rows_is_undefined_not_one_to_one():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    estimate = _auroc_estimate(y, np.linspace(0.1, 0.9, 8), np.arange(8))
    assert estimate.value == 1.0 and estimate.ci is None and estimate.se is None


def test_interval_with_one_positive_user_is_undefined():
    """Over a third of the resamples draw no positive: no interval, whatever the AUROC."""
    rng = np.random.default_rng(6)
    user_index = np.repeat(np.arange(60), 2)
    y = (user_index == 0).astype(int)
    estimate = _auroc_estimate(y, rng.random(120), user_index)
    assert estimate.value is not None and estimate.ci is None


def test_interval_needs_min_class_users_of_each_class():
    rng = np.random.default_rng(7)
    user_index = np.repeat(np.arange(40), 2)
    y = np.isin(user_index, [0, 1, 2]).astype(int)  # 3 positive users
    scores = sigmoid(1.5 * y + rng.normal(size=80))
    for at_least, defined in ((3, True), (4, False)):
        comparison = _stats.compare_task(scores, y, user_index, None, [(user_index < 20, None)],
                                         _stats.Resampling(300, 100, 0.05,
                                                           np.random.default_rng(0),
                                                           min_class_users=at_least))
        assert (comparison.auroc.ci is not None) == defined
        assert comparison.auroc.value is not None
        assert comparison.strata[0].delta.ci is None  # a stratum holds fewer positives


def test_interval_with_enough_users_of_each_class_is_defined_and_covers_the_estimate():
    rng = np.random.default_rng(7)
    user_index = np.repeat(np.arange(40), 2)
    y = np.isin(user_index, [0, 1, 2, 3, 4]).astype(int)
    estimate = _auroc_estimate(y, sigmoid(1.5 * y + rng.normal(size=80)), user_index)
    low, high = estimate.ci
    assert 0 <= low <= estimate.value <= high <= 1 and estimate.se > 0


def test_min_detectable_delta_stays_within_the_auroc_range():
    assert _stats.min_detectable_delta(0.8, (200, 800), (600, 2400), 0.05, 0.8) == \
        pytest.approx(2.8016 * math.sqrt(_stats.auroc_variance(0.8, 200, 800)
                                         + _stats.auroc_variance(0.8, 600, 2400)), rel=1e-3)
    assert _stats.min_detectable_delta(0.8, (1, 5), (40, 60), 0.05, 0.8) is None  # > 0.8
    assert _stats.min_detectable_delta(0.8, (0, 3), (40, 60), 0.05, 0.8) is None  # no class


# --- AUPRC, Brier, calibration and operating points ---------------------------------------


def test_weighted_average_precision_equals_scikit_learn_with_ties():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) * 0.7 + 0.3 * y, 1)  # many ties
    weights = rng.integers(0, 4, (3, 400)).astype(float)
    ranked = _stats.RankedScores(scores, y)
    expected = [average_precision_score(y, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(ranked.groups(ranked.sort(weights)).average_precision(),
                               expected, atol=1e-12)


def test_brier_and_ece_of_all_rows_equal_their_definitions():
    rng = np.random.default_rng(9)
    scores = rng.random(300)
    y = (rng.random(300) < scores).astype(int)
    ones = np.ones((1, 300))
    assert metrics.brier(y, scores)(ones)[0] == pytest.approx(brier_score_loss(y, scores))
    bins = metrics.calibration_bins(scores, 10)
    assert np.bincount(bins).tolist() == [30] * 10  # equal-count bins
    expected = sum(np.mean(bins == b) * abs(y[bins == b].mean() - scores[bins == b].mean())
                   for b in range(10))
    assert metrics.expected_calibration_error(y, scores, bins)(ones)[0] == pytest.approx(expected)


def test_operating_points_reach_their_targets():
    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 500)
    scores = sigmoid(2 * y + rng.normal(size=500))
    points = metrics.operating_thresholds(scores, y, 0.5, 0.9, 0.8)
    assert set(points) == {"decision", "sensitivity 0.90", "specificity 0.80", "score 0.50"}
    sensitivity = np.mean(scores[y == 1] >= points["sensitivity 0.90"])
    assert sensitivity >= 0.9 and np.mean(scores[y == 1] > points["sensitivity 0.90"]) < 0.9
    assert np.mean(scores[y == 0] < points["specificity 0.80"]) >= 0.8


# --- verdicts that need evidence ----------------------------------------------------------


def test_the_issues_40_user_null_table_raises_no_warning():
    """40 users, 3 of them positive, no effect anywhere: nothing the data cannot support. What
    the data cannot tell is said (info), with detectable effects inside the AUROC's range."""
    for seed in range(6):
        frame = null_table(40, seed, positive_share=0.075, auroc=(0.5, 0.75)[seed % 2])
        tables = analyze(frame)
        task = tables.tasks.iloc[0]
        assert (task["n"], task["num_users"], task["positive_users"]) == (80, 40, 3)
        assert codes(tables, "warning") == [] and codes(tables, "error") == []
        assert status_of(tables.findings) == "pass"
        assert {"BASELINE_AT_CHANCE", "UNDERPOWERED"} & set(codes(tables))
        detectable = tables.strata["min_detectable_delta"].dropna()
        assert (detectable <= tables.tasks.iloc[0]["auroc"]).all()
        for finding in tables.findings:
            assert "inf" not in finding.message and "nan" not in finding.message, finding


def test_a_baseline_below_chance_is_said_so_and_judges_nothing():
    """Cross-fitted on few positives, the baseline ranks its left-out positives low."""
    frame = null_table(52, 3, positive_share=0.06, auroc=0.5, rows_per_user=2)
    tables = analyze(frame)
    task = tables.tasks.iloc[0]
    assert task["baseline_fit"] == "cross-fit"
    (said,) = [f for f in tables.findings if f.code == "BASELINE_AT_CHANCE"]
    assert said.severity == "info" and f"AUROC {task['baseline_auroc']:.3f}" in said.message
    assert "METADATA_DOMINATED" not in codes(tables)


def test_a_metadata_network_with_too_few_users_is_underpowered_not_dominated():
    """Labels and network both from age and sex, on 60 users: whether the network adds to
    the baseline cannot be told; no warning, an UNDERPOWERED info with what it could have
    seen, within the AUROC's range."""
    found = {}
    for seed in range(8):
        tables = analyze(metadata_network_table(60, seed))
        found[seed] = codes(tables)
        task = tables.tasks.iloc[0]
        for finding in (f for f in tables.findings if f.code == "UNDERPOWERED"):
            assert finding.severity == "info"
            assert "detected" in finding.message
            if pd.notna(task["min_detectable_gain"]):
                assert task["baseline_auroc"] + task["min_detectable_gain"] <= 1
        if "METADATA_DOMINATED" in found[seed]:  # then with evidence
            assert task["baseline_auroc_ci_low"] > 0.5
            assert (task["gain_ci_high"] < FAST.min_gain_over_baseline
                    or task["corr_ci_low"] >= FAST.max_correlation_with_baseline)
    assert any("UNDERPOWERED" in c or "BASELINE_AT_CHANCE" in c for c in found.values())


def test_a_metadata_network_on_many_users_is_dominated_with_its_evidence():
    tables = analyze(metadata_network_table(1000, 11))
    task = tables.tasks.iloc[0]
    (dominated,) = [f for f in tables.findings if f.code == "METADATA_DOMINATED"]
    assert dominated.severity == "warning"
    assert task["baseline_auroc_ci_low"] > 0.5 and task["corr_ci_low"] >= 0.9
    assert "1000 users" in dominated.message and "positives from" in dominated.message


def test_a_planted_weak_generation_is_flagged_with_counts_and_intervals():
    tables = analyze(weak_generation_table(1500, 12, auroc=0.85, weak_auroc=0.6))
    (weak,) = [f for f in tables.findings if f.code == "WEAK_STRATUM"
               and "device_generation=1:" in f.message]
    strata = tables.strata.set_index(["column", "value"])
    generation_1 = strata.loc[("device_generation", "1")]
    assert generation_1["delta_ci_high"] < 0 < generation_1["auroc_ci_low"]
    assert f"{generation_1['positives']} positives" in weak.message
    assert "interval undefined" not in weak.message


# --- tables, summary records, plots -------------------------------------------------------


def test_every_task_metric_carries_counts_and_intervals_in_the_summary(tmp_path: Path):
    frame = null_table(120, 13, positive_share=0.3, auroc=0.8, tasks=("diabetes", "sleep_apnea"))
    path = tmp_path / "predictions.parquet"
    frame.to_parquet(path, index=False)
    result = analyze_predictions(path, tmp_path / "out", FAST)

    section = json.loads((tmp_path / "out" / "analysis.json").read_text())["predictions"]
    assert PredictionsSection.model_validate(section) == result.predictions_section()
    assert "BCa" in section["interval_method"] and "users" in section["interval_method"]
    for task in section["tasks"]:
        rows = frame[frame["task"] == task["task"]]
        assert (task["n"], task["n_positives"], task["n_users"]) == (
            len(rows), int(rows["y_true"].sum()), rows["user_id"].nunique())
        assert task["auprc"] == pytest.approx(average_precision_score(rows["y_true"],
                                                                      rows["y_score"]))
        assert task["brier"] == pytest.approx(brier_score_loss(rows["y_true"], rows["y_score"]))
        assert task["ece"] is not None and task["ece_ci"][0] <= task["ece"] <= task["ece_ci"][1]
        for name in ("auroc", "auprc", "baseline_auroc", "gain"):
            low, high = task[f"{name}_ci"]
            assert low <= high
        assert [p["point"] for p in task["operating_points"]] == [
            "decision", "sensitivity 0.90", "specificity 0.90", "score 0.50"]
        for point in task["operating_points"]:
            assert point["tp"] + point["fn"] == task["n_positives"]
            assert point["tp"] + point["fp"] + point["fn"] + point["tn"] == task["n"]
    for stratum in section["strata"]:
        assert stratum["n_positives"] is not None and stratum["n_users"] is not None

    tables = {name: pd.read_parquet(p) for name, p in result.tables.items()}
    assert set(tables["calibration"]["task"]) == {"diabetes", "sleep_apnea"}
    assert (tables["calibration"].groupby("task")["n"].sum() == 240).all()
    assert {"sensitivity_ci_low", "ppv", "npv_ci_high"} <= set(tables["operating_points"])

    names = {p.name for p in result.plots}
    assert {"roc_pr_diabetes.png", "calibration_diabetes.png"} <= names
    figures = {f.path.name: f for f in result.outcome().figures}
    assert figures["roc_pr_diabetes.png"].title == "diabetes: ROC and precision-recall curves"
    assert figures["calibration_sleep_apnea.png"].caption
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in result.plots)


def test_new_codes_are_registered_for_the_analyze_stage():
    for code in (FindingCode.UNDERPOWERED, FindingCode.BASELINE_AT_CHANCE):
        assert REGISTRY[code].stage == "analyze"


def test_the_exported_summary_schema_is_current():
    assert json.loads(SCHEMA_FILE.read_text()) == json.loads(
        json.dumps(Summary.model_json_schema()))
