"""Figures of the activation audit: units x time heatmaps with local night marked and the
semantic units labelled at their rows, and the share of dead units per layer per epoch (when
training recorded it).

`matplotlib.figure.Figure` objects, never pyplot: no global state, no display needed;
tasks/shared/figures.py writes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stethoscope.schemas.summary import SemanticUnit


def plot_heatmaps(
    layer_name: str,
    sample: np.ndarray,
    hours_of_day: np.ndarray | None = None,
    night_hours: tuple[float, float] = (0.0, 6.0),
    unit_labels: dict[int, str] | None = None,
) -> Figure:
    """Units x time heatmaps of `sample` [n, T_l, units] (one panel per user-week) with night
    shaded on a strip above each panel. `hours_of_day` is the local time of day (hours) at
    the start of every input step: [T] for all user-weeks or [n, T] per user-week; without it
    the strip says that night is not marked. `unit_labels` (unit -> text, e.g. the states a
    semantic unit tracks) are written at the unit's row of every panel."""
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
        for unit, text in (unit_labels or {}).items():
            ax.text(0.005, unit, f"u{unit}: {text}", transform=ax.get_yaxis_transform(),
                    ha="left", va="center", fontsize=7, clip_on=True,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                          "alpha": 0.75})
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


def semantic_labels(entries: Sequence[SemanticUnit], layer: str) -> dict[int, str]:
    """unit -> "activity r=0.91, night r=-0.62" for the semantic entries of `layer`."""
    labels: dict[int, list[str]] = {}
    for entry in entries:
        if entry.layer == layer:
            labels.setdefault(entry.unit, []).append(f"{entry.state} r={entry.r:.2f}")
    return {unit: ", ".join(parts) for unit, parts in labels.items()}


def plot_dead_history(rows: Sequence[dict]) -> Figure:
    """Share of dead units per layer per epoch (DeadUnitMonitor rows) as a heatmap, layers x
    epochs, every cell labelled while there are few: when units died, and in which layer.
    A layer absent at an epoch (a head of a later phase) is a grey cell."""
    table = pd.DataFrame(rows)
    share = table.pivot_table(index="layer", columns="epoch", values="dead_fraction",
                              aggfunc="last", sort=False)
    share = share.reindex(columns=sorted(share.columns))
    units = table.groupby("layer", sort=False)["units"].last()
    num_layers, num_epochs = share.shape
    fig = Figure(figsize=(min(12.0, 2.5 + 0.5 * num_epochs), 1.2 + 0.3 * num_layers),
                 layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.85")  # masked cells: the layer did not exist at that epoch
    values = np.ma.masked_invalid(share.to_numpy(dtype=float))
    image = ax.imshow(values, aspect="auto", cmap="Reds", vmin=0.0, vmax=1.0,
                      interpolation="nearest")
    if num_layers * num_epochs <= 600:
        for (i, j), value in np.ndenumerate(share.to_numpy(dtype=float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.0%}" if value else "0", ha="center", va="center",
                        fontsize=7, color="white" if value > 0.6 else "0.25" if value else "0.6")
    ax.set_yticks(range(num_layers), [f"{layer} ({units[layer]})" for layer in share.index],
                  fontsize=8)
    step = max(1, num_epochs // 25)
    ax.set_xticks(range(0, num_epochs, step), [str(e) for e in share.columns[::step]], fontsize=8)
    ax.set_xlabel("epoch (0 = before training)")
    worst = table.loc[table["dead_fraction"].idxmax()] if len(table) else None
    ax.set_title("no dead units in any layer at any epoch"
                 if worst is None or worst["dead_fraction"] == 0 else
                 f"share of dead units per layer (units); largest {worst['dead_fraction']:.0%} "
                 f"in {worst['layer']} at epoch {worst['epoch']}", fontsize=10)
    fig.colorbar(image, ax=ax, label="share dead", fraction=0.04, pad=0.01)
    return fig


def _in_window(hours: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    start, end = window
    if start <= end:
        return (hours >= start) & (hours < end)
    return (hours >= start) | (hours < end)  # a window across midnight, e.g. (22, 6)

