"""The comparison's files: comparison.json, the plots and comparison.html in the comparison
directory, each variant's run directory beside them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from stethoscope.schemas.atomic import write_json_atomic
from stethoscope.tasks.variants import html, plots
from stethoscope.tasks.variants.compare import compare_variants
from stethoscope.tasks.variants.config import (
    COMPARISON_HTML,
    COMPARISON_JSON,
    ComparisonResult,
    VariantRun,
    VariantsConfig,
)

log = logging.getLogger("stethoscope.variants")

METHOD_ONE_SEED = ("AUROC against the best variant's on the same user-weeks, paired BCa "
                   "interval over user-level bootstrap resamples excluding zero; other measures "
                   "have no noise estimate with one seed (ask for --seeds 2 or more)")
METHOD_SEEDS = ("AUROC as with one seed (the widest interval over seeds); every measure: the "
                "variant's range over seeds does not overlap the best variant's")


def write_comparison(out_dir: Path, runs: Sequence[VariantRun], config: VariantsConfig,
                     num_steps: int | None = None) -> ComparisonResult:
    out_dir = Path(out_dir)
    variants = compare_variants(runs, config)
    seeds = max(len(v.run_dirs) for v in variants)
    method = METHOD_SEEDS if seeds > 1 else METHOD_ONE_SEED
    figures = plots.plot_all(variants, out_dir / "plots", num_steps)
    comparison_json = write_json_atomic(
        {"variants": [v.model_dump(mode="json") for v in variants], "method": method,
         "seeds": seeds}, out_dir / COMPARISON_JSON)
    page = html.render(variants, figures, out_dir / COMPARISON_HTML, method, seeds)
    log.info("comparison of %d variants: %s", len(variants), page)
    return ComparisonResult(variants=variants, comparison_json=comparison_json,
                            comparison_html=page, figures=[p for _, p, _ in figures],
                            method=method)
