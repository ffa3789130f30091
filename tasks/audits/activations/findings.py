"""Findings of the activation audit: dead, constant and saturated units."""

from __future__ import annotations

from collections.abc import Sequence

from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.summary import Finding, LayerActivations
from stethoscope.tasks.audits.activations.config import DEFAULT_CONFIG, STAGE, ActivationsConfig


def activation_findings(
    layers: Sequence[LayerActivations],
    config: ActivationsConfig = DEFAULT_CONFIG,
    dead_history: Sequence[dict] | None = None,
) -> list[Finding]:
    """DEAD_UNITS, CONSTANT_UNITS and SATURATED_UNITS, one finding per code naming every
    affected layer; `dead_history` (DeadUnitMonitor rows) adds when the units died."""
    findings = []
    dead = [layer for layer in layers if layer.dead_units]
    if dead:
        parts = [f"{_share(layer, layer.dead_units)}{_died_when(layer.name, dead_history)}"
                 for layer in dead]
        findings.append(_finding(
            FindingCode.DEAD_UNITS, max(layer.dead_fraction for layer in dead), config,
            f"Dead units (exactly zero on >= {config.dead_threshold:.0%} of positions): "
            + "; ".join(parts) + ".",
            "Use Leaky ReLU (or ELU) instead of ReLU; lower the learning rate or clip gradients "
            "(units die after large updates); use He initialisation and standardised inputs. "
            "Units dead from epoch 0 point at initialisation or input scaling.",
        ))
    constant = [layer for layer in layers if layer.constant_units]
    if constant:
        findings.append(_finding(
            FindingCode.CONSTANT_UNITS,
            max(len(layer.constant_units) / layer.units for layer in constant), config,
            f"Units whose output does not change over time on >= {config.constant_threshold:.0%} of "
            "user-weeks (bias only): " + "; ".join(
                _share(layer, layer.constant_units) for layer in constant) + ".",
            "These units see no varying input: fix the dead units in the layer before them "
            "(Leaky ReLU, lower learning rate); otherwise look for an input channel that is "
            "constant (e.g. a missing signal filled with zeros).",
        ))
    saturated = [layer for layer in layers if layer.saturated_fraction > 0]
    if saturated:
        findings.append(Finding(
            stage=STAGE, severity="warning", code=FindingCode.SATURATED_UNITS,
            message=f"Saturated tanh/sigmoid units (within {config.saturation_margin} of their "
            f"bounds on >= {config.saturated_threshold:.0%} of positions): " + "; ".join(
                f"{layer.name} {layer.saturated_fraction:.0%} of {layer.units} units"
                for layer in saturated) + ".",
            recommendation="Saturated units pass almost no gradient: standardise the inputs, "
            "use Glorot initialisation, lower the learning rate, add LayerNormalization before "
            "the layer, or clip gradients.",
        ))
    return findings


def _finding(code: str, worst: float, config: ActivationsConfig, message: str,
             recommendation: str) -> Finding:
    severity = "error" if worst >= config.error_fraction else "warning"
    return Finding(stage=STAGE, severity=severity, code=code, message=message,
                   recommendation=recommendation)


def _share(layer: LayerActivations, units: list[int]) -> str:
    shown = ", ".join(map(str, units[:10])) + (", ..." if len(units) > 10 else "")
    return f"{layer.name} {len(units)}/{layer.units} units [{shown}]"


def _died_when(layer: str, history: Sequence[dict] | None) -> str:
    rows = sorted((r for r in history or [] if r["layer"] == layer), key=lambda r: r["epoch"])
    first = next((r for r in rows if r["dead_fraction"] > 0), None)
    if first is None:
        return ""
    if first["epoch"] == 0:
        return " (dead already at initialisation)"
    return (f" (first dead after epoch {first['epoch']} of {rows[-1]['epoch']}, "
            f"{rows[-1]['dead_fraction']:.0%} dead at the end of training)")
