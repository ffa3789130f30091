"""The variant comparison's Prefect tasks: give a variant's run directory the shared store, and
compare the finished variants."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from prefect import task

from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.shared.artifacts import publish_table
from stethoscope.tasks.variants.config import ComparisonResult, VariantRun, VariantsConfig
from stethoscope.tasks.variants.report import write_comparison


@task(name="share-store", task_run_name="share the store with {run_dir.name}")
def share_store_task(run_dir: Path, data_run: Path) -> Path:
    """Link `<run_dir>/sequences` to the data run's store (relative, so the comparison directory
    can move): every variant trains and is audited on the same user-weeks."""
    run, data = RunPaths(Path(run_dir)), RunPaths(Path(data_run))
    run.root.mkdir(parents=True, exist_ok=True)
    if run.sequences.is_symlink() or not run.sequences.exists():
        if run.sequences.is_symlink():
            run.sequences.unlink()
        run.sequences.symlink_to(os.path.relpath(data.sequences, run.root))
    return run.sequences


@task(name="compare-variants")
def compare_variants_task(out_dir: Path, runs: Sequence[VariantRun], config: VariantsConfig,
                          num_steps: int | None = None) -> ComparisonResult:
    result = write_comparison(out_dir, runs, config, num_steps)
    publish_table("variant-comparison", [
        {"variant": v.name, **{m.measure: m.value for m in v.measures}} for v in result.variants],
        "One row per variant; comparison.html marks the best and the differences beyond noise")
    return result
