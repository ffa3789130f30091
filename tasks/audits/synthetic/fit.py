"""The fits of the synthetic-target audit: what is trained on the budget, and its predictions.

`target_names` checks the configured targets against the store; `budget` draws at most a limit
of a split's user-weeks that have a known target; `target_specs` makes one standardised
regression head per evaluable target. `fit_network` trains a network from fresh weights on all
heads jointly (early stopping on val, best epoch restored) and predicts val (`Fit`);
`fit_ridge` fits the per-bin ridge reference. Both predict in the target's own units.

The store reader, batch stream and compile step are the train stage's (tasks/shared/store.py,
tasks/train/loop.py), so that the audit sees the data exactly as training does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import keras
import numpy as np
from sklearn.linear_model import RidgeCV

from stethoscope.model.config import ModelConfig, TaskSpec
from stethoscope.model.deepheart import build_model, compile_model
from stethoscope.schemas.errors import UsageError
from stethoscope.tasks.audits.synthetic.config import SyntheticConfig
from stethoscope.tasks.shared.datasets import make_dataset, without_autotune
from stethoscope.tasks.shared.progress import epoch_logger
from stethoscope.tasks.shared.store import Split, Store

log = logging.getLogger("stethoscope.synthetic")


@dataclass(frozen=True)
class Fit:
    """What one network fit hands to the scoring."""

    predicted: dict[str, np.ndarray]  # target -> [n_val], in the target's units
    epochs: int  # epochs run
    still_improving: frozenset[str]  # targets whose val loss was lowest at the last epoch


def target_names(store: Store, config: SyntheticConfig) -> list[str]:
    available = store.stats.targets
    unknown = sorted(set(config.targets or ()) - set(available))
    if unknown:
        raise UsageError(f"synthetic: targets {unknown} are not in the sequence store (it holds "
                         f"{available}). Fix synthetic.targets or leave it empty for all.")
    return list(available if config.targets is None else config.targets)


def budget(split: Split, names: Sequence[str], limit: int | None, seed: int) -> Split:
    """At most `limit` rows of `split` with at least one known target, drawn with `seed`
    and kept in store order (sequential reads from the memory-mapped shards)."""
    at = np.flatnonzero(known_rows(split, names))
    if limit is not None and len(at) > limit:
        at = np.sort(np.random.default_rng(seed).choice(at, limit, replace=False))
    return replace(split, rows=split.rows.take(at), shard_ids=split.shard_ids[at],
                   shard_rows=split.shard_rows[at], metadata=split.metadata[at],
                   labels={name: y[at] for name, y in split.labels.items()})


def known_rows(split: Split, names: Sequence[str]) -> np.ndarray:
    """[n] bool: the rows of `split` with a known value of any of `names`."""
    known = np.zeros(len(split), bool)
    for name in names:
        known |= ~np.isnan(split.labels[name])
    return known


def target_specs(train: Split, val: Split, names: Sequence[str], min_known: int
                 ) -> list[TaskSpec]:
    """A regression head per evaluable target, standardised with the budget's train values."""
    specs = []
    for name in names:
        known = train.labels[name][~np.isnan(train.labels[name])]
        if min(len(known), int(np.sum(~np.isnan(val.labels[name])))) < min_known:
            log.warning("synthetic target %s: too few known values (train %d, val %d), not "
                        "evaluated", name, len(known), int(np.sum(~np.isnan(val.labels[name]))))
            continue
        std = float(np.std(known))
        specs.append(TaskSpec(name=name, kind="regression", offset=float(np.mean(known)),
                              scale=std if std > 1e-12 else 1.0))
    return specs


def fit_network(store: Store, train: Split, val: Split, specs: Sequence[TaskSpec],
                model_config: ModelConfig, config: SyntheticConfig) -> Fit:
    """Fresh weights, fit with early stopping on val (best epoch restored), predict val."""
    keras.utils.set_random_seed(config.seed)
    model = build_model(model_config, specs, seed=config.seed)
    compile_model(model, specs, config.learning_rate)
    use_metadata = model_config.num_metadata > 0
    train_data = without_autotune(make_dataset(
        store, train, specs, config.batch_size, use_metadata=use_metadata, seed=config.seed,
        epochs=range(config.epochs)))
    val_data = without_autotune(make_dataset(store, val, specs, config.batch_size,
                                              use_metadata=use_metadata))
    stop = keras.callbacks.EarlyStopping("val_loss", patience=config.patience,
                                         restore_best_weights=True)
    steps = math.ceil(len(train) / config.batch_size)
    progress = epoch_logger(log, f"synthetic: {model_config.recurrence} network", config.epochs,
                            steps)
    history = model.fit(train_data, validation_data=val_data, epochs=config.epochs,
                        steps_per_epoch=steps, callbacks=[stop, progress], shuffle=False,
                        verbose=0).history
    outputs = model.predict(val_data, verbose=0)  # {head: [n_val, 1]}
    predicted = {s.name: outputs[s.head][:, 0] for s in specs}
    diverged = [s for s in specs if not np.all(np.isfinite(predicted[s.name]))]
    if diverged:  # a network that diverged predicts nothing: score it as the train mean
        log.warning("synthetic: the %s network diverged on %s (non-finite predictions); lower "
                    "synthetic.learning_rate", model_config.recurrence, [s.name for s in diverged])
        predicted.update({s.name: np.full(len(val), s.offset) for s in diverged})
    epochs = len(history["val_loss"])
    log.info("%s: %d epochs, best val_loss %.4f", model_config.recurrence, epochs,
             min(history["val_loss"]))
    # a single head may be logged as the total loss only
    still_improving = frozenset(
        s.name for s in specs
        if int(np.argmin(history.get(f"val_{s.head}_loss", history["val_loss"]))) == epochs - 1)
    return Fit(predicted, epochs, still_improving)


def fit_ridge(store: Store, train: Split, val: Split, specs: Sequence[TaskSpec]
              ) -> dict[str, np.ndarray]:
    """Ridge regression on the flattened sequence [T x C], per target on its known rows."""
    x_train = store.read(train.shard_ids, train.shard_rows).reshape(len(train), -1)
    x_val = store.read(val.shard_ids, val.shard_rows).reshape(len(val), -1)
    predicted = {}
    for spec in specs:
        y = train.labels[spec.name]
        known = ~np.isnan(y)
        ridge = RidgeCV(alphas=np.logspace(-2, 4, 7)).fit(x_train[known], y[known])
        predicted[spec.name] = ridge.predict(x_val)
    return predicted
