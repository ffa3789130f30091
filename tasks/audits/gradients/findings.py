"""Findings of the gradient audit, in words: SHORT_MEMORY, VANISHING_GRADIENTS,
EXPLODING_GRADIENTS and GRADIENTS_NOT_EVALUATED with what each measured and what to change,
and the report's note on which output was differentiated.

Whether a finding is raised is the stage's rule (tasks/audits/gradients/audit.py, `gradient_findings`);
this module only says it: which sides of t_mid count toward the horizon (`horizon_sides`), the
first and last layer's weight-gradient RMS of a ratio finding, and a recommendation per code.
"""

from __future__ import annotations

import pandas as pd

from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.summary import Finding
from stethoscope.tasks.audits.gradients.config import (
    DEFAULT_CONFIG,
    GradientAudit,
    GradientsConfig,
    Horizon,
)


def gradient_findings(
    audit: GradientAudit, config: GradientsConfig = DEFAULT_CONFIG, task: str | None = None
) -> list[Finding]:
    """SHORT_MEMORY, VANISHING_GRADIENTS, EXPLODING_GRADIENTS."""
    findings = []
    if audit.horizon_hours < config.required_context_hours:
        findings.append(short_memory_finding(audit, config, task))
    if audit.ratio is not None and audit.ratio < config.vanishing_ratio:
        findings.append(ratio_finding(FindingCode.VANISHING_GRADIENTS, audit))
    if audit.ratio is not None and audit.ratio > config.exploding_ratio:
        findings.append(ratio_finding(FindingCode.EXPLODING_GRADIENTS, audit))
    return findings


def _first_last_ratio(norms: pd.DataFrame) -> float | None:
    if len(norms) < 2 or norms["grad_rms"].iloc[-1] == 0:
        return None
    return float(norms["grad_rms"].iloc[0] / norms["grad_rms"].iloc[-1])


STAGE = "gradients"
RATIO_RECOMMENDATIONS = {
    FindingCode.VANISHING_GRADIENTS: "Add residual or skip connections and normalisation layers, prefer "
    "LSTM/GRU over simple RNNs, use Glorot/He initialisation and non-saturating activations.",
    FindingCode.EXPLODING_GRADIENTS: "Clip gradients (clipnorm), lower the learning rate, add "
    "normalisation layers and check the initialisation scale.",
}


def short_memory_finding(audit: GradientAudit, config: GradientsConfig, task: str | None
                         ) -> Finding:
    """SHORT_MEMORY: the horizon in hours against the context the task needs."""
    h, p = audit.horizon, audit.profile
    return Finding(
        stage=STAGE, severity="warning", code=FindingCode.SHORT_MEMORY,
        message=f"d {p.output_layer}[t={p.timestep}, task {task or config.task_index}]"
        f" / d input stays above 1e-{config.decades:g} x its peak over {horizon_sides(h)}: "
        f"{audit.horizon_hours:.1f} h of context, but the task needs "
        f"{config.required_context_hours:g} h.",
        recommendation="Give the network longer memory: a bidirectional LSTM/GRU probed at "
        "the middle, dilated or strided convolutions (or pooling) before the recurrent "
        "layer so it sees fewer, longer steps, or a global path (pooling/attention over "
        "the whole week).",
    )


def ratio_finding(code: FindingCode, audit: GradientAudit) -> Finding:
    """VANISHING_GRADIENTS or EXPLODING_GRADIENTS: the first and the last layer's RMS."""
    norms = audit.weight_gradients
    first, last = norms.iloc[0], norms.iloc[-1]
    return Finding(
        stage=STAGE, severity="warning", code=code,
        message=f"Weight-gradient RMS of {first['layer']} is {audit.ratio:.2g} x that of "
        f"{last['layer']} ({first['grad_rms']:.2e} vs {last['grad_rms']:.2e}; gradients of "
        f"the mean of {audit.profile.output_layer} at t_mid over "
        f"{audit.profile.num_user_weeks} user-weeks).",
        recommendation=RATIO_RECOMMENDATIONS[code],
    )


def not_evaluated_finding(reason: str) -> Finding:
    """GRADIENTS_NOT_EVALUATED: the model has no per-step output to differentiate."""
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.GRADIENTS_NOT_EVALUATED,
        message=f"The gradient audit did not run: {reason}",
        recommendation="Audit a model with a per-timestep layer [batch, T', units] (e.g. an "
        "LSTM with return_sequences=True before the pooling), or name such a layer with "
        "gradients.output_layer (--output-layer). The activation audit ran regardless.",
    )


def describe_output(audit: GradientAudit, config: GradientsConfig, input_steps: int) -> str:
    """Which output the audit differentiated, why that one, and how its steps map to input
    steps (the horizons are in input steps)."""
    p = audit.profile
    why = ("gradients.output_layer" if config.output_layer is not None else
           "the default network's per-step output" if p.output_layer == "raw_output" else
           "found: the last layer whose output keeps a time axis")
    steps = p.output_steps or input_steps
    mapping = (f"{steps} steps over the input's {input_steps}: t_mid = {p.timestep} is input "
               f"step {p.center}; horizons are counted in input steps" if steps != input_steps
               else f"{steps} steps, t_mid = {p.timestep}")
    return (f"Differentiated {p.output_layer} ({why}), unit {config.task_index}: {mapping}; "
            f"{p.num_user_weeks} user-weeks.")


def horizon_sides(h: Horizon) -> str:
    """The open sides of the horizon, in steps, and why a side does not count."""
    if h.back_open and h.forward_open:
        return f"{h.back} steps back and {h.forward} forward"
    if h.back_open:
        return (f"{h.back} steps back (a causal model: only the past counts, the "
                f"{h.forward} steps forward are ignored)")
    if h.forward_open:
        return f"{h.forward} steps forward (the backward gradient is exactly zero)"
    return "no step but t_mid itself (the output does not depend on the input)"
