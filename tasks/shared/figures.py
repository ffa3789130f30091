"""The one way a stage saves a plot: a matplotlib Figure written as a PNG, atomically.

Figures are built with `matplotlib.figure.Figure` (no pyplot state, safe in worker threads) and
saved here, so every PNG of a run is whole or absent, never half-written."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from stethoscope.schemas.atomic import atomic_path


def save_png(figure: Figure, path: Path, dpi: int = 90, tight: bool = False) -> Path:
    """Write `figure` to `path` as a PNG; `tight` crops to the drawn area (bbox_inches)."""
    with atomic_path(Path(path)) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return Path(path)
