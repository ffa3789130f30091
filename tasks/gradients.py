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
import tensorflow as tf
from matplotlib.figure import Figure
from prefect import task
from pydantic import BaseModel, ConfigDict, Field

from schemas.config import StageConfig
from schemas.sequence_store import CHANNELS, OPTIONAL_CHANNELS
from schemas.summary import Finding, GradientsSection
from tasks._batches import (
    Batch,
    check_audit_model,
    iter_model_inputs,
    iter_store_batches,
    load_audit_model,
    store_stats,
)
from tasks.io import atomic_path, write_parquet_atomic

matplotlib.use("Agg")
log = logging.getLogger("stethoscope.gradients")
STAGE = "gradients"
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
WEIGHT_GRADIENTS_SCHEMA = pa.schema(
    [
        pa.field("layer", pa.string(), nullable=False),
        pa.field("num_weights", pa.int64(), nullable=False),
        pa.field("grad_norm", pa.float64(), nullable=False),
        pa.field("grad_rms", pa.float64(), nullable=False),
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
class GradientProfile:
    """Mean |g| and mean g [T, C] over `num_user_weeks`; `center` is t_mid in input steps;
    `weight_gradients` the per-layer norms (WEIGHT_GRADIENTS_SCHEMA, sequence input first)."""

    mean_abs: np.ndarray
    mean_signed: np.ndarray
    timestep: int
    center: int
    num_user_weeks: int
    weight_gradients: pd.DataFrame

    @property
    def by_step(self) -> np.ndarray:
        """p[t] = sum over channels of mean |g|: [T]."""
        return self.mean_abs.sum(axis=1)


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


def gradient_profile(
    model: keras.Model,
    batches: Iterable[Batch],
    output_layer: str = "raw_output",
    task_index: int = 0,
    timestep: int | None = None,
) -> GradientProfile:
    """Average d output_layer[:, timestep, task_index] / d sequence (and / d weights) over the
    user-weeks of `batches`, one backward pass per batch."""
    check_audit_model(model, output_layer)
    probe = keras.Model(model.inputs, model.get_layer(output_layer).output)
    out_steps, num_tasks = probe.outputs[0].shape[1], probe.outputs[0].shape[2]
    if task_index >= num_tasks:
        raise ValueError(f"task_index {task_index} is out of range: {output_layer!r} has "
                         f"{num_tasks} task(s); use 0..{num_tasks - 1}")
    layers = [layer for layer in _sequence_path(model, output_layer) if layer.trainable_weights]
    sums: list[np.ndarray] | None = None  # [sum |g|, sum g, sum dL/dw per variable...]
    num_user_weeks, gradient_sums = 0, None
    for inputs in iter_model_inputs(batches, model):
        steps = inputs[0].shape[1]
        out_steps = out_steps or steps
        if gradient_sums is None:
            timestep = out_steps // 2 if timestep is None else timestep
            if not 0 <= timestep < out_steps:
                raise ValueError(f"timestep {timestep} is outside {output_layer!r}'s "
                                 f"0..{out_steps - 1}")
            gradient_sums = _gradient_sums_fn(probe, timestep, task_index, layers)
        batch_sums = [x.numpy().astype(np.float64) for x in gradient_sums(inputs)]
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums,
                                                                      strict=True)]
        num_user_weeks += len(inputs[0])
    if sums is None:
        raise ValueError("gradient_profile got no batches; give it at least one user-week")
    center = int(round((timestep + 0.5) * steps / out_steps - 0.5))
    abs_sum, signed_sum, *weight_sums = sums
    return GradientProfile(abs_sum / num_user_weeks, signed_sum / num_user_weeks, timestep,
                           center, num_user_weeks,
                           _weight_norms(layers, [w / num_user_weeks for w in weight_sums]))


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
    causal = True if config.causal is None and _forward_recurrence_only(model) else config.causal
    horizon = dependency_horizon(profile.by_step, profile.center, config.decades, causal)
    bin_seconds = config.bin_seconds or bin_seconds or WEEK_SECONDS / profile.mean_abs.shape[0]
    return GradientAudit(profile, horizon, horizon.effective * bin_seconds / 3600.0, bin_seconds,
                         _first_last_ratio(profile.weight_gradients))


def gradient_findings(
    audit: GradientAudit, config: GradientsConfig = DEFAULT_CONFIG, task: str | None = None
) -> list[Finding]:
    """SHORT_MEMORY, VANISHING_GRADIENTS, EXPLODING_GRADIENTS."""
    findings = []
    h, p = audit.horizon, audit.profile
    if audit.horizon_hours < config.required_context_hours:
        findings.append(Finding(
            stage=STAGE, severity="warning", code="SHORT_MEMORY",
            message=f"d {config.output_layer}[t={p.timestep}, task {task or config.task_index}]"
            f" / d input stays above 1e-{config.decades:g} x its peak over {_sides(h)}: "
            f"{audit.horizon_hours:.1f} h of context, but the task needs "
            f"{config.required_context_hours:g} h.",
            recommendation="Give the network longer memory: a bidirectional LSTM/GRU probed at "
            "the middle, dilated or strided convolutions (or pooling) before the recurrent "
            "layer so it sees fewer, longer steps, or a global path (pooling/attention over "
            "the whole week).",
        ))
    if audit.ratio is not None and audit.ratio < config.vanishing_ratio:
        findings.append(_ratio_finding("VANISHING_GRADIENTS", audit, "Add residual or skip "
                        "connections and normalisation layers, prefer LSTM/GRU over simple RNNs,"
                        " use Glorot/He initialisation and non-saturating activations."))
    if audit.ratio is not None and audit.ratio > config.exploding_ratio:
        findings.append(_ratio_finding("EXPLODING_GRADIENTS", audit, "Clip gradients "
                        "(clipnorm), lower the learning rate, add normalisation layers and "
                        "check the initialisation scale."))
    return findings


def profile_table(profile: GradientProfile, channels: Sequence[str] | None = None) -> pa.Table:
    """The profile in long format (PROFILE_SCHEMA): one row per (t, channel)."""
    steps, num_channels = profile.mean_abs.shape
    names = list(channels) if channels else _channel_names(num_channels)
    t = np.repeat(np.arange(steps, dtype=np.int32), num_channels)
    return pa.table({
        "t": t,
        "offset": (t - profile.center).astype(np.int32),
        "channel": np.tile(np.asarray(names, dtype=object), steps),
        "mean_abs": profile.mean_abs.ravel(),
        "mean_signed": profile.mean_signed.ravel(),
    }, schema=PROFILE_SCHEMA)


def plot_gradient_profile(audit: GradientAudit, channels: Sequence[str] | None = None) -> Figure:
    """mean |g| summed over channels (and per channel) vs offset from t_mid, log scale, with the
    threshold and the horizon on both sides marked."""
    p, h = audit.profile, audit.horizon
    offsets = np.arange(p.mean_abs.shape[0]) - p.center
    names = list(channels) if channels else _channel_names(p.mean_abs.shape[1])
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
    ax.secondary_xaxis("top", functions=(lambda x: x * hours, lambda x: x / hours)).set_xlabel(
        "offset (hours)")
    ax.set_xlabel("offset from t_mid (input steps)")
    ax.set_ylabel("mean |d raw_output[t_mid] / d input[t]|")
    ax.set_title(f"horizon: {h.back} steps back, {h.forward} forward "
                 f"(effective {audit.horizon_hours:.1f} h)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return fig


# --- private helpers -------------------------------------------------------------------------


def _gradient_sums_fn(
    probe: keras.Model, timestep: int, task_index: int, layers: list[keras.layers.Layer]
):
    """Compiled (one trace): model inputs -> [sum_u |g|, sum_u g] ([T, C] each) and the sum over
    user-weeks of d target / d w for every trainable weight of `layers`, from ONE backward
    pass of target = sum_u raw_output[u, timestep, task_index]."""
    variables = [v for layer in layers for v in layer.trainable_weights]

    @tf.function(input_signature=[_input_signature(probe)])
    def gradient_sums(inputs: list[tf.Tensor]) -> list[tf.Tensor]:
        sequence = inputs[0]
        with tf.GradientTape() as tape:
            tape.watch(sequence)
            output = probe([sequence, *inputs[1:]], training=False)  # [b, T', tasks]
            target = tf.reduce_sum(output[:, timestep, task_index])
        grad, *weight_grads = tape.gradient(target, [sequence, *variables])  # grad: [b, T, C]
        if grad is None:  # the output does not depend on the sequence at all
            grad = tf.zeros_like(sequence)
        weight_grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                        for v, g in zip(variables, weight_grads, strict=True)]
        return [tf.reduce_sum(tf.abs(grad), axis=0), tf.reduce_sum(grad, axis=0), *weight_grads]

    return gradient_sums


def _weight_norms(layers: list[keras.layers.Layer], grads: list[np.ndarray]) -> pd.DataFrame:
    rows, grads = [], iter(grads)
    for layer in layers:
        total = sum(float(np.square(next(grads)).sum()) for _ in layer.trainable_weights)
        size = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
        rows.append({"layer": layer.name, "num_weights": size, "grad_norm": total ** 0.5,
                     "grad_rms": (total / size) ** 0.5})
    return pd.DataFrame(rows, columns=WEIGHT_GRADIENTS_SCHEMA.names)


def _input_signature(model: keras.Model) -> list[tf.TensorSpec]:
    """Any batch size, the model's own T (or any T) and features: one trace per audit."""
    return [tf.TensorSpec((None, *t.shape[1:]), tf.float32) for t in model.inputs]


def _sequence_path(model: keras.Model, output_layer: str) -> list[keras.layers.Layer]:
    """Layers downstream of the sequence input, up to and including `output_layer`, in the
    model's (topological) order; the metadata branch is left out."""
    reached = {id(model.inputs[0]._keras_history.operation)}
    path = []
    for operation in model.operations:
        if not operation._inbound_nodes:
            continue
        parents = operation._inbound_nodes[0].input_tensors
        if any(id(t._keras_history.operation) in reached for t in parents):
            reached.add(id(operation))
            if isinstance(operation, keras.layers.Layer):
                path.append(operation)
        if operation.name == output_layer:
            break
    return path


def _forward_recurrence_only(model: keras.Model) -> bool:
    """True when the model has recurrent layers and every one runs forward in time only."""
    recurrent = [layer for layer in model.layers
                 if isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional)]
    return bool(recurrent) and all(
        isinstance(layer, keras.layers.RNN) and not layer.go_backwards for layer in recurrent)


def _sides(h: Horizon) -> str:
    if h.back_open and h.forward_open:
        return f"{h.back} steps back and {h.forward} forward"
    if h.back_open:
        return (f"{h.back} steps back (a causal model: only the past counts, the "
                f"{h.forward} steps forward are ignored)")
    if h.forward_open:
        return f"{h.forward} steps forward (the backward gradient is exactly zero)"
    return "no step but t_mid itself (the output does not depend on the input)"


def _first_last_ratio(norms: pd.DataFrame) -> float | None:
    if len(norms) < 2 or norms["grad_rms"].iloc[-1] == 0:
        return None
    return float(norms["grad_rms"].iloc[0] / norms["grad_rms"].iloc[-1])


def _ratio_finding(code: str, audit: GradientAudit, recommendation: str) -> Finding:
    norms = audit.weight_gradients
    first, last = norms.iloc[0], norms.iloc[-1]
    return Finding(
        stage=STAGE, severity="warning", code=code,
        message=f"Weight-gradient RMS of {first['layer']} is {audit.ratio:.2g} x that of "
        f"{last['layer']} ({first['grad_rms']:.2e} vs {last['grad_rms']:.2e}; gradients of "
        f"the mean of raw_output at t_mid over {audit.profile.num_user_weeks} user-weeks).",
        recommendation=recommendation,
    )


def _channel_names(num_channels: int) -> list[str]:
    known = list(CHANNELS + OPTIONAL_CHANNELS)
    if num_channels <= len(known):
        return known[:num_channels]
    return [f"channel_{c}" for c in range(num_channels)]


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
