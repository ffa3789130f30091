"""The gradient audit's Prefect task."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from prefect import task

from stethoscope.schemas.atomic import write_parquet_atomic
from stethoscope.schemas.summary import GradientsSection
from stethoscope.tasks.audits.gradients.audit import audit_gradients, profile_table
from stethoscope.tasks.audits.gradients.config import (
    DEFAULT_CONFIG,
    PLOT_FILE,
    PROFILE_FILE,
    WEIGHT_GRADIENTS_FILE,
    GradientsConfig,
    GradientsResult,
)
from stethoscope.tasks.audits.gradients.findings import (
    describe_output,
    gradient_findings,
    not_evaluated_finding,
)
from stethoscope.tasks.audits.gradients.plots import plot_gradient_profile
from stethoscope.tasks.audits.gradients.profile import (
    WEIGHT_GRADIENTS_SCHEMA,
    no_per_step_output,
    probed_output,
)
from stethoscope.tasks.shared.artifacts import publish_table
from stethoscope.tasks.shared.audited_model import load_audit_model
from stethoscope.tasks.shared.figures import save_png
from stethoscope.tasks.shared.store import audit_sample, store_stats


@task(name="gradients", task_run_name="gradients {model_path.name}")
def gradients_task(
    model_path: Path,
    store_dir: Path,
    out_dir: Path,
    config: GradientsConfig = DEFAULT_CONFIG,
    task_names: list[str] | None = None,
) -> GradientsResult:
    """Prefect shell: audit the model on the store's sample, write the profile (Parquet, PNG)
    and the weight-gradient norms under `out_dir`, return the record. A model without a
    per-step output is not audited (GRADIENTS_NOT_EVALUATED), so the run still reports."""
    model = load_audit_model(model_path, config.output_layer, num_channels=None)
    stats = store_stats(store_dir, model)
    if probed_output(model, config.output_layer) is None:
        return GradientsResult(
            section=GradientsSection(), findings=[not_evaluated_finding(
                no_per_step_output(model).message)], causal=False, first_last_ratio=None,
            plot_file=None, weight_gradients_file=None)
    batches = audit_sample(store_dir, config.split, config.max_user_weeks, config.batch_size,
                           "gradients")
    audit = audit_gradients(model, batches, config, stats.bin_seconds if stats else None)
    channels = stats.channels if stats else None
    task_name = task_names[config.task_index] if task_names else str(config.task_index)
    out_dir = Path(out_dir)
    profile_file = write_parquet_atomic(profile_table(audit.profile, channels),
                                        out_dir / PROFILE_FILE)
    save_png(plot_gradient_profile(audit, channels, config.required_context_hours),
             out_dir / PLOT_FILE)
    norms_file = write_parquet_atomic(
        pa.Table.from_pandas(audit.weight_gradients, schema=WEIGHT_GRADIENTS_SCHEMA,
                             preserve_index=False), out_dir / WEIGHT_GRADIENTS_FILE)
    h = audit.horizon
    publish_table("gradients-layers", audit.weight_gradients.round(8).to_dict(orient="records"),
                  f"Weight-gradient norms per layer (first/last RMS ratio {audit.ratio}); "
                  f"horizon {h.back} steps back, {h.forward} forward, {audit.horizon_hours:.1f} h")
    section = GradientsSection(
        output_layer=audit.profile.output_layer, task=task_name, timestep=audit.profile.timestep,
        horizon_steps_back=audit.horizon.back, horizon_steps_forward=audit.horizon.forward,
        horizon_hours=audit.horizon_hours, profile_file=str(profile_file))
    return GradientsResult(
        section=section, findings=gradient_findings(audit, config, task_name),
        causal=audit.horizon.back_open and not audit.horizon.forward_open,
        first_last_ratio=audit.ratio, plot_file=out_dir / PLOT_FILE,
        weight_gradients_file=norms_file,
        notes=[describe_output(audit, config, audit.profile.mean_abs.shape[0])])
