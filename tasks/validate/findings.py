"""Findings of the validate stage: files set aside, rows quarantined, unknown devices, and a
failed great-expectations suite. The gate's hard failures (too much set aside, unusable users or
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
