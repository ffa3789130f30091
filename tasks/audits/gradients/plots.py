"""The figure of the gradient audit: the input-gradient profile around t_mid, on a log scale.

A `matplotlib.figure.Figure`, never pyplot: no global state, no display needed.
`channel_names` names the profile's channels when the store does not (also for its table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from stethoscope.schemas.sequence_store import CHANNELS, OPTIONAL_CHANNELS
from stethoscope.tasks.audits.gradients.config import GradientAudit


def plot_gradient_profile(audit: GradientAudit, channels: Sequence[str] | None = None) -> Figure:
    """mean |g| summed over channels (and per channel) vs offset from t_mid, log scale, with the
    threshold and the horizon on both sides marked."""
    p, h = audit.profile, audit.horizon
    offsets = np.arange(p.mean_abs.shape[0]) - p.center
    names = list(channels) if channels else channel_names(p.mean_abs.shape[1])
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    ax = fig.add_subplot()
    for c, name in enumerate(names):
        ax.plot(offsets, p.mean_abs[:, c], lw=0.7, alpha=0.6, label=name)
    ax.plot(offsets, p.by_step, color="black", lw=1.3, label="sum over channels")
    ax.set_yscale("log", nonpositive="mask")
    ax.axhline(h.threshold, color="grey", ls=":", label=f"peak x 1e-{h.decades:g}")
    for x, is_open in ((-h.back, h.back_open), (h.forward, h.forward_open)):
        if is_open:
            ax.axvline(x, color="tab:red", ls="--")
    hours = audit.bin_seconds / 3600.0
    ax.secondary_xaxis("top", functions=(lambda x: np.multiply(x, hours),
                                         lambda x: np.divide(x, hours))).set_xlabel(
        "offset (hours)")
    ax.set_xlabel("offset from t_mid (input steps)")
    ax.set_ylabel("mean |d raw_output[t_mid] / d input[t]|")
    ax.set_title(f"horizon: {h.back} steps back, {h.forward} forward "
                 f"(effective {audit.horizon_hours:.1f} h)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def channel_names(num_channels: int) -> list[str]:
    """The store's channel names in their order, `channel_<c>` beyond them."""
    known = list(CHANNELS + OPTIONAL_CHANNELS)
    if num_channels <= len(known):
        return known[:num_channels]
    return [f"channel_{c}" for c in range(num_channels)]
