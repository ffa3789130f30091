"""The gate's model comparisons against known answers: scores of the same user-weeks from a
much worse, an equally good and the same network; planted dead units; a shorter horizon; and
which run is the reference (last good, blessed, pinned)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stethoscope.schemas.errors import UsageError
from stethoscope.schemas.summary import (
    ActivationsSection,
    GradientsSection,
    LayerActivations,
    Summary,
    SyntheticResult,
)
from stethoscope.tasks.gate.config import GateConfig
from stethoscope.tasks.gate.reference import bless, find_reference
from stethoscope.tasks.gate.regressions import ModelFacts, model_changes, score_changes, verdict
from tests.unit.prediction_tables import (
    binormal_separation,
    cohort,
    network_logit,
    sigmoid,
    user_labels,
)

CONFIG = GateConfig(num_bootstrap=400)


def night(auroc: float, score_seed: int, num_users: int = 300, users_from: int = 0) -> pd.DataFrame:
    """One night's scored user-weeks: the same users, weeks and labels every night (seed 7);
    the scores of a network of this AUROC, drawn with `score_seed`."""
    rng = np.random.default_rng(7)
    frame = cohort(num_users + users_from, 2, rng)
    index = frame["user_id"].str[1:].astype(int).to_numpy()
    y = user_labels(num_users + users_from, 0.3, rng)[index]
    logit = network_logit(y, index, binormal_separation(auroc), np.random.default_rng(score_seed))
    frame = frame.assign(task="diabetes", y_true=y, y_score=sigmoid(logit))
    return frame[index >= users_from].reset_index(drop=True)


def by_measure(changes, measure):
    return next(c for c in changes if c.measure == measure)


@pytest.mark.parametrize(("delta", "ci", "expected"), [
    (-0.10, (-0.15, -0.05), "regression"),
    (-0.10, (-0.20, 0.01), "regression_point"),
    (-0.10, None, "regression_point"),
    (-0.01, (-0.02, -0.005), "same"),  # beyond noise but within the tolerance
    (0.10, (0.05, 0.15), "improved"),
    (None, None, "not_comparable"),
])
def test_a_verdict_needs_the_interval_for_an_error(delta, ci, expected):
    assert verdict(delta, ci, 0.02) == expected


def test_a_much_worse_night_is_a_regression_with_its_interval():
    first, second = night(0.85, 1), night(0.60, 2)
    auroc = by_measure(score_changes(first, second, CONFIG), "auroc")
    assert auroc.paired and auroc.n_users == 300
    assert auroc.delta == pytest.approx(-0.25, abs=0.07)
    assert auroc.delta_ci is not None and auroc.delta_ci[1] < -0.02
    assert auroc.verdict == "regression"


def test_an_equally_good_night_and_the_same_night_are_not():
    first = night(0.85, 1)
    again = score_changes(first, night(0.85, 3), CONFIG)
    assert {c.verdict for c in again} <= {"same", "improved"}
    same = score_changes(first, first.copy(), CONFIG)
    assert all(c.delta == 0 and c.verdict == "same" for c in same)


def test_other_users_are_compared_unpaired():
    worse = score_changes(night(0.85, 1), night(0.55, 2, num_users=300, users_from=300), CONFIG)
    auroc = by_measure(worse, "auroc")
    assert auroc.paired is False
    assert auroc.verdict == "regression" and auroc.delta_ci[1] < 0


def test_a_task_scored_in_one_run_only_is_not_comparable():
    first = night(0.85, 1)
    changes = score_changes(first, first.assign(task="hypertension"), CONFIG)
    assert {c.verdict for c in changes} == {"not_comparable"}


def _facts(dead: list[int], horizon: float = 24.0, r2: float = 0.8) -> ModelFacts:
    layer = LayerActivations(name="conv_1", units=16, dead_units=dead,
                             dead_fraction=len(dead) / 16, constant_units=[],
                             saturated_fraction=0.0)
    return ModelFacts(ActivationsSection(layers=[layer]),
                      GradientsSection(output_layer="raw_output", horizon_hours=horizon),
                      [SyntheticResult(target="hr_std_day_minus_night", r2=r2, baseline_r2=0.0,
                                       learned=True)], [])


def test_planted_dead_units_a_shorter_horizon_and_a_lost_target_are_reported():
    changes = model_changes(_facts([]), _facts([0, 3, 5, 9], horizon=6.0, r2=0.2), CONFIG)
    dead = by_measure(changes, "dead_fraction")
    assert dead.verdict == "regression_point" and "0, 3, 5, 9" in dead.detail
    assert by_measure(changes, "horizon_hours").verdict == "regression_point"
    assert by_measure(changes, "synthetic_r2").verdict == "regression_point"


def _with_r2_interval(facts: ModelFacts, r2: float, half_width: float) -> ModelFacts:
    (result,) = facts.synthetic
    return ModelFacts(facts.activations, facts.gradients,
                      [result.model_copy(update={"r2": r2,
                                                 "r2_ci": (r2 - half_width, r2 + half_width)})],
                      facts.strata)


@pytest.mark.parametrize(("half_width", "expected", "severity"), [
    (0.05, "regression", "warning"),  # 0.8 -> 0.5, both to +-0.05: the drop is shown
    (0.30, "regression_point", "info"),  # both to +-0.3 (few users): the data cannot tell
])
def test_a_synthetic_r2_drop_is_a_warning_only_when_the_intervals_show_it(
        half_width, expected, severity):
    from stethoscope.schemas.summary import ReferenceRun
    from stethoscope.tasks.gate.findings import regression_findings

    before = _with_r2_interval(_facts([]), 0.8, half_width)
    after = _with_r2_interval(_facts([]), 0.5, half_width)
    change = by_measure(model_changes(before, after, CONFIG), "synthetic_r2")
    assert change.delta == pytest.approx(-0.3) and change.delta_ci is not None
    # the difference of independent samples: sqrt(2) times each run's half-width
    assert change.delta_ci[1] - change.delta_ci[0] == pytest.approx(2 * np.sqrt(2) * half_width)
    assert change.verdict == expected
    reference = ReferenceRun(run_id="n1", path="/runs/n1", chosen="last_good", status="pass",
                             finished_at=datetime(2026, 12, 1, tzinfo=UTC))
    (finding,) = regression_findings([change], reference)
    assert finding.severity == severity
    assert ("the data cannot tell" in finding.message) is (severity == "info")


def test_an_auroc_drop_the_interval_does_not_show_is_info_not_a_warning():
    from stethoscope.schemas.summary import MetricChange, ReferenceRun
    from stethoscope.tasks.gate.findings import regression_findings

    change = MetricChange(measure="auroc", subject="diabetes", reference=0.8, current=0.7,
                          delta=-0.1, delta_ci=(-0.3, 0.1), paired=False, n_users=40,
                          tolerance=0.02, verdict="regression_point", detail="40 users")
    reference = ReferenceRun(run_id="n1", path="/runs/n1", chosen="last_good", status="pass",
                             finished_at=datetime(2026, 12, 1, tzinfo=UTC))
    (finding,) = regression_findings([change], reference)
    assert finding.severity == "info" and "the data cannot tell" in finding.message
    shown = change.model_copy(update={"delta_ci": (-0.15, -0.05), "verdict": "regression"})
    assert regression_findings([shown], reference)[0].severity == "error"


def test_the_same_model_has_no_regression():
    changes = model_changes(_facts([2]), _facts([2]), CONFIG)
    assert {c.verdict for c in changes} == {"same"}


def _finished_run(runs: Path, name: str, status: str, finished: datetime,
                  flow: str = "analyze-predictions") -> Path:
    run = runs / name
    run.mkdir(parents=True)
    summary = Summary(run_id=name, flow=flow, status=status, started_at=finished,
                      finished_at=finished, config={})
    (run / "summary.json").write_text(summary.model_dump_json())
    return run


def test_the_reference_is_the_last_good_run_then_the_blessed_then_the_pinned(tmp_path: Path):
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    runs = tmp_path / "runs"
    first = _finished_run(runs, "n1", "pass", t0)
    _finished_run(runs, "n2", "warn", t0 + timedelta(days=1))
    _finished_run(runs, "n3", "fail", t0 + timedelta(days=2))
    _finished_run(runs, "other", "pass", t0 + timedelta(days=2), flow="audit-model")
    tonight = runs / "n4"
    now = t0 + timedelta(days=3)
    found = find_reference(tonight, "analyze-predictions", now)
    assert found is not None and found.record.run_id == "n2" and found.record.chosen == "last_good"
    assert find_reference(tonight, "nightly-model-audit", now) is None

    bless(first)
    found = find_reference(tonight, "analyze-predictions", now)
    assert found.record.run_id == "n1" and found.record.chosen == "blessed"
    with pytest.raises(UsageError, match="fail"):
        bless(runs / "n3")

    pinned = find_reference(tonight, "analyze-predictions", now, pinned=runs / "other")
    assert pinned.record.run_id == "other" and pinned.record.chosen == "pinned"
    with pytest.raises(UsageError, match="summary.json"):
        find_reference(tonight, "analyze-predictions", now, pinned=tmp_path / "nowhere")
