"""The gradient audit: how far the network's memory reaches (docs/architecture.md §1.1), and whether
gradients vanish or explode across its depth.

Input-gradient profile: g[u, t, c] = d output[u, t_mid, task] / d sequence[u, t, c] for every
user-week u of the sample, averaged over u as mean |g| and mean g. `output` is the model's
per-step output (tasks/shared/audited_model.py `per_step_output`): `output_layer` when set
(`task_index` picks its unit), else raw_output when the model has it (the default network),
else the last layer whose output [batch, T', units] keeps a time axis -- for any graph model:
functional, Sequential, nested. The outputs of different user-weeks do not interact, so the
gradient of sum_u output[u, t_mid, task] gives every user-week's gradient at once: ONE backward
pass per batch, reduced over the batch in-graph, so memory is O(T x C) whatever the sample
size. t_mid is the output's middle step (T' // 2) by default; when the output is shorter than
the input (pooling, strides: T' = T / 4 after two stride-2 convolutions), step t_mid is
centred on input step round((t_mid + 0.5) * T / T' - 0.5), and every horizon below is counted
in input steps.

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
L = mean over user-weeks of output[u, t_mid, task], w.r.t. the trainable weights of every
layer on the path from the sequence input to the output (the metadata branch is left out),
accumulated over the whole sample (O(model size) memory). A label-free loss, so no labels are
needed, and no second backward pass or trace: the audit stays close to one forward + backward.
Per layer: the L2 norm of those gradients and their RMS (norm / sqrt(number of weights),
comparable between layers of different sizes). ratio = RMS of the first layer / RMS of the
last one (the output): VANISHING_GRADIENTS below `vanishing_ratio` (1e-3), EXPLODING_GRADIENTS
above `exploding_ratio` (1e3).

The parts live in private modules: the profile (`GradientProfile`, `gradient_profile`: the
compiled backward pass and the walk over the model graph) in `tasks/audits/gradients/profile.py`, the
text of the findings in `tasks/audits/gradients/findings.py`, the profile plot in
`tasks/audits/gradients/plots.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import keras
import matplotlib
import numpy as np
import pyarrow as pa

from stethoscope.tasks.audits.gradients.config import (
    DEFAULT_CONFIG,
    PROFILE_SCHEMA,
    WEEK_SECONDS,
    GradientAudit,
    GradientProfile,
    GradientsConfig,
    Horizon,
)
from stethoscope.tasks.audits.gradients.findings import _first_last_ratio
from stethoscope.tasks.audits.gradients.plots import channel_names
from stethoscope.tasks.audits.gradients.profile import (
    forward_recurrence_only,
    gradient_profile,
)
from stethoscope.tasks.shared.audited_model import Batch

matplotlib.use("Agg")


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
    recurrent_forward = forward_recurrence_only(model, config.output_layer)
    causal = True if config.causal is None and recurrent_forward else config.causal
    horizon = dependency_horizon(profile.by_step, profile.center, config.decades, causal)
    bin_seconds = config.bin_seconds or bin_seconds or WEEK_SECONDS / profile.mean_abs.shape[0]
    return GradientAudit(profile, horizon, horizon.effective * bin_seconds / 3600.0, bin_seconds,
                         _first_last_ratio(profile.weight_gradients))


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
