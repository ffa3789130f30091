"""The figure of the gradient audit: the input-gradient profile around t_mid, on a log scale.

A `matplotlib.figure.Figure`, never pyplot: no global state, no display needed.
`channel_names` names the profile's channels when the store does not (also for its table).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from stethoscope.schemas.sequence_store import CHANNELS, OPTIONAL_CHANNELS
from stethoscope.tasks.audits.gradients.config import GradientAudit


def plot_gradient_profile(audit: GradientAudit, channels: Sequence[str] | None = None,
                          required_context_hours: float | None = None) -> Figure:
    """mean |g| summed over channels (and per channel) vs offset from t_mid, log scale, with the
    threshold and the horizon on both sides marked; with `required_context_hours`
    (GradientsConfig.required_context_hours) the context the task needs is marked on both
    sides too, and the steps it needs beyond the horizon are shaded: what the model misses."""
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
    horizon_label: str | None = "horizon"
    for x, is_open in ((-h.back, h.back_open), (h.forward, h.forward_open)):
        if is_open:
            ax.axvline(x, color="tab:red", ls="--", label=horizon_label)
            horizon_label = None
    hours = audit.bin_seconds / 3600.0
    title = (f"horizon: {h.back} steps back, {h.forward} forward "
             f"(effective {audit.horizon_hours:.1f} h)")
    if required_context_hours is not None:
        _mark_required_context(ax, audit, required_context_hours / hours, offsets)
        verdict = "short of it" if audit.horizon_hours < required_context_hours else "reached"
        title += f"; the task needs {required_context_hours:g} h: {verdict}"
    ax.secondary_xaxis("top", functions=(lambda x: np.multiply(x, hours),
                                         lambda x: np.divide(x, hours))).set_xlabel(
        "offset (hours)")
    ax.set_xlabel("offset from t_mid (input steps)")
    ax.set_ylabel(f"mean |d {p.output_layer}[t_mid] / d input[t]|")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


def _mark_required_context(ax: Axes, audit: GradientAudit, required_steps: float,
                           offsets: np.ndarray) -> None:
    """A dark green line `required_steps` from t_mid on each side the model looks to (the
    back side when it looks nowhere), inside the plotted offsets; where that side's horizon
    falls short, the gap between horizon and requirement shaded red."""
    h = audit.horizon
    low, high = float(offsets[0]), float(offsets[-1])
    labels = {"line": "context the task needs", "gap": "needed, beyond the horizon"}
    sides = [(side, horizon) for side, horizon, is_open in
             ((-1, h.back, h.back_open), (1, h.forward, h.forward_open)) if is_open]
    for side, horizon in sides or [(-1, 0)]:
        at = side * required_steps
        if low <= at <= high:
            ax.axvline(at, color="#1b5e20", ls="-.", lw=1.8, label=labels.pop("line", None))
        if horizon < required_steps:
            ax.axvspan(side * horizon, min(max(at, low), high), color="tab:red", alpha=0.15,
                       lw=0, label=labels.pop("gap", None))


def channel_names(num_channels: int) -> list[str]:
    """The store's channel names in their order, `channel_<c>` beyond them."""
    known = list(CHANNELS + OPTIONAL_CHANNELS)
    if num_channels <= len(known):
        return known[:num_channels]
    return [f"channel_{c}" for c in range(num_channels)]
