"""great-expectations 1.x: run the versioned suites where it is cheap and render the Data Docs.

GX is the *reporting* layer of validation: the row gate (tasks/_validate_rules.py) decides what
is quarantined, vectorised over every row; GX runs its suite on a bounded systematic sample of
the rows as read (and on the small users table), in 64-bit dtypes with SUMMARY results, which
keeps it a fraction of a bare read (see ../shared/NOTES.md), and writes Data Docs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger("stethoscope.validate")


def load_suite_json(name: str) -> dict[str, Any]:
    """A suite as versioned in schemas/gx/<name>.json."""
    return json.loads(files("schemas").joinpath("gx", f"{name}.json").read_text())


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    evaluated: int
    successful: int
    failed: list[dict[str, Any]]  # one entry per failed expectation: type, column, counts


def run_suites(
    frames: dict[str, pd.DataFrame], parameters: dict[str, dict[str, Any]], docs_dir: Path
) -> list[SuiteOutcome]:
    """Validate each frame against the suite of the same name; Data Docs into `docs_dir`."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for noisy in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site(site_name="stethoscope", site_config={
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(Path(docs_dir).resolve())},
    })
    source = context.data_sources.add_pandas("stethoscope")
    outcomes = []
    for name, frame in frames.items():
        spec = load_suite_json(name)
        suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"],
                                    meta=spec.get("meta"))
        if len(suite.expectations) != len(spec["expectations"]):
            raise ValueError(f"schemas/gx/{name}.json: an expectation is not valid for this "
                             f"great-expectations version")
        suite = context.suites.add(suite)
        batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("sample")
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{name}_checkpoint", validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["stethoscope"])],
            result_format={"result_format": "SUMMARY"}))
        result = checkpoint.run(batch_parameters={"dataframe": frame},
                                expectation_parameters=parameters.get(name, {}))
        outcomes += [_outcome(name, run) for run in result.run_results.values()]
    return outcomes


def _outcome(name: str, run: Any) -> SuiteOutcome:
    failed = []
    for r in run.results:
        if r.success:
            continue
        exc = r.exception_info if isinstance(r.exception_info, dict) else {}
        failed.append({
            "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"),
            "unexpected_count": r.result.get("unexpected_count"),
            "unexpected_percent": r.result.get("unexpected_percent"),
            "error": exc.get("exception_message") if exc.get("raised_exception") else None,
        })
    stats = run.statistics
    return SuiteOutcome(name, bool(run.success), int(stats["evaluated_expectations"]),
                        int(stats["successful_expectations"]), failed)
