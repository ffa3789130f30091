"""The synthetic audit after a training run on the synthetic targets: the network's verdict comes
from training's record (model/pretrain_r2.json) instead of a second fit, the reference trains on
a bounded sample, and the verdicts match a from-scratch audit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import r2_score

from stethoscope.model.config import ModelConfig
from stethoscope.tasks.audits.synthetic import audit as audit_module
from stethoscope.tasks.audits.synthetic.audit import audit_synthetic
from stethoscope.tasks.audits.synthetic.config import (
    PretrainRecord,
    PretrainTarget,
    SyntheticConfig,
)
from stethoscope.tasks.audits.synthetic.fit import Fit
from stethoscope.tasks.audits.synthetic.task import synthetic_task
from stethoscope.tasks.shared.store import open_store
from stethoscope.tasks.train.config import TrainConfig
from stethoscope.tasks.train.training import train_model
from tests.model.conftest import write_store
from tests.model.test_synthetic import BUDGET, MEAN, MODEL, NUM_STEPS, WHEN, plant_targets


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """150 users x 4 weeks: 360 train, 120 validation user-weeks of T = 64 bins."""
    root = write_store(tmp_path_factory.mktemp("pretrained") / "store", num_users=150, weeks=4,
                       num_steps=NUM_STEPS, conditions=(), targets=(), shard_size=64)
    return plant_targets(root)


def record_for(store: Path, model: ModelConfig = MODEL, **targets: float) -> PretrainRecord:
    """A record as training writes it for `store`: R² per target given, every count true."""
    opened = open_store(store, model)
    val, train = opened.splits["val"], opened.splits["train"]
    return PretrainRecord(
        phase="pretrain", model=model.model_dump(mode="json"), epochs=5, best_epoch=4,
        max_epochs=5, train_user_weeks=len(train), val_user_weeks=len(val),
        val_users=sorted(set(val.rows.column("user_id").to_pylist())),
        targets={name: PretrainTarget(r2=r2, baseline_r2=-0.01,
                                      n_train=int(np.sum(~np.isnan(train.labels[name]))),
                                      n_val=int(np.sum(~np.isnan(val.labels[name]))),
                                      still_improving=False)
                 for name, r2 in targets.items()})


class CountFits:
    """Stands in for fit_network: records each fit (recurrence, train user-weeks) and predicts
    the validation truth for MEAN and zeros for WHEN, without training anything."""

    def __init__(self) -> None:
        self.fits: list[tuple[str, int]] = []

    def __call__(self, store, train, val, specs, model_config, config) -> Fit:
        self.fits.append((model_config.recurrence, len(train)))
        predicted = {s.name: (np.nan_to_num(val.labels[s.name]) if s.name == MEAN
                              else np.zeros(len(val))) for s in specs}
        return Fit(predicted, 3, frozenset())


@pytest.fixture
def fits(monkeypatch) -> CountFits:
    counter = CountFits()
    monkeypatch.setattr(audit_module, "fit_network", counter)
    return counter


def test_a_record_of_this_network_replaces_its_fit(store, fits, tmp_path) -> None:
    config = SyntheticConfig(reference_max_train_user_weeks=40)
    record = record_for(store, **{WHEN: 0.9, MEAN: 0.8})
    record_file = tmp_path / "pretrain_r2.json"
    record_file.write_text(record.model_dump_json())

    result = synthetic_task.fn(store, tmp_path / "synthetic", config, MODEL, record_file)

    # the configured (bilstm) network is not fitted again; the reference once, on 40 user-weeks
    assert fits.fits == [("none", 40)]
    scores = {r.target: r for r in result.results}
    assert scores[WHEN].r2 == 0.9 and scores[WHEN].learned  # the reference predicts 0: R² < 0
    # the reference predicts MEAN perfectly: the network's recorded 0.8 is clearly below it
    assert scores[MEAN].r2 == 0.8 and not scores[MEAN].learned
    assert result.note.startswith("bilstm network: from pre-training: 5 epochs on 360 "
                                  "user-weeks (training's record, not trained again)")
    assert "no-recurrence network fitted on 40 train user-weeks" in result.note
    assert "scored on 120 validation user-weeks" in result.note  # every one, not a sample


def test_without_a_record_both_networks_are_fitted_and_the_reference_is_bounded(
        store, fits) -> None:
    config = SyntheticConfig(max_train_user_weeks=100, reference_max_train_user_weeks=30)
    audit = audit_synthetic(store, config, MODEL)

    assert fits.fits == [("bilstm", 100), ("none", 30)]
    assert audit.pretrained is None and audit.num_reference_user_weeks == 30


@pytest.mark.parametrize(("change", "why"), [
    ({"model": MODEL.model_copy(update={"units": 4}).model_dump(mode="json")},
     "another model configuration"),
    ({"val_users": ["someone-else"]}, "validation users are not this store's"),
    ({"targets": {}}, f"did not learn target {WHEN}"),
])
def test_a_record_that_does_not_fit_is_ignored_with_the_reason(store, fits, caplog, change,
                                                                  why) -> None:
    record = record_for(store, **{WHEN: 0.9, MEAN: 0.95}).model_copy(update=change)
    with caplog.at_level(logging.WARNING, "stethoscope.synthetic"):
        audit = audit_synthetic(store, SyntheticConfig(), MODEL, record)

    assert [recurrence for recurrence, _ in fits.fits] == ["bilstm", "none"]
    assert audit.pretrained is None
    assert why in caplog.text and "training the network from scratch" in caplog.text


def test_a_memoryless_network_with_a_record_fits_nothing(store, fits) -> None:
    memoryless = MODEL.model_copy(update={"recurrence": "none"})
    audit = audit_synthetic(store, SyntheticConfig(), memoryless,
                            record_for(store, memoryless, **{WHEN: 0.1, MEAN: 0.95}))

    assert fits.fits == []  # the reference IS the network, whose scores are recorded
    assert [(s.target, s.reference_r2, s.learned) for s in audit.scores] == [
        (WHEN, 0.1, False), (MEAN, 0.95, True)]


@pytest.mark.slow
def test_verdicts_from_training_match_a_from_scratch_audit(store, tmp_path) -> None:
    """Training on the targets alone with the audit's budget, then the audit from its record,
    against the audit training the same network from scratch on the same data."""
    train = TrainConfig(mode="synthetic", epochs=BUDGET.epochs, batch_size=BUDGET.batch_size,
                        learning_rate=BUDGET.learning_rate, patience=BUDGET.patience)
    trained = train_model(store, tmp_path / "model", train, MODEL)
    assert trained.pretrain_record == tmp_path / "model" / "pretrain_r2.json"
    written = json.loads(trained.pretrain_record.read_text())
    assert written["epochs"] == BUDGET.epochs and written["train_user_weeks"] == 360
    assert set(written["targets"]) == {WHEN, MEAN}

    whole = BUDGET.model_copy(update={"max_train_user_weeks": None, "max_val_user_weeks": None,
                                      "reference_max_train_user_weeks": None})
    scratch = audit_synthetic(store, whole, MODEL)
    recorded = audit_synthetic(store, whole, MODEL,
                               PretrainRecord.model_validate_json(written_text(trained)))

    assert recorded.pretrained is not None and scratch.pretrained is None
    for a, b in zip(scratch.scores, recorded.scores, strict=True):
        assert (a.target, a.learned, a.n_train, a.n_val) == (b.target, b.learned, b.n_train,
                                                              b.n_val)
        assert b.r2 == pytest.approx(a.r2, abs=0.05)
        assert b.baseline_r2 == pytest.approx(a.baseline_r2, abs=1e-6)
        assert b.reference_r2 == pytest.approx(a.reference_r2, abs=1e-6)  # same fit, same data
        # both verdicts carry an interval resampled by user; the record's predictions are
        # aligned with the store's validation rows (their R² is the recorded one)
        assert a.r2_ci is not None and b.r2_ci is not None and b.evidence is not None
        assert b.r2_ci[0] <= b.r2 <= b.r2_ci[1]
        assert b.evidence.n_users == a.evidence.n_users  # type: ignore[union-attr]
        assert b.r2_ci == pytest.approx(a.r2_ci, abs=0.1)
        assert b.shown_not_learned == a.shown_not_learned
    val = open_store(store, MODEL, stage="test").splits["val"]
    for name, target in written["targets"].items():
        predicted = np.array([np.nan if v is None else v for v in target["predicted"]])
        known = ~np.isnan(val.labels[name])
        assert len(predicted) == len(val) and np.array_equal(known, ~np.isnan(predicted))
        assert r2_score(val.labels[name][known], predicted[known]) == pytest.approx(target["r2"])


def written_text(trained) -> str:
    return Path(trained.pretrain_record).read_text()
