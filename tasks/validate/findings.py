"""Findings of the validate stage: files set aside, users set aside for bad metadata, rows
quarantined, unknown devices, and a failed great-expectations suite. The gate's hard failures (too much set aside, unusable users or
labels) are errors raised by the gate itself, not findings."""

from __future__ import annotations

from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.summary import Finding
from stethoscope.tasks.validate.config import ValidationResult

STAGE = "validate"


def validation_findings(result: ValidationResult) -> list[Finding]:
    findings = []
    if result.files_rejected:
        findings.append(Finding(
            stage=STAGE, severity="warning", code=FindingCode.FILES_SET_ASIDE,
            message=f"{len(result.files_rejected)} sensor-log file(s) set aside whole: "
                    f"{', '.join(result.files_rejected[:5])}",
            recommendation="read validation/report.json for the column, rule and fix of each"))
    if result.users_set_aside:
        why = ", ".join(f"{rule} ({n})" for rule, n in sorted(result.users_set_aside_by_rule.items()))
        more = result.users_set_aside - len(result.users_set_aside_examples)
        findings.append(Finding(
            stage=STAGE, severity="warning", code=FindingCode.USERS_SET_ASIDE,
            message=f"{result.users_set_aside} user(s) of users.parquet set aside for bad "
                    f"metadata ({why}): {'; '.join(result.users_set_aside_examples)}"
                    + (f" and {more} more" if more > 0 else ""),
            recommendation="repair their rows of users.parquet: validation/rejected_users.parquet "
                           "names each with the rule, column and value; their sensor rows are in "
                           "validation/quarantine/ (rule bad_user_metadata)"))
    if result.rows_quarantined:
        findings.append(Finding(
            stage=STAGE, severity="info", code=FindingCode.ROWS_QUARANTINED,
            message=f"{result.rows_quarantined:,} of {result.rows_in:,} rows "
                    f"({result.quarantined_share:.2%}) quarantined",
            recommendation="validation/quarantine/ holds each row with the rule it broke"))
    if result.unknown_devices:
        findings.append(Finding(
            stage=STAGE, severity="warning", code=FindingCode.UNKNOWN_DEVICES,
            message="devices not in the catalog: " + ", ".join(sorted(result.unknown_devices)),
            recommendation="add them to schemas/devices.py so strata by generation see them"))
    if result.gx_success is False:
        findings.append(Finding(
            stage=STAGE, severity="warning", code=FindingCode.EXPECTATIONS_FAILED,
            message="great-expectations suite failed on the sample",
            recommendation="open validation/data_docs/index.html"))
    return findings
