"""The synthetic-target audit: can the configured architecture learn each synthetic target at
all (DESIGN section 1.1)? A target stands for a prerequisite of the real conditions (telling day
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

The parts live in private modules: the budget and the fits in `tasks/_synthetic_fit.py`, the
text of the findings in `tasks/_synthetic_findings.py`, the bar plot in `tasks/_synthetic_plot.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import matplotlib
import numpy as np
import pyarrow as pa
from prefect import task
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import r2_score

from model.deepheart import ModelConfig
from schemas.config import StageConfig
from schemas.summary import Finding, SyntheticResult
from tasks._synthetic_findings import SANITY_TARGET, STAGE, target_finding
from tasks._synthetic_fit import Fit, budget, fit_network, fit_ridge, target_names, target_specs
from tasks._synthetic_plot import plot_learnability
from tasks._train_data import open_store
from tasks.io import atomic_path, write_parquet_atomic

__all__ = [  # the stage's interface; the names from private modules are re-exported here
    "DEFAULT_CONFIG", "LEARNABILITY_SCHEMA", "PLOT_FILE", "PREREQUISITES", "SANITY_TARGET",
    "STAGE", "TABLE_FILE", "UNNAMED_PREREQUISITE", "Reference", "SyntheticAudit",
    "SyntheticAuditResult", "SyntheticConfig", "TargetScore", "audit_synthetic", "is_learned",
    "learnability_table", "plot_learnability", "prerequisite_of", "score_target",
    "synthetic_findings", "synthetic_task",
]

matplotlib.use("Agg")
TABLE_FILE = "learnability.parquet"
PLOT_FILE = "learnability.png"
Reference = Literal["no_recurrence", "linear"]

# what each target of tasks/labels.py stands for; reads after "a target that needs ..."
PREREQUISITES: dict[str, str] = {
    "hr_std_day_minus_night": "telling day from night over several days",
    "mean_daily_steps": "summing over the whole week (a sanity check)",
    "resting_heart_rate": "short-range context (about 10 minutes without steps)",
    "hr_recovery_minutes": "context of minutes to hours (heart-rate recovery after activity)",
    "night_resting_hr_change": "memory across days (weekend vs early-week nights)",
}
UNNAMED_PREREQUISITE = "an unnamed prerequisite"

LEARNABILITY_SCHEMA = pa.schema(
    [
        pa.field("target", pa.string(), nullable=False),
        pa.field("prerequisite", pa.string(), nullable=False),
        pa.field("r2", pa.float64()),
        pa.field("baseline_r2", pa.float64()),
        pa.field("reference_r2", pa.float64()),
        pa.field("n_train", pa.int64(), nullable=False),
        pa.field("n_val", pa.int64(), nullable=False),
        pa.field("learned", pa.bool_(), nullable=False),
        pa.field("still_improving", pa.bool_(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
    ]
)


class SyntheticConfig(StageConfig):
    """Budget and verdict of the learnability audit. Defaults: 8 epochs on at most 512 train
    and 256 validation user-weeks, R^2 >= 0.5 against a no-recurrence reference."""

    targets: tuple[str, ...] | None = Field(None, description="None = every target of the store")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(3, ge=1, description="epochs without a better val loss before stopping")
    r2_threshold: float = Field(0.5, le=1.0, description="learned needs R^2 at least this")
    reference: Reference = "no_recurrence"
    reference_margin: float = Field(0.05, ge=0, description="learned: R^2 >= reference - this")
    max_train_user_weeks: int | None = Field(512, ge=1, description="None = the whole split")
    max_val_user_weeks: int | None = Field(256, ge=1, description="None = the whole split")
    min_known: int = Field(10, ge=2, description="fewer known values in a split -> not evaluated")
    seed: int = 0


DEFAULT_CONFIG = SyntheticConfig()


@dataclass(frozen=True)
class TargetScore:
    """One target's verdict: R^2 of the network, the train mean and the reference on val."""

    target: str
    r2: float | None
    baseline_r2: float | None
    reference_r2: float | None
    n_train: int
    n_val: int
    learned: bool
    still_improving: bool = False  # the network's val loss on it fell until the last epoch

    @property
    def prerequisite(self) -> str:
        return prerequisite_of(self.target)

    @property
    def evaluated(self) -> bool:
        return self.r2 is not None

    def result(self) -> SyntheticResult:
        return SyntheticResult(target=self.target, r2=self.r2, baseline_r2=self.baseline_r2,
                               learned=self.learned)


@dataclass(frozen=True)
class SyntheticAudit:
    """Every target's score and what was fitted to get it."""

    scores: list[TargetScore]
    network: str  # e.g. "bilstm network"
    reference: str  # e.g. "no-recurrence network", "per-bin ridge"
    num_train_user_weeks: int
    num_val_user_weeks: int
    epochs_trained: int  # of the configured network; 0 when nothing was evaluable


class SyntheticAuditResult(BaseModel):
    """The task's small record: the summary.json section, findings and the files written."""

    model_config = ConfigDict(frozen=True)

    results: list[SyntheticResult]
    findings: list[Finding]
    table_file: Path
    plot_file: Path
    note: str


# --- pure functions ------------------------------------------------------------------------


def prerequisite_of(target: str) -> str:
    """What `target` stands for (PREREQUISITES), `an unnamed prerequisite` when unknown."""
    return PREREQUISITES.get(target, UNNAMED_PREREQUISITE)


def score_target(
    target: str,
    y_train: np.ndarray,
    y_val: np.ndarray,
    predicted: np.ndarray | None,
    reference: np.ndarray | None,
    config: SyntheticConfig = DEFAULT_CONFIG,
) -> TargetScore:
    """Score one target. `y_train` [n_train] and `y_val` [n_val] hold NaN where unknown;
    `predicted` and `reference` are [n_val] predictions in the target's units (None: the
    target was not fitted)."""
    train_known = y_train[~np.isnan(y_train)]
    val_known = ~np.isnan(y_val)
    n_train, n_val = len(train_known), int(val_known.sum())
    if predicted is None or min(n_train, n_val) < config.min_known:
        return TargetScore(target, None, None, None, n_train, n_val, learned=False)
    truth = y_val[val_known]
    r2 = float(r2_score(truth, predicted[val_known]))
    baseline = float(r2_score(truth, np.full(n_val, train_known.mean())))
    reference_r2 = None if reference is None else float(r2_score(truth, reference[val_known]))
    return TargetScore(target, r2, baseline, reference_r2, n_train, n_val,
                       learned=is_learned(r2, baseline, reference_r2, config))


def is_learned(r2: float, baseline_r2: float, reference_r2: float | None,
               config: SyntheticConfig = DEFAULT_CONFIG) -> bool:
    """R^2 passes the threshold, beats the train mean, and is not clearly below the reference."""
    beats_reference = reference_r2 is None or r2 >= reference_r2 - config.reference_margin
    return r2 >= config.r2_threshold and r2 > baseline_r2 and beats_reference


def synthetic_findings(audit: SyntheticAudit, config: SyntheticConfig = DEFAULT_CONFIG
                       ) -> list[Finding]:
    """SYNTHETIC_NOT_LEARNED per evaluated target that was not learned, naming its
    prerequisite; SYNTHETIC_NOT_EVALUATED (info) per target with too few known values.

    When the sanity target (SANITY_TARGET) is evaluated and not learned, its finding says so and
    the other not-learned targets are reported as inconclusive (info), not as limits of the
    architecture."""
    sanity_failed = any(s.target == SANITY_TARGET and s.evaluated and not s.learned
                        for s in audit.scores)
    findings = (target_finding(s, audit, config, sanity_failed) for s in audit.scores)
    return [f for f in findings if f is not None]


def learnability_table(audit: SyntheticAudit) -> pa.Table:
    """One row per target (LEARNABILITY_SCHEMA)."""
    rows = [{"target": s.target, "prerequisite": s.prerequisite, "r2": s.r2,
             "baseline_r2": s.baseline_r2, "reference_r2": s.reference_r2,
             "n_train": s.n_train, "n_val": s.n_val, "learned": s.learned,
             "still_improving": s.still_improving, "reference": audit.reference}
            for s in audit.scores]
    return pa.Table.from_pylist(rows, schema=LEARNABILITY_SCHEMA)


# --- the core ------------------------------------------------------------------------------


def audit_synthetic(store_dir: Path, config: SyntheticConfig, model_config: ModelConfig
                    ) -> SyntheticAudit:
    """Train the configured network and the reference on the store's budgeted sample and score
    every target on the validation user-weeks."""
    store = open_store(Path(store_dir), model_config)
    names = target_names(store, config)
    train = budget(store.splits["train"], names, config.max_train_user_weeks, config.seed)
    val = budget(store.splits["val"], names, config.max_val_user_weeks, config.seed + 1)
    specs = target_specs(train, val, names, config.min_known)
    reference_config = model_config.model_copy(update={"recurrence": "none"})
    same_network = config.reference == "no_recurrence" and reference_config == model_config
    fit, reference = Fit({}, 0, frozenset()), {}
    if specs:
        fit = fit_network(store, train, val, specs, model_config, config)
        if same_network:
            reference = fit.predicted
        elif config.reference == "no_recurrence":
            reference = fit_network(store, train, val, specs, reference_config, config).predicted
        else:
            reference = fit_ridge(store, train, val, specs)
    scores = [replace(score_target(name, train.labels[name], val.labels[name],
                                   fit.predicted.get(name), reference.get(name), config),
                      still_improving=name in fit.still_improving) for name in names]
    network = f"{model_config.recurrence if model_config.recurrent_layer else 'no-recurrence'} "
    return SyntheticAudit(
        scores=scores, network=network + "network",
        reference={"no_recurrence": "no-recurrence network", "linear": "per-bin ridge"}[
            config.reference] + (" (= the network)" if same_network else ""),
        num_train_user_weeks=len(train), num_val_user_weeks=len(val), epochs_trained=fit.epochs)


# --- Prefect shell -------------------------------------------------------------------------


def _publish(audit: SyntheticAudit) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:  # called outside a Prefect run (tests, notebooks)
        return
    create_table_artifact(
        key="synthetic-learnability",
        table=learnability_table(audit).to_pylist(),
        description=f"R^2 on validation per synthetic target: {audit.network} vs "
        f"{audit.reference} vs the train mean",
    )


@task(name="synthetic")
def synthetic_task(store_dir: Path, out_dir: Path, config: SyntheticConfig,
                   model_config: ModelConfig) -> SyntheticAuditResult:
    """Prefect shell: audit the targets of the store, write the table and the bar plot under
    `out_dir`, publish a table artifact, return the record."""
    audit = audit_synthetic(store_dir, config, model_config)
    out_dir = Path(out_dir)
    table_file = write_parquet_atomic(learnability_table(audit), out_dir / TABLE_FILE)
    with atomic_path(out_dir / PLOT_FILE) as tmp:
        plot_learnability(audit, config.r2_threshold).savefig(tmp, format="png", dpi=90)
    _publish(audit)
    note = (f"{audit.network} and {audit.reference} fitted on {audit.num_train_user_weeks} "
            f"train / {audit.num_val_user_weeks} validation user-weeks "
            f"({audit.epochs_trained} of at most {config.epochs} epochs)")
    return SyntheticAuditResult(results=[s.result() for s in audit.scores],
                                findings=synthetic_findings(audit, config),
                                table_file=table_file, plot_file=out_dir / PLOT_FILE, note=note)
