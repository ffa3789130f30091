"""Plots of the train stage: loss per epoch, train and validation, over all phases."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from stethoscope.tasks.shared.figures import save_png


def plot_history(history_file: Path, out: Path) -> Path | None:
    """Loss curves per epoch (train and validation) from history.json; None when it is empty."""
    history = json.loads(Path(history_file).read_text()) if Path(history_file).exists() else []
    if not history:
        return None
    fig = Figure(figsize=(7, 3.2))
    ax = fig.subplots()
    epochs = list(range(1, len(history) + 1))
    for key in ("loss", "val_loss"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, values, marker="o", label=key)
    ax.set_xlabel("epoch (all phases)")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    return save_png(fig, out)
