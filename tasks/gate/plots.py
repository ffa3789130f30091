"""Figures of the gate: the score changes with their intervals against the tolerance, and the
distributions of the features that drifted (reference vs tonight, from the two profiles'
quantiles). `matplotlib.figure.Figure` only, saved through tasks/shared/figures.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from stethoscope.schemas.summary import ComparisonSection
from stethoscope.tasks.gate.profile import QUANTILE_LEVELS, DataProfile
from stethoscope.tasks.shared.figures import save_png

_DPI = 80
_MOST_DRIFT_PANELS = 6
_COLOURS = {"regression": "#c0392b", "regression_point": "#e67e22", "improved": "#27ae60",
            "same": "#2c3e50", "not_comparable": "#95a5a6"}


def plot_comparison(comparison: ComparisonSection, reference: DataProfile | None,
                    current: DataProfile | None, out_dir: Path) -> list[tuple[str, Path, str]]:
    """(title, png, caption) of each figure drawn; none when there is nothing to show."""
    figures = []
    scores = [c for c in comparison.changes if c.measure in ("auroc", "auprc")
              and c.delta is not None]
    if scores:
        figures.append(("Score changes since the reference run", _plot_scores(
            scores, Path(out_dir) / "score_changes.png"),
            "current − reference per task, with its interval; the dashed line is the "
            "tolerance: an interval wholly left of zero and a point left of it is an error"))
    drifted = [d for d in comparison.drift if d.kind == "feature" and d.drifted]
    if drifted and reference is not None and current is not None:
        figures.append(("Features that drifted", _plot_drift(
            drifted[:_MOST_DRIFT_PANELS], reference, current, Path(out_dir) / "drift.png"),
            "cumulative distributions of the reference run (grey) and tonight (colour), "
            "from the stored quantiles"))
    return figures


def _plot_scores(changes: list, out: Path) -> Path:
    fig = Figure(figsize=(7.5, 0.45 * len(changes) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(changes))[::-1]
    for row, c in zip(y, changes, strict=True):
        colour = _COLOURS[c.verdict]
        if c.delta_ci is not None:
            ax.plot(c.delta_ci, [row, row], color=colour, linewidth=2)
        ax.plot([c.delta], [row], "o", color=colour)
        if c.tolerance is not None:
            ax.plot([-c.tolerance] * 2, [row - 0.4, row + 0.4], "--", color="#7f8c8d",
                    linewidth=1)
    ax.axvline(0, color="#555", linewidth=0.8)
    ax.set_yticks(y, [f"{c.measure.upper()} {c.subject}" + ("" if c.paired is None else
                      " (paired)" if c.paired else " (unpaired)") for c in changes], fontsize=10)
    ax.set_xlabel("change, current − reference", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    fig.tight_layout()
    return save_png(fig, out, dpi=_DPI)


def _plot_drift(drifted: list, reference: DataProfile, current: DataProfile, out: Path) -> Path:
    columns = min(3, len(drifted))
    rows = int(np.ceil(len(drifted) / columns))
    fig = Figure(figsize=(3.4 * columns, 2.7 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    levels = np.asarray(QUANTILE_LEVELS)
    for ax, d in zip(axes, drifted, strict=False):
        for profile, colour, label in ((reference, "#95a5a6", "reference"),
                                       (current, "#c0392b", "tonight")):
            summary = profile.features.get(d.stratum, {}).get(d.name)
            if summary is not None and summary.quantiles:
                ax.plot(summary.quantiles, levels, color=colour, label=label)
        ax.set_title(f"{d.name}\n{d.stratum}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(drifted):]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_png(fig, out, dpi=_DPI)
