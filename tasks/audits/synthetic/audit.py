"""The synthetic-target audit: can the configured architecture learn each synthetic target at
all (docs/architecture.md §1.1)? A target stands for a prerequisite of the real conditions (telling day
from night, memory across days, ...); an architecture that cannot learn it on the inputs it is
computed from cannot learn a condition that needs the same thing either.

Per run, from fresh weights and on a bounded budget (`max_train_user_weeks` of the train split,
`max_val_user_weeks` of the validation split, sampled with `seed`):

- the configured network is trained on every evaluable target JOINTLY, one regression head per
  target (TaskSpec offset/scale = the budget's train mean/std, so every head learns in
  standardised units and the masked losses weigh the targets alike). One fit instead of one per
  target keeps the audit a fixed cost of `epochs` epochs; the price is a shared trunk, which can
  only make a target harder to learn, so a `learned` verdict stays conservative.
  Early stopping (`patience`) watches the validation loss and restores the best epoch.
- a memory-less reference is fitted the same way: `no_recurrence` = the same ModelConfig with
  recurrence "none" (conv blocks -> raw_output -> mean over time: a sum of local features, blind
  to where in the week a bin lies); `linear` = a ridge regression on every bin of the sequence
  (one weight per bin and channel, alpha by leave-one-out), which knows positions but builds no
  representation. When the configured network is itself memory-less and the reference is
  `no_recurrence`, the two are the same network and it is trained once.
- the trivial baseline predicts the train mean.

The reference trains on at most `reference_max_train_user_weeks` (128) of those train
user-weeks: a memory-less network's R² levels off on fewer examples than the configured one's,
and a reference that scores a little low makes `learned` a little easier, never harder, than
with the full sample; the saving is a fit on a fraction of the data.

When training has just trained the configured network on these targets (`train.mode`
pretrain_finetune or synthetic), its record (`model/pretrain_r2.json`, tasks/train/
pretrain_record.py, `PretrainRecord`) gives the network's scores instead of a second fit: R²
of its best pre-training epoch on EVERY validation user-week with a known target (not a
`max_val_user_weeks` sample), the train mean's over the whole train split, and its own budget
(`train.pretrain_epochs`, all train user-weeks). The reference is then scored on those same
user-weeks. The record is used only when it is of this network (model config), these
validation users and these targets (`record_mismatch`); otherwise the audit trains as above,
with a warning saying why.

Scores are R^2 (`sklearn.metrics.r2_score`) on the validation user-weeks whose target is known,
in the target's own units. A target is *learned* when R^2 >= `r2_threshold` (0.5), R^2 beats
the baseline, and R^2 >= the reference's R^2 - `reference_margin` (0.05): a network that does
clearly worse than a model without its memory is not using that memory. A target with fewer
than `min_known` known values in either split is not evaluated (r2 None, an info finding).
When the network's validation loss on a target was still falling at the last epoch
(`still_improving`), the finding says so and blames the budget first: raise `epochs`.
A network whose predictions are not finite (diverged) is scored as the train mean.

The validation user-weeks both stop training early and are scored, a mild optimism (one of at
most `epochs` checkpoints is chosen) that is small next to the threshold.

Training uses the train stage's store reader, batch stream and compile step, so that the audit
sees the data exactly as training does.

Outputs under `out_dir`: `learnability.parquet` (LEARNABILITY_SCHEMA, one row per target) and
`learnability.png` (R^2 per target: network vs reference vs train mean).

The parts live in private modules: the budget and the fits in `tasks/audits/synthetic/fit.py`, the
text of the findings in `tasks/audits/synthetic/findings.py`, the bar plot in `tasks/audits/synthetic/plots.py`.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import pyarrow as pa
from sklearn.metrics import r2_score

from stethoscope.model.config import ModelConfig, TaskSpec
from stethoscope.tasks.audits.synthetic.config import (
    DEFAULT_CONFIG,
    LEARNABILITY_SCHEMA,
    PretrainRecord,
    PretrainTarget,
    SyntheticAudit,
    SyntheticConfig,
    TargetScore,
)
from stethoscope.tasks.audits.synthetic.evidence import (
    failed_rules,
    r2_evidence,
    shown_failures,
)
from stethoscope.tasks.audits.synthetic.fit import (
    Fit,
    budget,
    fit_network,
    fit_ridge,
    known_rows,
    target_names,
    target_specs,
)
from stethoscope.tasks.shared.store import Split, Store, open_store

matplotlib.use("Agg")
log = logging.getLogger("stethoscope.synthetic")


def score_target(
    target: str,
    y_train: np.ndarray,
    y_val: np.ndarray,
    predicted: np.ndarray | None,
    reference: np.ndarray | None,
    config: SyntheticConfig = DEFAULT_CONFIG,
    users: np.ndarray | None = None,
) -> TargetScore:
    """Score one target. `y_train` [n_train] and `y_val` [n_val] hold NaN where unknown;
    `predicted` and `reference` are [n_val] predictions in the target's units (None: the
    target was not fitted); `users` [n_val], the user of each validation row, gives the
    verdict its intervals (evidence.py; None: no intervals, so no verdict is shown)."""
    train_known = y_train[~np.isnan(y_train)]
    val_known = ~np.isnan(y_val)
    n_train, n_val = len(train_known), int(val_known.sum())
    if predicted is None or min(n_train, n_val) < config.min_known:
        return TargetScore(target, None, None, None, n_train, n_val, learned=False)
    truth = y_val[val_known]
    r2 = float(r2_score(truth, predicted[val_known]))
    baseline = float(r2_score(truth, np.full(n_val, train_known.mean())))
    reference_r2 = None if reference is None else float(r2_score(truth, reference[val_known]))
    score = TargetScore(target, r2, baseline, reference_r2, n_train, n_val,
                        learned=is_learned(r2, baseline, reference_r2, config))
    if users is None:
        return score
    return with_evidence(score, y_val, predicted, reference, float(train_known.mean()), users,
                         config)


def with_evidence(score: TargetScore, y_val: np.ndarray, predicted: np.ndarray,
                  reference: np.ndarray | None, train_mean: float, users: np.ndarray,
                  config: SyntheticConfig) -> TargetScore:
    """`score` with the intervals of its rules and the failed rules they show (evidence.py);
    `y_val`, `predicted`, `reference` and `users` are [n_val] rows of the validation split."""
    if score.r2 is None or score.baseline_r2 is None:
        return score
    rng = np.random.default_rng([config.seed, zlib.crc32(score.target.encode())])
    evidence = r2_evidence(y_val, predicted, reference, train_mean, users,
                           config.num_bootstrap, config.alpha, rng)
    shown = () if score.learned else tuple(shown_failures(
        score.r2, score.baseline_r2, score.reference_r2, evidence, config.r2_threshold,
        config.reference_margin))
    return replace(score, evidence=evidence, shown=shown)


def is_learned(r2: float, baseline_r2: float, reference_r2: float | None,
               config: SyntheticConfig = DEFAULT_CONFIG) -> bool:
    """R^2 passes the threshold, beats the train mean, and is not clearly below the reference."""
    return not failed_rules(r2, baseline_r2, reference_r2, config.r2_threshold,
                            config.reference_margin)


def learnability_table(audit: SyntheticAudit) -> pa.Table:
    """One row per target (LEARNABILITY_SCHEMA)."""
    rows = [{"target": s.target, "prerequisite": s.prerequisite, "r2": s.r2,
             "r2_ci_low": None if s.r2_ci is None else s.r2_ci[0],
             "r2_ci_high": None if s.r2_ci is None else s.r2_ci[1],
             "baseline_r2": s.baseline_r2, "reference_r2": s.reference_r2,
             "n_train": s.n_train, "n_val": s.n_val,
             "n_val_users": None if s.evidence is None else s.evidence.n_users,
             "learned": s.learned, "not_learned_shown": s.shown_not_learned,
             "still_improving": s.still_improving, "reference": audit.reference}
            for s in audit.scores]
    return pa.Table.from_pylist(rows, schema=LEARNABILITY_SCHEMA)


def audit_synthetic(store_dir: Path, config: SyntheticConfig, model_config: ModelConfig,
                    pretrained: PretrainRecord | None = None) -> SyntheticAudit:
    """Train the configured network and the reference on the store's budgeted sample and score
    every target on the validation user-weeks. With `pretrained` (training's record of its
    phase on these targets, for this network and store) the network's scores come from it and
    only the reference is trained."""
    store = open_store(Path(store_dir), model_config, stage="synthetic")
    names = target_names(store, config)
    mismatch = None if pretrained is None else record_mismatch(pretrained, store, names,
                                                              model_config, config)
    if pretrained is not None and mismatch is None:
        return _audit_from_record(store, names, pretrained, config, model_config)
    if mismatch is not None:
        log.warning("synthetic: the pre-training record is not used, %s; training the network "
                    "from scratch", mismatch)
    train = budget(store.splits["train"], names, config.max_train_user_weeks, config.seed)
    val = budget(store.splits["val"], names, config.max_val_user_weeks, config.seed + 1)
    specs = target_specs(train, val, names, config.min_known)
    reference_train = budget(train, names, config.reference_max_train_user_weeks, config.seed + 2)
    reference_config = model_config.model_copy(update={"recurrence": "none"})
    same_network = config.reference == "no_recurrence" and reference_config == model_config
    fit, reference = Fit({}, 0, frozenset()), {}
    if specs:
        fit = fit_network(store, train, val, specs, model_config, config)
        reference = (fit.predicted if same_network
                     else _fit_reference(store, reference_train, val, specs, model_config, config))
    users = _users(val)
    scores = [replace(score_target(name, train.labels[name], val.labels[name],
                                   fit.predicted.get(name), reference.get(name), config, users),
                      still_improving=name in fit.still_improving) for name in names]
    return SyntheticAudit(
        scores=scores, network=_network_name(model_config),
        reference=_reference_name(config, same_network),
        num_train_user_weeks=len(train), num_val_user_weeks=len(val), epochs_trained=fit.epochs,
        num_reference_user_weeks=None if same_network else len(reference_train),
        split_train_user_weeks=len(store.splits["train"]))


def record_mismatch(record: PretrainRecord, store: Store, names: list[str],
                    model_config: ModelConfig, config: SyntheticConfig) -> str | None:
    """Why training's record cannot stand for this audit's fit of the network (another
    architecture, other validation users, a target it did not train on), None when it can."""
    if record.model != model_config.model_dump(mode="json"):
        return "it was trained with another model configuration"
    val = store.splits["val"]
    if set(record.val_users) != set(val.rows.column("user_id").to_pylist()):
        return "its validation users are not this store's"
    for name in names:
        recorded = record.targets.get(name)
        known_train = int(np.sum(~np.isnan(store.splits["train"].labels[name])))
        if recorded is None and known_train >= config.min_known:
            return f"training did not learn target {name} (train.targets?)"
        if recorded is not None and recorded.n_val != int(np.sum(~np.isnan(val.labels[name]))):
            return f"its validation user-weeks of {name} are not this store's"
    return None


def _audit_from_record(store: Store, names: list[str], record: PretrainRecord,
                       config: SyntheticConfig, model_config: ModelConfig) -> SyntheticAudit:
    """The network's scores from training's record; the reference trained on at most
    `reference_max_train_user_weeks` and scored on the record's validation user-weeks (every
    one with a known target)."""
    val = budget(store.splits["val"], names, None, config.seed + 1)
    reference_train = budget(store.splits["train"], names, config.reference_max_train_user_weeks,
                             config.seed + 2)
    evaluable = [n for n in names if n in record.targets
                 and min(record.targets[n].n_train, record.targets[n].n_val) >= config.min_known]
    reference_config = model_config.model_copy(update={"recurrence": "none"})
    same_network = config.reference == "no_recurrence" and reference_config == model_config
    specs = target_specs(reference_train, val, evaluable, config.min_known)
    reference = ({} if same_network or not specs
                 else _fit_reference(store, reference_train, val, specs, model_config, config))
    users = _users(val)
    kept = known_rows(store.splits["val"], names)  # the record's rows that `val` keeps
    scores = []
    for name in names:
        recorded = record.targets.get(name)
        if recorded is None or name not in evaluable:
            known = store.splits["train"].labels[name]
            scores.append(TargetScore(name, None, None, None, int(np.sum(~np.isnan(known))),
                                      int(np.sum(~np.isnan(val.labels[name]))), learned=False))
            continue
        reference_r2 = (recorded.r2 if same_network
                        else r2_on_known(val.labels[name], reference.get(name)))
        score = score_recorded(name, recorded, reference_r2, config)
        if recorded.predicted is not None and len(recorded.predicted) == len(kept):
            predicted = np.array([np.nan if v is None else v for v in recorded.predicted])[kept]
            train_mean = _train_mean(store.splits["train"].labels[name])
            score = with_evidence(score, val.labels[name], predicted,
                                  predicted if same_network else reference.get(name),
                                  train_mean, users, config)
        scores.append(score)
    return SyntheticAudit(
        scores=scores, network=_network_name(model_config),
        reference=_reference_name(config, same_network),
        num_train_user_weeks=record.train_user_weeks, num_val_user_weeks=len(val),
        epochs_trained=record.epochs, pretrained=record.budget,
        num_reference_user_weeks=None if same_network else len(reference_train),
        split_train_user_weeks=len(store.splits["train"]))


def score_recorded(target: str, recorded: PretrainTarget, reference_r2: float | None,
                   config: SyntheticConfig = DEFAULT_CONFIG) -> TargetScore:
    """Score one target from training's record (R² of the network and of the train mean on
    every validation user-week with a known value) and the reference's R² on the same."""
    if (recorded.r2 is None or recorded.baseline_r2 is None
            or min(recorded.n_train, recorded.n_val) < config.min_known):
        return TargetScore(target, None, None, None, recorded.n_train, recorded.n_val, False)
    return TargetScore(target, recorded.r2, recorded.baseline_r2, reference_r2, recorded.n_train,
                       recorded.n_val,
                       learned=is_learned(recorded.r2, recorded.baseline_r2, reference_r2, config),
                       still_improving=recorded.still_improving)


def r2_on_known(y_val: np.ndarray, predicted: np.ndarray | None) -> float | None:
    """R² of `predicted` [n_val] where `y_val` [n_val] is known (NaN = unknown)."""
    if predicted is None:
        return None
    known = ~np.isnan(y_val)
    return float(r2_score(y_val[known], predicted[known]))


def _users(split: Split) -> np.ndarray:
    return np.asarray(split.rows.column("user_id").to_pylist(), dtype=object)


def _train_mean(y_train: np.ndarray) -> float:
    return float(np.mean(y_train[~np.isnan(y_train)]))


def _fit_reference(store: Store, train: Split, val: Split, specs: list[TaskSpec],
                   model_config: ModelConfig, config: SyntheticConfig) -> dict[str, np.ndarray]:
    """The memory-less reference's predictions on val [n_val] per target."""
    if config.reference == "linear":
        return fit_ridge(store, train, val, specs)
    reference_config = model_config.model_copy(update={"recurrence": "none"})
    return fit_network(store, train, val, specs, reference_config, config).predicted


def _network_name(model_config: ModelConfig) -> str:
    recurrence = model_config.recurrence if model_config.recurrent_layer else "no-recurrence"
    return f"{recurrence} network"


def _reference_name(config: SyntheticConfig, same_network: bool) -> str:
    return ({"no_recurrence": "no-recurrence network", "linear": "per-bin ridge"}[config.reference]
            + (" (= the network)" if same_network else ""))
