"""The figure of the synthetic-target audit: R^2 per target, network vs reference vs train mean.

A `matplotlib.figure.Figure`, never pyplot: no global state, no display needed.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from stethoscope.tasks.audits.synthetic.config import SyntheticAudit, TargetScore


def plot_learnability(audit: SyntheticAudit, threshold: float = 0.5, floor: float = -0.5
                      ) -> Figure:
    """Grouped bars per target: R^2 of the network (with its interval), the reference and the
    train mean (clipped below at `floor`), the threshold dashed; targets that were not learned,
    or whose verdict the data cannot tell, are marked."""
    scores = audit.scores
    fig = Figure(figsize=(max(6.0, 1.5 * len(scores) + 3.5), 3.8))
    ax = fig.subplots()
    x, width = np.arange(len(scores)), 0.27
    bars = ((audit.network, [s.r2 for s in scores]),
            (audit.reference, [s.reference_r2 for s in scores]),
            ("train mean", [s.baseline_r2 for s in scores]))
    for i, (label, values) in enumerate(bars):
        heights = [math.nan if v is None else max(v, floor) for v in values]
        ax.bar(x + (i - 1) * width, heights, width, label=label)
    # the network's interval (user-level bootstrap), clipped like the bars
    at = [i for i, s in enumerate(scores) if s.r2 is not None and s.r2_ci is not None]
    if at:
        centre = np.array([max(scores[i].r2 or 0.0, floor) for i in at])
        low = np.array([max(scores[i].r2_ci[0], floor) for i in at])  # type: ignore[index]
        high = np.array([max(scores[i].r2_ci[1], floor) for i in at])  # type: ignore[index]
        ax.errorbar(x[at] - width, centre, yerr=[centre - low, high - centre], fmt="none",
                    ecolor="black", elinewidth=1, capsize=3, label="95% interval (by user)")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=0.8,
               label=f"threshold {threshold:g}")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xticks(x, [s.target + _verdict_mark(s) for s in scores], rotation=15, ha="right",
                  fontsize=8)
    ax.set_ylim(floor, 1.0)
    ax.set_ylabel(f"R² on validation (clipped at {floor:g})")
    ax.set_title(f"Synthetic targets: {audit.network} vs {audit.reference}", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def _verdict_mark(s: TargetScore) -> str:
    if s.learned:
        return ""
    if not s.evaluated:
        return "\n(not evaluated)"
    return "\n(not learned)" if s.shown else "\n(inconclusive)"
