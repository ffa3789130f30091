"""Every finding code stethoscope raises, in one registry.

A code is a stable upper-case identifier: dashboards, automations and the history table key on
it, so a code is never renamed, only added. `Finding.code` (schemas/summary.py) accepts only the
codes below; a stage names its codes through `FindingCode`, never as a string literal. The
registry also says which stage raises each code and what it means, for the report and the docs
(docs/architecture.md, "Findings").
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class FindingCode(StrEnum):
    # validate
    FILES_SET_ASIDE = "FILES_SET_ASIDE"
    ROWS_QUARANTINED = "ROWS_QUARANTINED"
    UNKNOWN_DEVICES = "UNKNOWN_DEVICES"
    EXPECTATIONS_FAILED = "EXPECTATIONS_FAILED"
    USERS_SET_ASIDE = "USERS_SET_ASIDE"
    # synthetic audit
    SYNTHETIC_NOT_LEARNED = "SYNTHETIC_NOT_LEARNED"
    SYNTHETIC_NOT_EVALUATED = "SYNTHETIC_NOT_EVALUATED"
    SYNTHETIC_INCONCLUSIVE = "SYNTHETIC_INCONCLUSIVE"
    # activation audit
    DEAD_UNITS = "DEAD_UNITS"
    CONSTANT_UNITS = "CONSTANT_UNITS"
    SATURATED_UNITS = "SATURATED_UNITS"
    # gradient audit
    SHORT_MEMORY = "SHORT_MEMORY"
    VANISHING_GRADIENTS = "VANISHING_GRADIENTS"
    EXPLODING_GRADIENTS = "EXPLODING_GRADIENTS"
    GRADIENTS_NOT_EVALUATED = "GRADIENTS_NOT_EVALUATED"
    # analyze
    NO_PREDICTIONS = "NO_PREDICTIONS"
    TASK_NOT_EVALUABLE = "TASK_NOT_EVALUABLE"
    BASELINE_UNAVAILABLE = "BASELINE_UNAVAILABLE"
    BASELINE_NO_METADATA = "BASELINE_NO_METADATA"
    METADATA_DOMINATED = "METADATA_DOMINATED"
    WEAK_STRATUM = "WEAK_STRATUM"
    UNDERPOWERED_STRATUM = "UNDERPOWERED_STRATUM"
    LOSS_PATTERN = "LOSS_PATTERN"
    UNDERPOWERED = "UNDERPOWERED"
    BASELINE_AT_CHANCE = "BASELINE_AT_CHANCE"
    # gate
    REGRESSION = "REGRESSION"
    DATA_DRIFT = "DATA_DRIFT"
    NO_REFERENCE = "NO_REFERENCE"


class CodeInfo(NamedTuple):
    stage: str
    meaning: str


REGISTRY: dict[FindingCode, CodeInfo] = {
    FindingCode.FILES_SET_ASIDE: CodeInfo(
        "validate", "sensor-log files that could not be read or break the schema, set aside whole"),
    FindingCode.ROWS_QUARANTINED: CodeInfo(
        "validate", "rows that broke a row rule, kept in validation/quarantine/ with the rule"),
    FindingCode.UNKNOWN_DEVICES: CodeInfo(
        "validate", "device keys missing from the device catalog (stratum `unknown`)"),
    FindingCode.EXPECTATIONS_FAILED: CodeInfo(
        "validate", "the great-expectations suite failed on the sample"),
    FindingCode.USERS_SET_ASIDE: CodeInfo(
        "validate", "users whose row of users.parquet breaks a rule (unknown time zone, repeated "
                    "id, ...), set aside with their sensor rows (rule `bad_user_metadata`)"),
    FindingCode.SYNTHETIC_NOT_LEARNED: CodeInfo(
        "synthetic", "the network does not learn a synthetic target within the budget"),
    FindingCode.SYNTHETIC_NOT_EVALUATED: CodeInfo(
        "synthetic", "too few user-weeks to fit or score a synthetic target"),
    FindingCode.SYNTHETIC_INCONCLUSIVE: CodeInfo(
        "synthetic", "a target's R² misses a rule of `learned`, but its interval reaches past "
        "the rule: the validation data cannot tell, with the interval's width"),
    FindingCode.DEAD_UNITS: CodeInfo(
        "activations", "units that output zero for every input of the sample"),
    FindingCode.CONSTANT_UNITS: CodeInfo(
        "activations", "units whose output does not change over time or inputs (bias only)"),
    FindingCode.SATURATED_UNITS: CodeInfo(
        "activations", "tanh/sigmoid units stuck at the ends of their range"),
    FindingCode.SHORT_MEMORY: CodeInfo(
        "gradients", "the input-gradient horizon is shorter than the context the task needs"),
    FindingCode.VANISHING_GRADIENTS: CodeInfo(
        "gradients", "per-layer gradient norms shrink by orders of magnitude towards the input"),
    FindingCode.EXPLODING_GRADIENTS: CodeInfo(
        "gradients", "per-layer gradient norms grow by orders of magnitude towards the input"),
    FindingCode.GRADIENTS_NOT_EVALUATED: CodeInfo(
        "gradients", "the model has no per-step output, so no input-gradient horizon"),
    FindingCode.NO_PREDICTIONS: CodeInfo(
        "analyze", "the predictions table holds no rows to analyse"),
    FindingCode.TASK_NOT_EVALUABLE: CodeInfo(
        "analyze", "a task with too few positives or negatives for an AUROC"),
    FindingCode.BASELINE_UNAVAILABLE: CodeInfo(
        "analyze", "the metadata-only baseline could not be fitted"),
    FindingCode.BASELINE_NO_METADATA: CodeInfo(
        "analyze", "the predictions table has no age or sex: the metadata baseline was not fitted"),
    FindingCode.METADATA_DOMINATED: CodeInfo(
        "analyze", "the network adds little over a logistic regression on age and sex"),
    FindingCode.WEAK_STRATUM: CodeInfo(
        "analyze", "a stratum (e.g. a device generation) where the network is worse"),
    FindingCode.UNDERPOWERED_STRATUM: CodeInfo(
        "analyze", "strata too small to tell a difference, with the effect they could see"),
    FindingCode.LOSS_PATTERN: CodeInfo(
        "analyze", "a value that is over-represented among the worst losses"),
    FindingCode.UNDERPOWERED: CodeInfo(
        "analyze", "a task whose data cannot tell (no interval for its AUROC, or whether it "
        "beats the metadata baseline), with the effect it could have detected"),
    FindingCode.BASELINE_AT_CHANCE: CodeInfo(
        "analyze", "the metadata baseline is at or below chance: no yardstick for the network"),
    FindingCode.REGRESSION: CodeInfo(
        "gate", "the model is worse than in the reference run (AUROC, AUPRC, synthetic R², dead "
        "or constant units, gradient horizon, a newly flagged stratum)"),
    FindingCode.DATA_DRIFT: CodeInfo(
        "gate", "the cohort's data moved against the reference run's, significantly and by more "
        "than the threshold (a feature in a device generation, the device mix, a quarantine rate)"),
    FindingCode.NO_REFERENCE: CodeInfo(
        "gate", "no reference run to compare with (first run, or the reference lacks its profile)"),
}
