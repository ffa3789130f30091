"""The gradient audit: how far the network's memory reaches (DESIGN section 1.3), and whether
gradients vanish or explode across its depth.

Input-gradient profile: g[u, t, c] = d raw_output[u, t_mid, task] / d sequence[u, t, c] for every
user-week u of the sample, averaged over u as mean |g| and mean g. The outputs of different
user-weeks do not interact, so the gradient of sum_u raw_output[u, t_mid, task] gives every
user-week's gradient at once: ONE backward pass per batch, reduced over the batch in-graph, so
memory is O(T x C) whatever the sample size. t_mid is raw_output's middle step (T' // 2) by
default; when raw_output is shorter than the input (pooling), step t_mid is centred on input
step round((t_mid + 0.5) * T / T' - 0.5).

Horizon: p[t] = sum_c mean |g|[t, c]. With the threshold p_max x 10^-k (k = `decades`, 3),
horizon_steps_back = t_mid - (earliest t <= t_mid with p[t] >= threshold) and
horizon_steps_forward = (latest t >= t_mid with p[t] >= threshold) - t_mid: the *farthest* steps
still above the threshold, so a global path counts even when the local one has faded.

Causal models. A unidirectional LSTM or causal convolutions cannot see the future, and
demanding future context of them would flag every causal model; so the forward side is *closed*
for a causal model and the effective horizon is min(back, forward) over the open sides: both
open (bidirectional) -> the shorter side, because the weaker direction limits what the step in
the middle can combine (a BiLSTM whose backward half died shows up here); only back open
(causal) -> back; none -> 0. A model is causal when `causal` in the config says so; otherwise
when its forward gradient is exactly zero (no path from any later input reaches t_mid: causal
convolutions, a bare LSTM), or when all its recurrent layers run forward in time only -- the
'same'-padded convolutions in front of a unidirectional LSTM leak a few steps of the future,
which would otherwise count as a forward horizon of a few steps and flag the model for it. A
side whose gradient is exactly zero is closed whatever the model (nothing reaches from there).
horizon_hours = effective steps x bin_seconds / 3600 (bin_seconds: config, else the store's,
else 7 x 24 h / T). SHORT_MEMORY: horizon_hours < required_context_hours (24 h).

Weight gradients come from the same backward passes: the gradient of the same target,
L = mean over user-weeks of raw_output[u, t_mid, task], w.r.t. the trainable weights of every
layer on the path from the sequence input to raw_output (the metadata branch is left out),
accumulated over the whole sample (O(model size) memory). A label-free loss, so no labels are
needed, and no second backward pass or trace: the audit stays close to one forward + backward.
Per layer: the L2 norm of those gradients and their RMS (norm / sqrt(number of weights),
comparable between layers of different sizes). ratio = RMS of the first layer / RMS of the
last one (raw_output): VANISHING_GRADIENTS below `vanishing_ratio` (1e-3), EXPLODING_GRADIENTS
above `exploding_ratio` (1e3).

The parts live in private modules: the profile (`GradientProfile`, `gradient_profile`: the
compiled backward pass and the walk over the model graph) in `tasks/_gradient_profile.py`, the
text of the findings in `tasks/_gradient_findings.py`, the profile plot in
`tasks/_gradient_plots.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from schemas.config import StageConfig
from schemas.summary import Finding, GradientsSection
from tasks._batches import Batch, iter_store_batches, load_audit_model, store_stats
from tasks._gradient_findings import STAGE, ratio_finding, short_memory_finding
from tasks._gradient_plots import channel_names, plot_gradient_profile
from tasks._gradient_profile import (
    WEIGHT_GRADIENTS_SCHEMA,
    GradientProfile,
    forward_recurrence_only,
    gradient_profile,
)
from tasks.io import atomic_path, write_parquet_atomic

__all__ = [  # the stage's interface; the names from private modules are re-exported here
    "DEFAULT_CONFIG", "PLOT_FILE", "PROFILE_FILE", "PROFILE_SCHEMA", "STAGE", "WEEK_SECONDS",
    "WEIGHT_GRADIENTS_FILE", "WEIGHT_GRADIENTS_SCHEMA", "GradientAudit", "GradientProfile",
    "GradientsConfig", "GradientsResult", "Horizon", "audit_gradients", "dependency_horizon",
    "gradient_findings", "gradient_profile", "gradients_task", "plot_gradient_profile",
    "profile_table",
]

matplotlib.use("Agg")
log = logging.getLogger("stethoscope.gradients")
PROFILE_FILE = "profile.parquet"
PLOT_FILE = "profile.png"
WEIGHT_GRADIENTS_FILE = "weight_gradients.parquet"
WEEK_SECONDS = 7 * 24 * 3600.0

PROFILE_SCHEMA = pa.schema(
    [
        pa.field("t", pa.int32(), nullable=False),
        pa.field("offset", pa.int32(), nullable=False),  # t - t_mid, in input steps
        pa.field("channel", pa.string(), nullable=False),
        pa.field("mean_abs", pa.float64(), nullable=False),
        pa.field("mean_signed", pa.float64(), nullable=False),
    ]
)


class GradientsConfig(StageConfig):
    """Sample, probed output and thresholds of the gradient audit."""

    split: str = "val"
    max_user_weeks: int = Field(256, ge=1)
    batch_size: int = Field(16, ge=1)
    output_layer: str = "raw_output"
    task_index: int = Field(0, ge=0)
    timestep: int | None = Field(None, ge=0, description="raw_output step; None: the middle")
    decades: float = Field(3.0, gt=0, description="k: horizon threshold = peak x 10^-k")
    required_context_hours: float = Field(24.0, ge=0)
    bin_seconds: float | None = Field(None, gt=0, description="None: the store's, else 1 week / T")
    causal: bool | None = Field(None, description="None: detect from exactly-zero gradients")
    vanishing_ratio: float = Field(1e-3, gt=0)
    exploding_ratio: float = Field(1e3, gt=0)


DEFAULT_CONFIG = GradientsConfig()


@dataclass(frozen=True)
class Horizon:
    back: int
    forward: int
    back_open: bool
    forward_open: bool
    peak: float
    threshold: float
    decades: float

    @property
    def effective(self) -> int:
        """min over the open sides (see the module docstring); 0 when no side is open."""
        sides = [s for s, is_open in ((self.back, self.back_open),
                                      (self.forward, self.forward_open)) if is_open]
        return min(sides) if sides else 0


@dataclass(frozen=True)
class GradientAudit:
    profile: GradientProfile
    horizon: Horizon
    horizon_hours: float
    bin_seconds: float
    ratio: float | None  # RMS of the first layer / RMS of the last; None when undefined

    @property
    def weight_gradients(self) -> pd.DataFrame:
        return self.profile.weight_gradients


class GradientsResult(BaseModel):
    """The task's small record: the summary.json section, findings and the files written."""

    model_config = ConfigDict(frozen=True)

    section: GradientsSection
    findings: list[Finding]
    causal: bool
    first_last_ratio: float | None
    plot_file: Path
    weight_gradients_file: Path


def dependency_horizon(
    by_step: np.ndarray, center: int, decades: float = 3.0, causal: bool | None = None
) -> Horizon:
    """Farthest steps on each side of `center` whose p[t] >= max(p) x 10^-decades. `causal`
    True closes the forward side, False keeps both open, None closes exactly-zero sides."""
    by_step = np.asarray(by_step, dtype=np.float64)
    peak = float(by_step.max(initial=0.0))
    threshold = peak * 10.0 ** -decades
    above = np.flatnonzero(by_step >= threshold) if peak > 0 else np.array([], dtype=int)
    before, after = above[above <= center], above[above >= center]
    back_open, forward_open = bool(by_step[:center].any()), bool(by_step[center + 1 :].any())
    if causal is not None:  # declared, not detected
        back_open, forward_open = True, not causal
    return Horizon(
        back=int(center - before.min()) if before.size else 0,
        forward=int(after.max() - center) if after.size else 0,
        back_open=back_open,
        forward_open=forward_open,
        peak=peak,
        threshold=threshold,
        decades=decades,
    )


def audit_gradients(
    model: keras.Model,
    batches: Iterable[Batch],
    config: GradientsConfig = DEFAULT_CONFIG,
    bin_seconds: float | None = None,
) -> GradientAudit:
    """Input-gradient profile, horizon and weight-gradient norms over the sample."""
    profile = gradient_profile(model, batches, config.output_layer, config.task_index,
                               config.timestep)
    causal = True if config.causal is None and forward_recurrence_only(model) else config.causal
    horizon = dependency_horizon(profile.by_step, profile.center, config.decades, causal)
    bin_seconds = config.bin_seconds or bin_seconds or WEEK_SECONDS / profile.mean_abs.shape[0]
    return GradientAudit(profile, horizon, horizon.effective * bin_seconds / 3600.0, bin_seconds,
                         _first_last_ratio(profile.weight_gradients))


def gradient_findings(
    audit: GradientAudit, config: GradientsConfig = DEFAULT_CONFIG, task: str | None = None
) -> list[Finding]:
    """SHORT_MEMORY, VANISHING_GRADIENTS, EXPLODING_GRADIENTS."""
    findings = []
    if audit.horizon_hours < config.required_context_hours:
        findings.append(short_memory_finding(audit, config, task))
    if audit.ratio is not None and audit.ratio < config.vanishing_ratio:
        findings.append(ratio_finding("VANISHING_GRADIENTS", audit))
    if audit.ratio is not None and audit.ratio > config.exploding_ratio:
        findings.append(ratio_finding("EXPLODING_GRADIENTS", audit))
    return findings


def profile_table(profile: GradientProfile, channels: Sequence[str] | None = None) -> pa.Table:
    """The profile in long format (PROFILE_SCHEMA): one row per (t, channel)."""
    steps, num_channels = profile.mean_abs.shape
    names = list(channels) if channels else channel_names(num_channels)
    t = np.repeat(np.arange(steps, dtype=np.int32), num_channels)
    return pa.table({
        "t": t,
        "offset": (t - profile.center).astype(np.int32),
        "channel": np.tile(np.asarray(names, dtype=object), steps),
        "mean_abs": profile.mean_abs.ravel(),
        "mean_signed": profile.mean_signed.ravel(),
    }, schema=PROFILE_SCHEMA)


# --- private helpers -------------------------------------------------------------------------


def _first_last_ratio(norms: pd.DataFrame) -> float | None:
    if len(norms) < 2 or norms["grad_rms"].iloc[-1] == 0:
        return None
    return float(norms["grad_rms"].iloc[0] / norms["grad_rms"].iloc[-1])


def _publish(audit: GradientAudit) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:  # called outside a Prefect run (tests, notebooks)
        return
    h = audit.horizon
    create_table_artifact(
        key="gradients-layers",
        table=audit.weight_gradients.round(8).to_dict(orient="records"),
        description=f"Weight-gradient norms per layer (first/last RMS ratio {audit.ratio}); "
        f"horizon {h.back} steps back, {h.forward} forward, {audit.horizon_hours:.1f} h",
    )


@task(name="gradients", task_run_name="gradients {model_path.name}")
def gradients_task(
    model_path: Path,
    store_dir: Path,
    out_dir: Path,
    config: GradientsConfig = DEFAULT_CONFIG,
    task_names: list[str] | None = None,
) -> GradientsResult:
    """Prefect shell: audit the model on the store's sample, write the profile (Parquet, PNG)
    and the weight-gradient norms under `out_dir`, return the record."""
    model = load_audit_model(model_path, config.output_layer)
    stats = store_stats(store_dir, model)
    batches = iter_store_batches(store_dir, config.split, config.max_user_weeks, config.batch_size)
    audit = audit_gradients(model, batches, config, stats.bin_seconds if stats else None)
    channels = stats.channels if stats else None
    task_name = task_names[config.task_index] if task_names else str(config.task_index)
    out_dir = Path(out_dir)
    profile_file = write_parquet_atomic(profile_table(audit.profile, channels),
                                        out_dir / PROFILE_FILE)
    with atomic_path(out_dir / PLOT_FILE) as tmp:
        plot_gradient_profile(audit, channels).savefig(tmp, format="png", dpi=90)
    norms_file = write_parquet_atomic(
        pa.Table.from_pandas(audit.weight_gradients, schema=WEIGHT_GRADIENTS_SCHEMA,
                             preserve_index=False), out_dir / WEIGHT_GRADIENTS_FILE)
    _publish(audit)
    section = GradientsSection(
        output_layer=config.output_layer, task=task_name, timestep=audit.profile.timestep,
        horizon_steps_back=audit.horizon.back, horizon_steps_forward=audit.horizon.forward,
        horizon_hours=audit.horizon_hours, profile_file=str(profile_file))
    return GradientsResult(
        section=section, findings=gradient_findings(audit, config, task_name),
        causal=audit.horizon.back_open and not audit.horizon.forward_open,
        first_last_ratio=audit.ratio, plot_file=out_dir / PLOT_FILE,
        weight_gradients_file=norms_file)
