"""Figures of the variant comparison: every variant's input-gradient profile on one log-scale
plot, the dead share of each layer after every epoch per variant, and R² per synthetic target
per variant. `matplotlib.figure.Figure` only, saved through tasks/shared/figures.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.shared.figures import save_png
from stethoscope.tasks.variants.config import VariantSummary

_DPI = 80
WEEK_HOURS = 7 * 24.0


def plot_all(variants: list[VariantSummary], out_dir: Path,
             num_steps: int | None) -> list[tuple[str, Path, str]]:
    figures = []
    gradients = _plot_gradients(variants, Path(out_dir) / "gradient_profiles.png", num_steps)
    if gradients:
        figures.append(("Input-gradient profiles", gradients,
                        "mean |d output[t_mid] / d input[t]| over the channels, per variant (its "
                        "first seed), on a log scale; further from 0 = longer memory"))
    dead = _plot_dead(variants, Path(out_dir) / "dead_share_by_epoch.png")
    if dead:
        figures.append(("Dead units per epoch", dead,
                        "share of each layer's units that are dead after every epoch, per "
                        "variant (its first seed)"))
    synthetic = _plot_synthetic(variants, Path(out_dir) / "synthetic_r2.png")
    if synthetic:
        figures.append(("Synthetic targets", synthetic,
                        "R² on validation users per target and variant (mean over seeds); "
                        "1 = learned perfectly, 0 = no better than the mean"))
    return figures


def _plot_gradients(variants: list[VariantSummary], out: Path,
                    num_steps: int | None) -> Path | None:
    fig = Figure(figsize=(8, 3.4))
    ax = fig.subplots()
    drawn = False
    for variant in variants:
        file = RunPaths(variant.run_dirs[0]).audits / "gradients" / "profile.parquet"
        if not file.is_file():
            continue
        profile = pd.read_parquet(file).groupby("offset")["mean_abs"].sum()
        hours = profile.index.to_numpy(float) * (WEEK_HOURS / num_steps if num_steps else 1.0)
        ax.semilogy(hours, np.maximum(profile.to_numpy(), 1e-30), label=variant.name,
                    linewidth=1.2)
        drawn = True
    if not drawn:
        return None
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, high * 1e-9), high)  # a plot of what matters, not of float underflow
    ax.set_xlabel("offset from t_mid (hours)" if num_steps else "offset from t_mid (steps)")
    ax.set_ylabel("mean |gradient|")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return save_png(fig, out, dpi=_DPI)


def _plot_dead(variants: list[VariantSummary], out: Path) -> Path | None:
    histories = {}
    for variant in variants:
        file = RunPaths(variant.run_dirs[0]).model_dir / "dead_units.json"
        if file.is_file():
            histories[variant.name] = pd.DataFrame(json.loads(file.read_text()))
    histories = {k: v for k, v in histories.items() if not v.empty}
    if not histories:
        return None
    layers = list(dict.fromkeys(layer for h in histories.values() for layer in h["layer"]))
    columns = min(3, len(layers))
    rows = int(np.ceil(len(layers) / columns))
    fig = Figure(figsize=(3.6 * columns, 2.6 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax, layer in zip(axes, layers, strict=False):
        for name, history in histories.items():
            rows_of = history[history["layer"] == layer]
            ax.plot(rows_of["epoch"], rows_of["dead_fraction"], marker="o", markersize=3,
                    label=name)
        ax.set_title(layer, fontsize=10)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("epoch", fontsize=9)
        ax.tick_params(labelsize=8)
    axes[0].set_ylabel("dead share", fontsize=9)
    axes[0].legend(fontsize=8)
    for ax in axes[len(layers):]:
        ax.set_visible(False)
    fig.tight_layout()
    return save_png(fig, out, dpi=_DPI)


def _plot_synthetic(variants: list[VariantSummary], out: Path) -> Path | None:
    targets = list(dict.fromkeys(t for v in variants for t in v.synthetic))
    if not targets:
        return None
    fig = Figure(figsize=(max(6.0, 1.6 * len(targets)), 3.2))
    ax = fig.subplots()
    width = 0.8 / len(variants)
    x = np.arange(len(targets))
    for i, variant in enumerate(variants):
        values = [variant.synthetic.get(t) for t in targets]
        ax.bar(x + i * width - 0.4 + width / 2,
               [np.nan if v is None else max(v, -1.0) for v in values], width, label=variant.name)
    ax.axhline(0, color="#555", linewidth=0.8)
    ax.set_xticks(x, [t.replace("_", " ") for t in targets], fontsize=9, rotation=15)
    ax.set_ylabel("R² (clipped at -1)")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return save_png(fig, out, dpi=_DPI)
