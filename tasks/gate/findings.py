"""What the comparison with the reference run says in summary.json: REGRESSION, DATA_DRIFT,
NO_REFERENCE, and the notes for changes the data cannot tell apart from none.

Severity follows the evidence (docs/architecture.md §7.4): a REGRESSION of AUROC or AUPRC is an
`error` (the run fails, exit 3) when its interval excludes no change and the worsening exceeds
its tolerance; a synthetic R² drop whose interval excludes no change is a `warning`. When only
the point estimate exceeds the tolerance of a sampled measure (AUROC, AUPRC, synthetic R²), the
data cannot tell: the finding is `info` and says how large a drop the interval still allows.
Newly dead or constant units, a shorter horizon and a newly flagged stratum are measurements
of the model itself (or already need a corrected test), so they stay warnings. A DATA_DRIFT is
a `warning` (the data moved;
whether the model suffered is what the regressions say), raised only when a corrected test and
an effect size over its threshold agree.
"""

from __future__ import annotations

from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.summary import DriftEntry, Finding, MetricChange, ReferenceRun
from stethoscope.tasks.gate.profile import FILES_SET_ASIDE

STAGE = "gate"
# measures estimated on a sample of users, whose point change alone is no evidence
SAMPLED = ("auroc", "auprc", "synthetic_r2")

_WHAT = {"auroc": "AUROC", "auprc": "AUPRC", "synthetic_r2": "synthetic-target R²",
         "dead_fraction": "share of dead units", "constant_fraction": "share of constant units",
         "horizon_hours": "gradient horizon (hours)", "flagged_stratum": "flagged stratum"}


def no_reference(why: str) -> Finding:
    return Finding(stage=STAGE, severity="info", code=FindingCode.NO_REFERENCE, message=why,
                   recommendation="Nothing to do: the next run compares itself with this one "
                   "if it does not fail; `stethoscope bless RUN_DIR` pins a reference.")


def regression_findings(changes: list[MetricChange], reference: ReferenceRun) -> list[Finding]:
    return [_regression(c, reference) for c in changes
            if c.verdict in ("regression", "regression_point")]


def _regression(c: MetricChange, reference: ReferenceRun) -> Finding:
    what = _WHAT.get(c.measure, c.measure)
    against = f"against {reference.run_id} ({reference.chosen.replace('_', ' ')})"
    if c.measure == "flagged_stratum":
        return Finding(
            stage=STAGE, severity="warning", code=FindingCode.REGRESSION,
            message=f"stratum {c.subject} is flagged tonight and was not {against}: {c.detail}.",
            recommendation="Compare the stratum's rows in both runs (its device mix, coverage "
            "and labels): a model change or a data change can each make one stratum worse.")
    sampled = c.measure in SAMPLED
    if c.verdict == "regression":
        severity = "error" if c.measure in ("auroc", "auprc") else "warning"
    else:
        severity = "info" if sampled else "warning"
    interval = (f" [{c.delta_ci[0]:+.3f}, {c.delta_ci[1]:+.3f}]" if c.delta_ci else
                " (no interval)")
    evidence = ("the interval excludes no change" if c.verdict == "regression" else
                "only the point estimate exceeds the tolerance" if c.delta_ci is None else
                "the interval does not exclude no change")
    if severity == "info":
        evidence += ", so the data cannot tell whether it got worse"
    pairing = "" if c.paired is None else (", paired by user-week" if c.paired else ", unpaired")
    return Finding(
        stage=STAGE, severity=severity, code=FindingCode.REGRESSION,
        message=(f"{what} of {c.subject}: {_fmt(c.reference)} → {_fmt(c.current)}, change "
                 f"{_fmt(c.delta, signed=True)}{interval}{pairing} {against}; tolerance "
                 f"{_fmt(c.tolerance)}: {evidence}. {c.detail}."),
        recommendation=_advice(c.measure))


def _advice(measure: str) -> str:
    if measure in ("auroc", "auprc"):
        return ("Do not ship tonight's model: diff its training config, data and code against "
                "the reference run's (summary.json `config`); look at the Data section for "
                "drift and at the strata for where it got worse.")
    if measure == "synthetic_r2":
        return ("Check whether the architecture or the training budget changed: the network "
                "learns a prerequisite of the task less well than before.")
    if measure in ("dead_fraction", "constant_fraction"):
        return ("Lower the learning rate, use a leaky activation or re-initialise: units that "
                "died since the reference run no longer carry information.")
    return ("The network sees less context than before: check recurrence, dilation and "
            "sequence length changes since the reference run.")


def drift_findings(drift: list[DriftEntry], reference: ReferenceRun) -> list[Finding]:
    findings = []
    for d in drift:
        if not d.drifted:
            continue
        if d.kind == "feature":
            what = (f"{d.name} in {d.stratum}: mean {_fmt(d.reference_value)} → "
                    f"{_fmt(d.current_value)} (shift {_fmt(d.shift, signed=True)}), "
                    f"{d.effect_name} {_fmt(d.effect)}, PSI {_fmt(d.psi)}")
            advice = ("Find what changed upstream of this feature (firmware, device mix, "
                      "export, time zones) before trusting tonight's metrics; retrain if the "
                      "shift is real.")
        elif d.kind == "device_mix":
            what = f"the device mix ({d.stratum}): {d.effect_name} {_fmt(d.effect)}"
            advice = ("Check the per-generation strata: a model's metrics move with the mix of "
                      "devices even when it did not change.")
        elif d.name == FILES_SET_ASIDE:
            what = (f"rows in files set aside whole (unreadable or breaking the schema): "
                    f"{_pct(d.reference_value)} → {_pct(d.current_value)} of rows")
            advice = ("Open validation/rejected_files/ and validation/report.json `files` for "
                      "why each file was set aside; fix or re-export them and re-run.")
        else:
            what = (f"rows quarantined by rule {d.name}: {_pct(d.reference_value)} → "
                    f"{_pct(d.current_value)} of rows")
            advice = ("Open validation/quarantine/ for the rule's rows and fix the export that "
                      "produces them.")
        findings.append(Finding(
            stage=STAGE, severity="warning", code=FindingCode.DATA_DRIFT,
            message=(f"{what} against {reference.run_id}; {d.n_reference:,} vs "
                     f"{d.n_current:,}, corrected p = {_fmt(d.p_adjusted)}."),
            recommendation=advice))
    return findings


def cannot_tell(changes: list[MetricChange]) -> list[str]:
    """Notes for AUROC/AUPRC changes the data cannot tell from none, with the drop the interval
    still allows (what the comparison could have seen)."""
    notes = []
    for c in changes:
        if c.measure not in ("auroc", "auprc") or c.verdict in ("regression", "regression_point"):
            continue
        what = _WHAT[c.measure]
        if c.delta is not None and c.delta_ci is None:
            notes.append(f"{what} of {c.subject}: change {_fmt(c.delta, signed=True)}, no "
                         "interval (too few users of a class): the data cannot tell.")
        elif c.delta_ci is not None and c.tolerance is not None and c.delta_ci[0] < -c.tolerance:
            notes.append(f"{what} of {c.subject}: change {_fmt(c.delta, signed=True)} "
                         f"[{c.delta_ci[0]:+.3f}, {c.delta_ci[1]:+.3f}]: a drop of up to "
                         f"{-c.delta_ci[0]:.3f} cannot be ruled out at this sample size.")
    return notes


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"
