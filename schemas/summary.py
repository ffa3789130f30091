"""The `summary.json` model: the machine contract of a run (docs/architecture.md §5.2).

Every stage fills its own section with the records below; sections of stages that did not run
are present and empty. `status` is derived from the findings: `fail` when any finding is an
error, `warn` when any is a warning, else `pass`. The JSON schema is exported next to this
module as `summary.schema.json` (`python -m stethoscope.schemas.summary` rewrites it).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stethoscope.schemas.findings import FindingCode

SCHEMA_VERSION = "1.4"  # 1.1: counts, AUPRC, Brier, ECE, operating points, interval method;
# 1.2: flow, comparison (the nightly gate against a reference run); 1.3: activations.semantic;
# 1.4: synthetic r2_ci, n_val, n_val_users, not_learned_shown
SCHEMA_FILE = Path(__file__).with_name("summary.schema.json")

Severity = Literal["info", "warning", "error"]
Status = Literal["pass", "warn", "fail"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Finding(_Record):
    """One thing an audit found. `code` is a stable upper-case identifier (DEAD_UNITS, ...)."""

    # `code` must be registered in schemas/findings.py (checked below).

    stage: str
    severity: Severity
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    message: str
    recommendation: str

    @field_validator("code")
    @classmethod
    def _registered(cls, code: str) -> str:
        if code not in FindingCode.__members__:
            raise ValueError(f"finding code {code!r} is not in schemas/findings.py; register it "
                             "there (FindingCode and REGISTRY) before a stage raises it")
        return str(code)


class DataSection(_Record):
    rows_in: int = 0
    rows_clean: int = 0
    rows_quarantined: int = 0
    users: int = 0
    user_weeks: int = 0


class LayerActivations(_Record):
    name: str
    units: int
    dead_units: list[int]
    dead_fraction: float
    constant_units: list[int]
    saturated_fraction: float


class SemanticUnit(_Record):
    """A unit whose activation tracks a state of the input or the calendar over time: Pearson r
    over (user-week, time) positions, its interval (jackknife over user-weeks; None when
    degenerate) and n, the user-weeks it was computed on."""

    layer: str
    unit: int
    state: Literal["night", "activity", "hr_missing", "elevated_hr", "after_activity"]
    r: float
    r_ci: tuple[float, float] | None = None
    n: int


class ActivationsSection(_Record):
    layers: list[LayerActivations] = Field(default_factory=list)
    semantic: list[SemanticUnit] = Field(default_factory=list)  # |r| >= the threshold, by |r|


class GradientsSection(_Record):
    output_layer: str | None = None
    task: str | None = None
    timestep: int | None = None
    horizon_steps_back: int | None = None
    horizon_steps_forward: int | None = None
    horizon_hours: float | None = None
    profile_file: str | None = None


class SyntheticResult(_Record):
    """One synthetic target's verdict. `r2_ci`: BCa interval over user-level resamples of the
    validation user-weeks (None: undefined or not computed); `not_learned_shown`: not learned
    and an interval excludes passing the failed rule (None: not evaluated)."""

    target: str
    r2: float | None
    baseline_r2: float | None
    learned: bool
    r2_ci: tuple[float, float] | None = None
    n_val: int | None = None
    n_val_users: int | None = None
    not_learned_shown: bool | None = None


Interval = tuple[float, float]


class OperatingPoint(_Record):
    """Sensitivity, specificity and PPV (and NPV) of user-weeks called positive at
    score >= threshold; the threshold is chosen on the same rows."""

    point: str  # "decision", "sensitivity 0.90", "specificity 0.90", "score 0.50"
    threshold: float
    tp: int
    fp: int
    fn: int
    tn: int
    sensitivity: float | None
    sensitivity_ci: Interval | None = None
    specificity: float | None
    specificity_ci: Interval | None = None
    ppv: float | None
    ppv_ci: Interval | None = None


class TaskMetrics(_Record):
    """One task's metrics on its evaluation rows (user-weeks). Every interval is of the kind
    `PredictionsSection.interval_method` names, and None where that is degenerate."""

    task: str
    n: int  # user-weeks
    auroc: float | None
    auroc_ci: Interval | None
    baseline_auroc: float | None
    corr_with_baseline: float | None
    n_positives: int | None = None  # user-weeks with y_true = 1
    n_users: int | None = None
    auprc: float | None = None
    auprc_ci: Interval | None = None
    brier: float | None = None
    ece: float | None = None  # expected calibration error over equal-count score bins
    ece_ci: Interval | None = None
    baseline_auroc_ci: Interval | None = None
    gain_vs_baseline: float | None = None  # network AUROC minus the baseline's, paired
    gain_ci: Interval | None = None
    operating_points: list[OperatingPoint] = Field(default_factory=list)


class StratumMetrics(_Record):
    column: str
    value: str
    task: str
    n: int
    auroc: float | None
    auroc_ci: Interval | None
    delta_vs_rest: float | None
    p_value: float | None
    flagged: bool
    n_positives: int | None = None
    n_users: int | None = None
    delta_ci: Interval | None = None


class TopLoss(_Record):
    user_id: str
    week_start: date | None  # None when the predictions table has no week_start
    task: str
    y_true: int
    y_score: float
    kind: Literal["FP", "FN"]


class PredictionsSection(_Record):
    tasks: list[TaskMetrics] = Field(default_factory=list)
    strata: list[StratumMetrics] = Field(default_factory=list)
    top_losses: list[TopLoss] = Field(default_factory=list)
    interval_method: str | None = None  # how every interval above was computed


class ReferenceRun(_Record):
    """The run this one is compared with, and why that one (docs/architecture.md §7.5)."""

    run_id: str
    path: str
    chosen: Literal["pinned", "blessed", "last_good"]
    status: Status | None = None
    finished_at: datetime | None = None


class MetricChange(_Record):
    """One measure of the model, tonight against the reference run.

    `delta` is current - reference (for AUROC, AUPRC, R²: negative is worse; for dead and
    constant shares: positive is worse; for the horizon: negative is worse). `verdict`:
    `regression` when the interval excludes no change and the worsening exceeds `tolerance`,
    `regression_point` when only the point estimate does (no interval, or one that includes
    zero), `improved` or `same` otherwise, `not_comparable` when either run lacks it."""

    measure: str  # auroc, auprc, synthetic_r2, dead_fraction, constant_fraction, horizon_hours, flagged_stratum
    subject: str  # the task, target, layer or stratum
    reference: float | None
    current: float | None
    delta: float | None
    delta_ci: Interval | None = None
    paired: bool | None = None  # AUROC/AUPRC: the same user-weeks scored in both runs
    n_users: int | None = None
    tolerance: float | None = None
    verdict: Literal["regression", "regression_point", "improved", "same", "not_comparable"]
    detail: str = ""


class DriftEntry(_Record):
    """One distribution of the data, tonight's cohort against the reference run's."""

    kind: Literal["feature", "device_mix", "quarantine"]
    name: str  # feature, "device mix" or validation rule
    stratum: str
    n_reference: int
    n_current: int
    reference_value: float | None = None  # mean (feature) or rate (quarantine)
    current_value: float | None = None
    shift: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    effect: float | None = None
    effect_name: str = ""
    psi: float | None = None
    drifted: bool = False
    note: str = ""


class ComparisonSection(_Record):
    """The nightly gate: this run against its reference (empty without one)."""

    reference: ReferenceRun | None = None
    note: str | None = None  # why there is no comparison, when there is none
    changes: list[MetricChange] = Field(default_factory=list)
    drift: list[DriftEntry] = Field(default_factory=list)
    interval_method: str | None = None


class Summary(BaseModel):
    """The whole summary.json. Stages add extra detail in their own files, not here."""

    model_config = ConfigDict(extra="forbid")

    schema_version: str = SCHEMA_VERSION
    run_id: str
    flow: str | None = None  # the Prefect flow's name, e.g. nightly-model-audit
    status: Status
    started_at: datetime
    finished_at: datetime
    config: dict[str, Any]
    data: DataSection = Field(default_factory=DataSection)
    findings: list[Finding] = Field(default_factory=list)
    activations: ActivationsSection = Field(default_factory=ActivationsSection)
    gradients: GradientsSection = Field(default_factory=GradientsSection)
    synthetic: list[SyntheticResult] = Field(default_factory=list)
    predictions: PredictionsSection = Field(default_factory=PredictionsSection)
    comparison: ComparisonSection = Field(default_factory=ComparisonSection)


def status_of(findings: list[Finding]) -> Status:
    severities = {f.severity for f in findings}
    if "error" in severities:
        return "fail"
    return "warn" if "warning" in severities else "pass"


def export_json_schema(path: Path = SCHEMA_FILE) -> Path:
    path.write_text(json.dumps(Summary.model_json_schema(), indent=2) + "\n")
    return path


if __name__ == "__main__":
    print(export_json_schema())
