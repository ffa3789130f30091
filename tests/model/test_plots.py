"""What the plots of training and the audits mark: the end of pre-training on the loss curves,
the context the task needs on the gradient profile, dead share per layer and epoch as cells."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from stethoscope.tasks.audits.activations.plots import plot_dead_history
from stethoscope.tasks.audits.gradients.config import GradientAudit, GradientProfile, Horizon
from stethoscope.tasks.audits.gradients.plots import plot_gradient_profile
from stethoscope.tasks.train import plots as train_plots


def _texts(figure: Figure) -> list[str]:
    return [t.get_text() for ax in figure.axes for t in ax.texts] + [
        ax.get_title() for ax in figure.axes]


def _vertical_lines(figure: Figure) -> list[float]:
    """x of every vertical line (axvline) of the figure's first axes."""
    return [float(line.get_xdata()[0]) for line in figure.axes[0].lines
            if len(set(np.asarray(line.get_xdata(), dtype=float))) == 1]


def test_the_loss_plot_marks_where_pretraining_ends(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    history = [{"epoch": e, "phase": "pretrain" if e <= 2 else "finetune",
                "loss": 5.0 - e * 0.1 if e <= 2 else 0.7, "val_loss": 9.0 if e <= 2 else 0.8}
               for e in range(1, 6)]
    (tmp_path / "history.json").write_text(json.dumps(history))
    drawn: list[Figure] = []
    monkeypatch.setattr(train_plots, "save_png", lambda figure, out: drawn.append(figure) or out)

    assert train_plots.plot_history(tmp_path / "history.json", tmp_path / "h.png") is not None
    [figure] = drawn
    assert _vertical_lines(figure) == [2.5]
    assert {"pre-training", "fine-tuning"} <= set(_texts(figure))
    # each phase is its own segment: no line joins epoch 2 to epoch 3
    segments = [[int(x) for x in line.get_xdata()] for line in figure.axes[0].lines
                if line.get_marker() == "o"]
    assert sorted(segments) == [[1, 2], [1, 2], [3, 4, 5], [3, 4, 5]]


def test_a_single_phase_has_no_boundary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = [{"epoch": e, "phase": "supervised", "loss": 1.0 / e} for e in range(1, 4)]
    (tmp_path / "history.json").write_text(json.dumps(history))
    drawn: list[Figure] = []
    monkeypatch.setattr(train_plots, "save_png", lambda figure, out: drawn.append(figure) or out)
    train_plots.plot_history(tmp_path / "history.json", tmp_path / "h.png")
    assert _vertical_lines(drawn[0]) == [] and "supervised" not in _texts(drawn[0])


def _audit(back: int, forward: int, bin_seconds: float = 3600.0) -> GradientAudit:
    steps, center = 201, 100
    offsets = np.arange(steps) - center
    mean_abs = np.exp(-np.abs(offsets) / 3.0)[:, None] * np.ones((1, 2))
    profile = GradientProfile(mean_abs=mean_abs, mean_signed=mean_abs, timestep=center,
                              center=center, num_user_weeks=4, weight_gradients=pd.DataFrame())
    horizon = Horizon(back=back, forward=forward, back_open=True, forward_open=True,
                      peak=2.0, threshold=2e-3, decades=3.0)
    return GradientAudit(profile=profile, horizon=horizon,
                         horizon_hours=min(back, forward) * bin_seconds / 3600, ratio=None,
                         bin_seconds=bin_seconds)


def test_the_gradient_profile_marks_the_context_the_task_needs() -> None:
    figure = plot_gradient_profile(_audit(back=20, forward=20), required_context_hours=24.0)
    assert sorted(_vertical_lines(figure)) == [-24.0, -20.0, 20.0, 24.0]  # need, horizon
    assert "the task needs 24 h: short of it" in figure.axes[0].get_title()
    labels = figure.axes[0].get_legend_handles_labels()[1]
    assert {"horizon", "context the task needs", "needed, beyond the horizon"} <= set(labels)

    enough = plot_gradient_profile(_audit(back=30, forward=30), required_context_hours=24.0)
    assert "needs 24 h: reached" in enough.axes[0].get_title()
    assert "needed, beyond the horizon" not in enough.axes[0].get_legend_handles_labels()[1]
    # without a requirement nothing is claimed
    assert sorted(_vertical_lines(plot_gradient_profile(_audit(20, 20)))) == [-20.0, 20.0]


def test_dead_share_is_a_heatmap_of_layers_by_epoch() -> None:
    rows = [{"epoch": e, "layer": layer, "units": 4, "dead_fraction": share}
            for e in range(4) for layer, share in (("conv_1", 0.0), ("bilstm", e / 4))]
    rows += [{"epoch": 3, "layer": "head_x", "units": 1, "dead_fraction": 0.0}]
    figure = plot_dead_history(rows)
    ax = figure.axes[0]
    cells = ax.images[0].get_array()
    assert cells.shape == (3, 4)  # layers x epochs
    np.testing.assert_allclose(cells[1], [0.0, 0.25, 0.5, 0.75])
    assert list(np.ma.getmaskarray(cells)[2]) == [True, True, True, False]  # head_x: epoch 3 only
    assert [t.get_text() for t in ax.get_yticklabels()] == ["conv_1 (4)", "bilstm (4)", "head_x (1)"]
    assert "75%" in _texts(figure)
    assert "largest 75% in bilstm at epoch 3" in ax.get_title()
    quiet = plot_dead_history([{"epoch": 0, "layer": "conv_1", "units": 4, "dead_fraction": 0.0}])
    assert quiet.axes[0].get_title() == "no dead units in any layer at any epoch"


def test_a_causal_profile_marks_the_context_behind_only() -> None:
    audit = _audit(back=20, forward=0)
    causal = GradientAudit(profile=audit.profile, horizon=Horizon(
        back=20, forward=0, back_open=True, forward_open=False, peak=2.0, threshold=2e-3,
        decades=3.0), horizon_hours=20.0, ratio=None, bin_seconds=3600.0)
    figure = plot_gradient_profile(causal, required_context_hours=24.0)
    assert sorted(_vertical_lines(figure)) == [-24.0, -20.0]
