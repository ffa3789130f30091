"""The synthetic-target audit: a known answer on a fabricated store (a target that only a network
with memory can learn), the verdict rules on hand-built numbers, and the files it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from matplotlib.figure import Figure

from stethoscope.model.config import ModelConfig
from stethoscope.schemas.errors import UsageError
from stethoscope.schemas.sequence_store import StorePaths, StoreStats
from stethoscope.tasks.audits.synthetic.audit import (
    audit_synthetic,
    is_learned,
    learnability_table,
    score_target,
)
from stethoscope.tasks.audits.synthetic.config import (
    LEARNABILITY_SCHEMA,
    PREREQUISITES,
    UNNAMED_PREREQUISITE,
    SyntheticAudit,
    SyntheticConfig,
    TargetScore,
    prerequisite_of,
)
from stethoscope.tasks.audits.synthetic.findings import synthetic_findings
from stethoscope.tasks.audits.synthetic.plots import plot_learnability
from stethoscope.tasks.audits.synthetic.task import synthetic_task
from tests.model.conftest import write_store

NUM_STEPS = 64
SPIKE = 6.0  # standardised heart rate; the fabricated noise stays within about +-5
# Stands in for night_resting_hr_change: its value depends on WHERE in the week something
# happens, which a mean over time of local features cannot know.
WHEN = "night_resting_hr_change"
MEAN = "mean_heart_rate"  # the easy one: a plain mean over time

# pooling 4x after one conv block: the recurrent layer runs over T' = 16 steps, so the tiny LSTM
# learns its latch in a few epochs, while the conv alone still sees only ~6 input bins
MODEL = ModelConfig(num_steps=NUM_STEPS, conv_filters=(8,), kernel_size=3, pool_size=4, units=8)
MEMORYLESS = MODEL.model_copy(update={"recurrence": "none"})
BUDGET = SyntheticConfig(epochs=12, batch_size=16, learning_rate=1e-2, patience=12)


def plant_targets(root: Path, seed: int = 0) -> Path:
    """Plant one heart-rate spike at a random bin of every user-week of a conftest store; add
    the targets WHEN = spike bin / T and MEAN = mean heart rate (every 7th one unknown)."""
    rng = np.random.default_rng(seed)
    paths = StorePaths(root=root)
    index = pq.read_table(paths.index)
    when, mean = [], []
    shards: dict[str, np.ndarray] = {}
    for shard, row in zip(index.column("shard").to_pylist(), index.column("row").to_pylist(),
                          strict=True):
        if shard not in shards:
            shards[shard] = np.load(paths.shard(shard))
        sequence = shards[shard][row]  # [T, C], a view: planting writes into the shard
        spike_at = int(rng.integers(NUM_STEPS))
        sequence[spike_at, 0] = SPIKE
        when.append(spike_at / NUM_STEPS)
        mean.append(None if len(mean) % 7 == 6 else float(sequence[:, 0].mean()))
    for name, array in shards.items():
        np.save(paths.shard(name), array)
    index = index.append_column(WHEN, pa.array(when, pa.float64()))
    pq.write_table(index.append_column(MEAN, pa.array(mean, pa.float64())), paths.index)
    stats = StoreStats.model_validate_json(paths.stats.read_text())
    paths.stats.write_text(stats.model_copy(update={"targets": [WHEN, MEAN]}).model_dump_json())
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """150 users x 4 weeks: 360 train, 120 validation user-weeks of T = 64 bins."""
    root = write_store(tmp_path_factory.mktemp("synthetic") / "store", num_users=150, weeks=4,
                       num_steps=NUM_STEPS, conditions=(), targets=(), shard_size=64)
    return plant_targets(root)


def by_target(audit: SyntheticAudit) -> dict[str, TargetScore]:
    return {s.target: s for s in audit.scores}


# --- known answers on the fabricated store -------------------------------------------------


@pytest.mark.slow
def test_recurrent_network_learns_what_the_memoryless_reference_cannot(store, tmp_path) -> None:
    result = synthetic_task.fn(store, tmp_path / "synthetic", BUDGET, MODEL)

    table = pq.read_table(result.table_file)
    assert table.schema.equals(LEARNABILITY_SCHEMA)
    rows = {row["target"]: row for row in table.to_pylist()}
    when, mean = rows[WHEN], rows[MEAN]
    # the bilstm latches "spike seen" and its mean over time is linear in the spike's position
    assert when["learned"] and when["r2"] > 0.8
    # the conv-only reference has no idea where in the week it is: no better than the mean
    assert when["reference_r2"] < 0.2 and when["reference"] == "no-recurrence network"
    assert when["prerequisite"] == PREREQUISITES[WHEN]
    assert mean["learned"] and mean["r2"] > 0.9 and mean["reference_r2"] > 0.9
    for row in rows.values():
        assert row["baseline_r2"] <= 0.0  # the train mean explains nothing on new users
    # unknown targets are masked: every 7th index row lacks MEAN, 51 train and 18 val rows
    assert when["n_train"] == 360 and when["n_val"] == 120
    assert mean["n_train"] == 360 - 51 and mean["n_val"] == 120 - 18

    assert result.findings == []
    assert [(r.target, r.learned) for r in result.results] == [(WHEN, True), (MEAN, True)]
    assert result.results[0].r2 == pytest.approx(when["r2"])
    assert result.plot_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "bilstm network" in result.note and "360 train / 120 validation" in result.note

    outcome = result.outcome()  # what the report stage receives
    assert outcome.stage == "synthetic" and outcome.synthetic == result.results
    assert [f.path for f in outcome.figures] == [result.plot_file]


@pytest.mark.slow
def test_memoryless_architecture_is_flagged_with_the_prerequisite(store) -> None:
    config = BUDGET.model_copy(update={"epochs": 6, "patience": 6})
    audit = audit_synthetic(store, config, MEMORYLESS)

    scores = by_target(audit)
    assert not scores[WHEN].learned and scores[WHEN].r2 < 0.2
    assert scores[MEAN].learned
    # the reference IS the configured network here: trained once, scored once
    assert scores[WHEN].reference_r2 == scores[WHEN].r2
    assert audit.reference == "no-recurrence network (= the network)"

    findings = synthetic_findings(audit, config)
    assert [(f.stage, f.severity, f.code) for f in findings] == [
        ("synthetic", "warning", "SYNTHETIC_NOT_LEARNED")]
    message = findings[0].message
    assert message.startswith(f"{WHEN} (needs memory across days")
    assert "the no-recurrence network does not learn it: R^2" in message
    assert "below the threshold 0.5" in message
    assert "A condition that needs memory across days" in message
    assert not scores[WHEN].still_improving  # it plateaued: the verdict is the architecture's
    assert "longer memory" in findings[0].recommendation


@pytest.mark.slow
def test_linear_reference_is_a_per_bin_ridge(store) -> None:
    config = BUDGET.model_copy(update={"epochs": 4, "reference": "linear", "targets": (MEAN,)})
    audit = audit_synthetic(store, config, MEMORYLESS)

    (score,) = audit.scores
    assert audit.reference == "per-bin ridge"
    assert score.target == MEAN and score.learned
    assert score.reference_r2 > 0.9  # the mean is linear in the bins


def test_budget_caps_user_weeks_and_too_few_known_values_skip_training(store) -> None:
    config = SyntheticConfig(max_train_user_weeks=40, max_val_user_weeks=8, min_known=10)
    audit = audit_synthetic(store, config, MODEL)

    assert audit.num_train_user_weeks == 40 and audit.num_val_user_weeks == 8
    assert audit.epochs_trained == 0  # nothing evaluable, so nothing was trained
    assert all(s.r2 is None and not s.learned for s in audit.scores)
    findings = synthetic_findings(audit, config)
    assert {(f.code, f.severity) for f in findings} == {("SYNTHETIC_NOT_EVALUATED", "info")}
    assert "8 validation user-weeks" in findings[0].message


def test_unknown_target_is_a_usage_error(store) -> None:
    with pytest.raises(UsageError, match=r"\['sleepiness'\] are not in the sequence store"):
        audit_synthetic(store, SyntheticConfig(targets=(WHEN, "sleepiness")), MODEL)


# --- the verdict on hand-built numbers ------------------------------------------------------


def test_score_target_masks_unknown_values_and_scores_in_target_units() -> None:
    y_train = np.array([1.0, 3.0, np.nan, 2.0])  # mean 2
    y_val = np.array([1.0, np.nan, 2.0, 3.0, 4.0])
    perfect = np.array([1.0, 99.0, 2.0, 3.0, 4.0])  # wrong only where the target is unknown
    mean_of_val = np.full(5, 2.5)

    score = score_target("t", y_train, y_val, perfect, mean_of_val, SyntheticConfig(min_known=3))

    assert (score.n_train, score.n_val) == (3, 4)
    assert score.r2 == pytest.approx(1.0) and score.reference_r2 == pytest.approx(0.0)
    # predicting the train mean 2 for targets 1..4: 1 - sum((y-2)^2) / sum((y-2.5)^2)
    assert score.baseline_r2 == pytest.approx(1 - 6 / 5)
    assert score.learned


def test_score_target_is_not_evaluated_below_min_known() -> None:
    score = score_target("t", np.ones(20), np.array([1.0, 2.0, np.nan]), np.zeros(3), None,
                         SyntheticConfig(min_known=3))
    assert (score.r2, score.baseline_r2, score.learned, score.n_val) == (None, None, False, 2)


@pytest.mark.parametrize(
    ("r2", "baseline", "reference", "learned"),
    [
        (0.60, -0.01, 0.10, True),
        (0.49, -0.01, 0.10, False),  # below the threshold
        (0.60, -0.01, 0.64, True),  # within the margin of the reference
        (0.60, -0.01, 0.70, False),  # clearly worse than the memory-less reference
        (0.60, 0.65, None, False),  # no better than the train mean
        (0.60, -0.01, None, True),  # no reference
    ],
)
def test_is_learned(r2, baseline, reference, learned) -> None:
    assert is_learned(r2, baseline, reference, SyntheticConfig()) is learned


def test_prerequisites_name_every_labels_target_and_fall_back_for_others() -> None:
    assert prerequisite_of("hr_std_day_minus_night") == "telling day from night over several days"
    assert prerequisite_of("night_resting_hr_change").startswith("memory across days")
    assert prerequisite_of("something_new") == UNNAMED_PREREQUISITE


def test_worse_than_reference_is_flagged_with_its_own_advice() -> None:
    audit = SyntheticAudit(
        scores=[TargetScore("hr_std_day_minus_night", 0.55, -0.02, 0.80, 100, 40, False,
                            shown=("below the reference",)),
                TargetScore("mean_daily_steps", 0.95, -0.01, 0.96, 100, 40, True)],
        network="bilstm network", reference="no-recurrence network",
        num_train_user_weeks=100, num_val_user_weeks=40, epochs_trained=8)

    (finding,) = synthetic_findings(audit, SyntheticConfig())

    assert finding.message.startswith(
        "hr_std_day_minus_night (needs telling day from night over several days): the bilstm "
        "network learns it less well than the no-recurrence network: R^2 0.55 on 40 "
        "validation user-weeks (train mean -0.02, no-recurrence network 0.80)")
    assert "still falling" not in finding.message
    assert "what the network adds hurts" in finding.recommendation
    table = learnability_table(audit)
    assert table.column("learned").to_pylist() == [False, True]
    assert table.column("prerequisite").to_pylist()[1] == PREREQUISITES["mean_daily_steps"]
    figure = plot_learnability(audit)
    assert isinstance(figure, Figure) and len(figure.axes[0].patches) == 6  # 3 bars x 2 targets


def test_a_fit_that_was_still_improving_blames_the_budget_first() -> None:
    audit = SyntheticAudit(
        scores=[TargetScore("resting_heart_rate", 0.2, -0.01, 0.1, 64, 16, False,
                            still_improving=True, shown=("below the threshold",))],
        network="bilstm network", reference="no-recurrence network",
        num_train_user_weeks=64, num_val_user_weeks=16, epochs_trained=3)

    (finding,) = synthetic_findings(audit, SyntheticConfig())

    assert "below the threshold 0.5" in finding.message
    assert "still falling at the last epoch" in finding.message
    assert finding.recommendation.startswith("Raise synthetic.epochs")
    assert learnability_table(audit).column("still_improving").to_pylist() == [True]


def _small_budget_audit(*scores: tuple[str, float, bool]) -> SyntheticAudit:
    """(target, R^2, learned) scored on 64 train / 32 validation user-weeks in 5 epochs; a
    target not learned is shown below the threshold by its interval."""
    return SyntheticAudit(
        scores=[TargetScore(name, r2, -0.02, 0.0, 64, 32, learned,
                            shown=() if learned else ("below the threshold",))
                for name, r2, learned in scores],
        network="bilstm network", reference="no-recurrence network",
        num_train_user_weeks=64, num_val_user_weeks=32, epochs_trained=5)


def test_a_failed_sanity_target_makes_the_other_verdicts_inconclusive() -> None:
    audit = _small_budget_audit(("hr_std_day_minus_night", 0.05, False),
                                ("mean_daily_steps", 0.04, False), ("resting_heart_rate", 0.93, True))

    findings = synthetic_findings(audit, SyntheticConfig())

    assert [(f.severity, f.message.split(" ")[0]) for f in findings] == [
        ("info", "hr_std_day_minus_night"), ("warning", "mean_daily_steps")]
    day_night, sanity = findings
    assert "inconclusive, since it did not learn the sanity target mean_daily_steps" in day_night.message
    assert "out of its reach" not in day_night.message
    assert "with 64 train user-weeks and 5 epochs the training budget is too small" in sanity.message
    assert "out of its reach" not in sanity.message
    assert sanity.recommendation.startswith("Raise synthetic.epochs and synthetic.max_train_user_weeks")


def test_the_recommendation_asks_for_more_budget_only_where_the_split_has_more() -> None:
    """The budget is worth raising while the train split holds user-weeks the audit left out;
    once it used them all, the cohort is the limit, and the recommendation says so."""
    from dataclasses import replace

    small = _small_budget_audit(("mean_daily_steps", 0.04, False))
    roomy = replace(small, split_train_user_weeks=300)
    whole = replace(small, split_train_user_weeks=64)
    (more,) = synthetic_findings(roomy, SyntheticConfig())
    (limit,) = synthetic_findings(whole, SyntheticConfig())
    assert "synthetic.max_train_user_weeks (it used 64 of the train split's 300)" in more.recommendation
    assert "max_train_user_weeks" not in limit.recommendation
    assert "its train split has 64 user-weeks, all of them used: add users or weeks" in limit.recommendation


def test_a_learned_sanity_target_leaves_the_verdicts_as_they_are() -> None:
    audit = _small_budget_audit(("hr_std_day_minus_night", 0.05, False), ("mean_daily_steps", 0.9, True))

    (finding,) = synthetic_findings(audit, SyntheticConfig())

    assert finding.severity == "warning" and "out of its reach too" in finding.message


def test_a_diverged_network_is_scored_as_the_train_mean(store, caplog) -> None:
    config = SyntheticConfig(epochs=1, learning_rate=1e12, targets=(MEAN,))
    audit = audit_synthetic(store, config, MEMORYLESS)

    (score,) = audit.scores
    assert score.r2 == pytest.approx(score.baseline_r2) and not score.learned
    assert "diverged" in caplog.text
