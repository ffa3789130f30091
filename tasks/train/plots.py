"""Plots of the train stage: loss per epoch, train and validation, over all phases, with the
end of pre-training (every change of phase) marked."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from stethoscope.tasks.shared.figures import save_png

# How a phase (history.json's "phase", tasks/train/config.py Phase.name) reads on the plot.
_PHASE_LABELS = {"pretrain": "pre-training", "finetune": "fine-tuning",
                 "supervised": "supervised", "synthetic": "synthetic targets"}
_CURVES = (("loss", "train loss", "tab:blue"), ("val_loss", "validation loss", "tab:orange"))
_LOG_SCALE_RATIO = 20.0  # losses spanning more than this (pre-training MSE vs BCE): log scale


def plot_history(history_file: Path, out: Path) -> Path | None:
    """Loss curves per epoch (train and validation) from history.json; None when it is empty.
    Each phase is drawn as its own segment and every change of phase (the end of
    pre-training) is a labelled vertical line: the phases' losses are not comparable."""
    history = json.loads(Path(history_file).read_text()) if Path(history_file).exists() else []
    if not history:
        return None
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    epochs = [int(h.get("epoch", i + 1)) for i, h in enumerate(history)]
    phases = [(phase, [i for i, _ in rows])
              for phase, rows in groupby(enumerate(history), key=lambda r: r[1].get("phase"))]
    values_seen: list[float] = []
    for key, label, color in _CURVES:
        for number, (_, rows) in enumerate(phases):
            values = [history[i].get(key) for i in rows]
            if all(v is None for v in values):
                continue
            values_seen += [v for v in values if v is not None and v > 0]
            ax.plot([epochs[i] for i in rows], values, marker="o", color=color,
                    label=label if number == 0 else None)
    ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
    if values_seen and max(values_seen) / min(values_seen) > _LOG_SCALE_RATIO:
        ax.set_yscale("log")
    for number, (phase, rows) in enumerate(phases):
        if len(phases) > 1 and phase is not None:
            ax.text(epochs[rows[0]] - 0.4, 1.01, _PHASE_LABELS.get(phase, phase),
                    transform=ax.get_xaxis_transform(), va="bottom", fontsize=8, color="0.3")
        if number > 0:
            boundary = (epochs[rows[0] - 1] + epochs[rows[0]]) / 2
            ax.axvline(boundary, color="0.3", ls="--", lw=1)
            if phases[number - 1][0] == "pretrain":
                ax.axvspan(epochs[0] - 0.5, boundary, color="0.93", zorder=0)
    if phases[0][0] == "pretrain" and len(phases) > 1:
        ax.set_title("loss per epoch: pre-training ends at the dashed line", fontsize=10, pad=16)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("loss" + (" (log scale)" if ax.get_yscale() == "log" else ""))
    ax.legend(fontsize=8)
    return save_png(fig, out)
