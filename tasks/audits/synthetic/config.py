"""Configuration and result records of the synthetic audit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from stethoscope.schemas.config import StageConfig
from stethoscope.schemas.outcome import Figure, StageOutcome
from stethoscope.schemas.summary import Finding, SyntheticResult

TABLE_FILE = "learnability.parquet"
PLOT_FILE = "learnability.png"


UNNAMED_PREREQUISITE = "an unnamed prerequisite"


Reference = Literal["no_recurrence", "linear"]

# what each target of tasks/labels/user_weeks.py stands for; reads after "a target that needs ..."
PREREQUISITES: dict[str, str] = {
    "hr_std_day_minus_night": "telling day from night over several days",
    "mean_daily_steps": "summing over the whole week (a sanity check)",
    "resting_heart_rate": "short-range context (about 10 minutes without steps)",
    "hr_recovery_minutes": "context of minutes to hours (heart-rate recovery after activity)",
    "night_resting_hr_change": "memory across days (weekend vs early-week nights)",
}


LEARNABILITY_SCHEMA = pa.schema(
    [
        pa.field("target", pa.string(), nullable=False),
        pa.field("prerequisite", pa.string(), nullable=False),
        pa.field("r2", pa.float64()),
        pa.field("r2_ci_low", pa.float64()),
        pa.field("r2_ci_high", pa.float64()),
        pa.field("baseline_r2", pa.float64()),
        pa.field("reference_r2", pa.float64()),
        pa.field("n_train", pa.int64(), nullable=False),
        pa.field("n_val", pa.int64(), nullable=False),
        pa.field("n_val_users", pa.int64()),
        pa.field("learned", pa.bool_(), nullable=False),
        # not learned, and the interval of a failed rule excludes passing it (evidence.py)
        pa.field("not_learned_shown", pa.bool_(), nullable=False),
        pa.field("still_improving", pa.bool_(), nullable=False),
        pa.field("reference", pa.string(), nullable=False),
    ]
)


class SyntheticConfig(StageConfig):
    """Budget and verdict of the learnability audit. Defaults: 8 epochs on at most 512 train
    and 256 validation user-weeks (the reference on at most 128), R^2 >= 0.5 against a
    no-recurrence reference."""

    targets: tuple[str, ...] | None = Field(None, description="None = every target of the store")
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    patience: int = Field(3, ge=1, description="epochs without a better val loss before stopping")
    r2_threshold: float = Field(0.5, le=1.0, description="learned needs R^2 at least this")
    reference: Reference = "no_recurrence"
    reference_margin: float = Field(0.05, ge=0, description="learned: R^2 >= reference - this")
    max_train_user_weeks: int | None = Field(512, ge=1, description="None = the whole split")
    reference_max_train_user_weeks: int | None = Field(
        128, ge=1, description="train user-weeks of the reference at most (None = as many as "
        "the network's): a smaller sample costs less and makes its R² a little pessimistic")
    max_val_user_weeks: int | None = Field(256, ge=1, description="None = the whole split")
    min_known: int = Field(10, ge=2, description="fewer known values in a split -> not evaluated")
    num_bootstrap: int = Field(1000, ge=100, description="user-level resamples per interval")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="intervals at level 1 - alpha")
    seed: int = 0


DEFAULT_CONFIG = SyntheticConfig()


@dataclass(frozen=True)
class R2Evidence:
    """Intervals (level 1 - alpha) of the network's R², of its gain over the train mean's R²
    and of its gap to the reference's R² (None: undefined, or no reference); evidence.py."""

    r2_ci: tuple[float, float] | None
    baseline_gap_ci: tuple[float, float] | None  # R² - train mean's R²
    reference_gap_ci: tuple[float, float] | None  # R² - reference's R²
    n_users: int


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
    evidence: R2Evidence | None = None  # intervals of the rules (evidence.py); None = none
    shown: tuple[str, ...] = ()  # failed rules whose interval excludes passing them

    @property
    def prerequisite(self) -> str:
        return prerequisite_of(self.target)

    @property
    def evaluated(self) -> bool:
        return self.r2 is not None

    @property
    def shown_not_learned(self) -> bool:
        """Not learned, and the data show it (an interval excludes passing a failed rule)."""
        return not self.learned and bool(self.shown)

    @property
    def r2_ci(self) -> tuple[float, float] | None:
        return None if self.evidence is None else self.evidence.r2_ci

    def result(self) -> SyntheticResult:
        return SyntheticResult(
            target=self.target, r2=self.r2, baseline_r2=self.baseline_r2, learned=self.learned,
            r2_ci=self.r2_ci, n_val=self.n_val,
            n_val_users=None if self.evidence is None else self.evidence.n_users,
            not_learned_shown=self.shown_not_learned if self.evaluated else None)


@dataclass(frozen=True)
class SyntheticAudit:
    """Every target's score and what was fitted to get it."""

    scores: list[TargetScore]
    network: str  # e.g. "bilstm network"
    reference: str  # e.g. "no-recurrence network", "per-bin ridge"
    num_train_user_weeks: int
    num_val_user_weeks: int
    epochs_trained: int  # of the configured network; 0 when nothing was evaluable
    num_reference_user_weeks: int | None = None  # train user-weeks of the reference; None = same
    # where the network's scores come from, when not from a fit of the audit's own: e.g.
    # "pre-training: 5 epochs on 92 user-weeks" (then the budget to raise is train's)
    pretrained: str | None = None
    split_train_user_weeks: int | None = None  # the store's whole train split; None = unknown

    @property
    def epochs_setting(self) -> str:
        """The setting that bounds the network's epochs."""
        return "train.pretrain_epochs" if self.pretrained else "synthetic.epochs"

    @property
    def more_data(self) -> str:
        """How to give the network more train user-weeks: raise the budget while the split has
        more than the audit used, else the cohort itself is the limit."""
        split = self.split_train_user_weeks
        if split is None and not self.pretrained:
            return "synthetic.max_train_user_weeks"
        if split is not None and not self.pretrained and split > self.num_train_user_weeks:
            return (f"synthetic.max_train_user_weeks (it used {self.num_train_user_weeks} of the "
                    f"train split's {split})")
        return (f"the cohort (its train split has {split or self.num_train_user_weeks} "
                "user-weeks, all of them used: add users or weeks)")


class PretrainTarget(BaseModel):
    """One target's score in the pre-training record."""

    model_config = ConfigDict(frozen=True)

    r2: float | None
    baseline_r2: float | None
    n_train: int
    n_val: int
    still_improving: bool
    # the network's prediction for every validation row of the store in store order (None
    # where the target is unknown): the audit's intervals resample them by user; records
    # written before it existed have none, and their verdicts get no interval
    predicted: list[float | None] | None = None


class PretrainRecord(BaseModel):
    """`model/pretrain_r2.json`, written by training after its phase on the synthetic targets
    (docs/architecture.md §4.10): the configured network's R² per target on every validation
    user-week with a known value, and the budget that got it."""

    model_config = ConfigDict(frozen=True)

    phase: str  # "pretrain" or "synthetic"
    model: dict[str, Any]  # the ModelConfig trained (JSON dump)
    epochs: int  # epochs run in the phase
    best_epoch: int  # the phase's epoch whose weights were scored (1 = its first)
    max_epochs: int
    train_user_weeks: int
    val_user_weeks: int
    val_users: list[str]
    targets: dict[str, PretrainTarget]

    @property
    def budget(self) -> str:
        return (f"{'pre-training' if self.phase == 'pretrain' else 'training'}: "
                f"{self.epochs} epochs on {self.train_user_weeks} user-weeks")


class SyntheticAuditResult(BaseModel):
    """The task's small record: the summary.json section, findings and the files written."""

    model_config = ConfigDict(frozen=True)

    results: list[SyntheticResult]
    findings: list[Finding]
    table_file: Path
    plot_file: Path
    note: str

    def outcome(self) -> StageOutcome:
        figures = [Figure("synthetic", "Synthetic-target learnability", self.plot_file,
                          "R² per target on validation user-weeks: the network, the memory-less "
                          "reference and the train mean; dashed: the threshold")]
        return StageOutcome(stage="synthetic", findings=list(self.findings), figures=figures,
                            synthetic=list(self.results), notes=[self.note])



def prerequisite_of(target: str) -> str:
    """What `target` stands for (PREREQUISITES), `an unnamed prerequisite` when unknown."""
    return PREREQUISITES.get(target, UNNAMED_PREREQUISITE)
