"""The synthetic audit's Prefect task."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stethoscope.model.config import ModelConfig
from stethoscope.schemas.atomic import write_parquet_atomic
from stethoscope.tasks.audits.synthetic.audit import audit_synthetic, learnability_table
from stethoscope.tasks.audits.synthetic.config import (
    PLOT_FILE,
    TABLE_FILE,
    PretrainRecord,
    SyntheticAudit,
    SyntheticAuditResult,
    SyntheticConfig,
)
from stethoscope.tasks.audits.synthetic.evidence import METHOD
from stethoscope.tasks.audits.synthetic.findings import synthetic_findings
from stethoscope.tasks.audits.synthetic.plots import plot_learnability
from stethoscope.tasks.shared.artifacts import publish_table
from stethoscope.tasks.shared.figures import save_png


@task(name="synthetic")
def synthetic_task(store_dir: Path, out_dir: Path, config: SyntheticConfig,
                   model_config: ModelConfig, pretrain_record: Path | None = None
                   ) -> SyntheticAuditResult:
    """Prefect shell: audit the targets of the store, write the table and the bar plot under
    `out_dir`, publish a table artifact, return the record. `pretrain_record`: training's
    `pretrain_r2.json`, whose scores stand for the network's when it fits (audit.py)."""
    record = (PretrainRecord.model_validate_json(Path(pretrain_record).read_text())
              if pretrain_record is not None and Path(pretrain_record).exists() else None)
    audit = audit_synthetic(store_dir, config, model_config, record)
    out_dir = Path(out_dir)
    table_file = write_parquet_atomic(learnability_table(audit), out_dir / TABLE_FILE)
    save_png(plot_learnability(audit, config.r2_threshold), out_dir / PLOT_FILE)
    publish_table("synthetic-learnability", learnability_table(audit).to_pylist(),
                  f"R^2 on validation per synthetic target: {audit.network} vs "
                  f"{audit.reference} vs the train mean")
    return SyntheticAuditResult(results=[s.result() for s in audit.scores],
                                findings=synthetic_findings(audit, config),
                                table_file=table_file, plot_file=out_dir / PLOT_FILE,
                                note=audit_note(audit, config))


def audit_note(audit: SyntheticAudit, config: SyntheticConfig) -> str:
    """What was fitted, on how much, and how sure, for the report."""
    return f"{_fitted(audit, config)}; R² intervals: {METHOD} ({1 - config.alpha:.0%})"


def _fitted(audit: SyntheticAudit, config: SyntheticConfig) -> str:
    reference = ("" if audit.num_reference_user_weeks in (None, audit.num_train_user_weeks)
                 else f" (the {audit.reference} on {audit.num_reference_user_weeks})")
    if audit.pretrained:
        return (f"{audit.network}: from {audit.pretrained} (training's record, not trained "
                f"again); {audit.reference} fitted on {audit.num_reference_user_weeks} train "
                f"user-weeks (at most {config.epochs} epochs); scored on "
                f"{audit.num_val_user_weeks} validation user-weeks")
    return (f"{audit.network} and {audit.reference} fitted on {audit.num_train_user_weeks} "
            f"train / {audit.num_val_user_weeks} validation user-weeks{reference} "
            f"({audit.epochs_trained} of at most {config.epochs} epochs)")
