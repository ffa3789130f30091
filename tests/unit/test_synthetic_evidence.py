"""The synthetic verdict's evidence (tasks/audits/synthetic/evidence.py): a target is reported
as not learned (warning) only when an interval over user-level resamples excludes passing the
rule it fails; where the validation sample cannot tell, the finding is SYNTHETIC_INCONCLUSIVE
(info) with the interval's width. Known answers from planted R², no network involved."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import r2_score

from stethoscope.tasks.audits.synthetic.audit import score_target
from stethoscope.tasks.audits.synthetic.config import SyntheticAudit, SyntheticConfig
from stethoscope.tasks.audits.synthetic.evidence import r2_evidence
from stethoscope.tasks.audits.synthetic.findings import synthetic_findings

CONFIG = SyntheticConfig(num_bootstrap=500)
TARGET = "hr_std_day_minus_night"


def planted(num_users: int, weeks: int, r2: float, seed: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and validation targets (unit variance, a per-user part of half of it) and a
    prediction whose population R² is `r2`; the users of the validation rows."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(num_users), weeks).astype(str).astype(object)
    y = (rng.normal(0, np.sqrt(0.5), num_users)[np.repeat(np.arange(num_users), weeks)]
         + rng.normal(0, np.sqrt(0.5), num_users * weeks))
    predicted = y + rng.normal(0, np.sqrt(1 - r2), len(y))  # E(y - p)^2 = 1 - r2, var(y) = 1
    return rng.normal(0, 1, 200), y, predicted, users


def audit_of(num_users: int, weeks: int, r2: float, seed: int = 0):
    y_train, y_val, predicted, users = planted(num_users, weeks, r2, seed)
    score = score_target(TARGET, y_train, y_val, predicted, None, CONFIG, users)
    return score, SyntheticAudit(scores=[score], network="bilstm network",
                                 reference="no-recurrence network", num_train_user_weeks=200,
                                 num_val_user_weeks=len(y_val), epochs_trained=5)


def test_the_observed_r2_is_sklearns_and_lies_in_its_interval() -> None:
    y_train, y_val, predicted, users = planted(60, 2, 0.4, seed=1)
    y_val[::7] = np.nan  # unknown values are left out
    evidence = r2_evidence(y_val, predicted, predicted * 0.5, float(y_train.mean()), users, 500,
                           0.05, np.random.default_rng(0))
    score = score_target(TARGET, y_train, y_val, predicted, predicted * 0.5, CONFIG, users)
    known = ~np.isnan(y_val)
    assert score.r2 == pytest.approx(r2_score(y_val[known], predicted[known]))
    assert evidence.n_users == 60 and evidence.r2_ci is not None
    assert evidence.r2_ci[0] < score.r2 < evidence.r2_ci[1]
    assert evidence.baseline_gap_ci is not None and evidence.reference_gap_ci is not None


def test_a_clearly_unlearned_target_on_many_users_is_a_warning() -> None:
    score, audit = audit_of(200, 2, r2=0.2)
    assert not score.learned and score.shown == ("below the threshold",)
    assert score.r2_ci is not None and score.r2_ci[1] < 0.5
    (finding,) = synthetic_findings(audit, CONFIG)
    assert (finding.code, finding.severity) == ("SYNTHETIC_NOT_LEARNED", "warning")
    assert f"R^2 {score.r2:.2f} [{score.r2_ci[0]:.2f}, {score.r2_ci[1]:.2f}] on 400 " \
           "validation user-weeks of 200 users" in finding.message


def test_the_same_miss_on_few_users_is_inconclusive_with_the_intervals_width() -> None:
    score, audit = audit_of(8, 2, r2=0.35, seed=3)
    assert not score.learned and score.shown == ()
    (finding,) = synthetic_findings(audit, CONFIG)
    assert (finding.code, finding.severity) == ("SYNTHETIC_INCONCLUSIVE", "info")
    assert "the data cannot tell whether the bilstm network learns it" in finding.message
    assert "validation users its R² interval spans about ±" in finding.message
    assert finding.recommendation.startswith("Not a verdict on the architecture")


def test_fewer_than_five_users_give_no_interval_and_no_verdict() -> None:
    score, audit = audit_of(4, 4, r2=0.0)
    assert score.evidence is not None and score.evidence.r2_ci is None and score.shown == ()
    (finding,) = synthetic_findings(audit, CONFIG)
    assert finding.code == "SYNTHETIC_INCONCLUSIVE" and "there is no interval" in finding.message


def test_a_learned_target_raises_nothing() -> None:
    score, audit = audit_of(40, 2, r2=0.9)
    assert score.learned and synthetic_findings(audit, CONFIG) == []


@pytest.mark.parametrize("num_users", [20, 60])
def test_at_the_threshold_a_warning_is_rare(num_users: int) -> None:
    """A network whose population R² is exactly the threshold: 'not learned' is false as a
    claim, so a warning is a false alarm. Nominally one-sided alpha / 2 = 2.5%; BCa covers a
    little less at small n (measured over 100 seeds: 7% at 10 users, 5% at 30 and 100, 3% at
    300). Over 80 seeded samples at most 6 (7.5%) may warn, and at least a quarter must miss
    the threshold on the point estimate (else the test would not test the interval)."""
    warned = missed = 0
    for seed in range(80):
        score, _ = audit_of(num_users, 2, r2=0.5, seed=seed)
        missed += not score.learned
        warned += score.shown_not_learned
    assert missed >= 20
    assert warned <= 6, f"{warned} of 80 samples at R² = threshold warned"


def test_the_power_to_show_a_clear_miss_grows_with_users() -> None:
    """R² 0.1 against the threshold 0.5: shown in almost every sample of 100 users (measured
    98 of 100), in fewer of 10 (37 of 100)."""
    power = {n: np.mean([audit_of(n, 2, r2=0.1, seed=s)[0].shown_not_learned for s in range(30)])
             for n in (10, 100)}
    assert power[100] >= 0.9 and power[10] < 0.7
