"""Figures of the activation audit: units x time heatmaps with local night marked, and the
share of dead units per layer per epoch (when training recorded it).

`matplotlib.figure.Figure` objects, never pyplot: no global state, no display needed;
tasks/shared/figures.py writes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def plot_heatmaps(
    layer_name: str,
    sample: np.ndarray,
    hours_of_day: np.ndarray | None = None,
    night_hours: tuple[float, float] = (0.0, 6.0),
) -> Figure:
    """Units x time heatmaps of `sample` [n, T_l, units] (one panel per user-week) with night
    shaded on a strip above each panel. `hours_of_day` is the local time of day (hours) at
    the start of every input step: [T] for all user-weeks or [n, T] per user-week; without it
    the strip says that night is not marked."""
    num, steps, units = sample.shape
    fig = Figure(figsize=(12, 1.0 + 2.2 * num))
    grid = fig.add_gridspec(2 * num, 1, height_ratios=[1, 10] * num, hspace=0.25,
                            top=1 - 0.5 / (1.0 + 2.2 * num), bottom=0.6 / (1.0 + 2.2 * num))
    signed = bool((sample < 0).any())
    limit = float(np.abs(sample).max()) or 1.0
    for i in range(num):
        strip, ax = fig.add_subplot(grid[2 * i]), fig.add_subplot(grid[2 * i + 1])
        image = ax.imshow(sample[i].T, aspect="auto", interpolation="nearest", origin="lower",
                          cmap="RdBu_r" if signed else "viridis",
                          vmin=-limit if signed else 0.0, vmax=limit)
        ax.set_ylabel(f"user-week {i}\nunit")
        ax.tick_params(labelbottom=i == num - 1)
        strip.set_xlim(-0.5, steps - 0.5)
        strip.set_xticks([])
        strip.set_yticks([])
        if hours_of_day is None:
            strip.text(0.5, 0.5, "local time of day unknown: night not marked", ha="center",
                       va="center", transform=strip.transAxes, fontsize=8)
        else:
            hours = np.asarray(hours_of_day, dtype=float)
            hours = hours[i] if hours.ndim == 2 else hours
            hours = hours[(np.arange(steps) * len(hours)) // steps]  # input step -> layer step
            night = _in_window(hours, night_hours)
            strip.imshow(night[None, :], aspect="auto", cmap="Greys", vmin=0, vmax=1,
                         extent=(-0.5, steps - 0.5, 0, 1))
        fig.colorbar(image, ax=[strip, ax], pad=0.01)  # narrows strip and panel alike
    ax.set_xlabel(f"time step of {layer_name}")
    fig.suptitle(f"{layer_name}: activations, units x time "
                 f"(dark strip: night {night_hours[0]:g}-{night_hours[1]:g} h local)")
    return fig


def plot_dead_history(rows: Sequence[dict]) -> Figure:
    """Share of dead units per layer per epoch (DeadUnitMonitor rows): when units died."""
    table = pd.DataFrame(rows)
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for layer, part in table.groupby("layer", sort=False):
        ax.plot(part["epoch"], part["dead_fraction"], marker="o", label=layer)
    ax.set_xlabel("epoch (0 = before training)")
    ax.set_ylabel("share of dead units")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    return fig


def _in_window(hours: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    start, end = window
    if start <= end:
        return (hours >= start) & (hours < end)
    return (hours >= start) | (hours < end)  # a window across midnight, e.g. (22, 6)

