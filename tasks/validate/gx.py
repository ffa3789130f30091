"""great-expectations 1.x: run the versioned suites where it is cheap and render the Data Docs.

GX is the *reporting* layer of validation: the row gate (tasks/validate/rules.py) decides what
is quarantined, vectorised over every row; GX runs its suite on a bounded systematic sample of
the rows as read (and on the small users table), in 64-bit dtypes with SUMMARY results, which
keeps it a fraction of a bare read (see ../shared/NOTES.md), and writes Data Docs.

Its cost is nearly all fixed (importing GX, ~0.1 s per suite whatever the rows, compiling the
Data Docs templates), so a `GxSession` starts on a background thread while the gate reads the
logs: it imports GX and validates the users table there; the sensor sample follows when the
gate is done, then the Data Docs are built once for both.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pandas as pd

if TYPE_CHECKING:  # GX itself is imported lazily (see GxSession)
    from great_expectations.data_context.store.store import DataDocsSiteConfigTypedDict

log = logging.getLogger("stethoscope.validate")

SITE = "stethoscope"


def load_suite_json(name: str) -> dict[str, Any]:
    """A suite as versioned in schemas/gx/<name>.json."""
    return json.loads(files("stethoscope.schemas").joinpath("gx", f"{name}.json").read_text())


@dataclass(frozen=True)
class SuiteOutcome:
    suite: str
    success: bool
    evaluated: int
    successful: int
    failed: list[dict[str, Any]]  # one entry per failed expectation: type, column, counts


class GxSession:
    """One ephemeral GX context writing Data Docs into `docs_dir`; used by one thread at a time."""

    def __init__(self, docs_dir: Path) -> None:
        _quiet_gx_loggers()  # before the import, which logs too
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _quiet_gx_loggers()  # and after it, which may have set its own levels

        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        # cast: GX's TypedDict lists only some of the keys a site config takes (its own note says)
        site_config = cast("DataDocsSiteConfigTypedDict", _site_config(docs_dir))
        self.context.add_data_docs_site(site_name=SITE, site_config=site_config)
        self._source = self.context.data_sources.add_pandas(SITE)
        self.outcomes: list[SuiteOutcome] = []

    def validate(self, name: str, frame: pd.DataFrame, parameters: dict[str, Any]) -> SuiteOutcome:
        """Validate `frame` against the suite schemas/gx/<name>.json."""
        gx = self._gx
        spec = load_suite_json(name)
        suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"],
                                    meta=spec.get("meta"))
        if len(suite.expectations) != len(spec["expectations"]):
            raise ValueError(f"schemas/gx/{name}.json: an expectation is not valid for this "
                             f"great-expectations version")
        suite = self.context.suites.add(suite)
        batch = self._source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("sample")
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        run = definition.run(batch_parameters={"dataframe": frame}, expectation_parameters=parameters,
                             result_format={"result_format": "SUMMARY"})
        self.outcomes.append(_outcome(name, run))
        return self.outcomes[-1]

    def build_docs(self) -> None:
        """Data Docs for every suite validated so far, built once."""
        self.context.build_data_docs(site_names=[SITE])


def _quiet_gx_loggers() -> None:
    for noisy in ("great_expectations", "great_expectations.data_context.types.base"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def start_session(docs_dir: Path, first: dict[str, tuple[pd.DataFrame, dict[str, Any]]]
                  ) -> Future[GxSession]:
    """A GxSession made on a background thread, which then validates the `first` frames."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="great-expectations")

    def start() -> GxSession:
        session = GxSession(docs_dir)
        for name, (frame, parameters) in first.items():
            session.validate(name, frame, parameters)
        return session

    future = pool.submit(start)
    pool.shutdown(wait=False)  # the thread ends with its one job
    return future


def _site_config(docs_dir: Path) -> dict[str, Any]:
    """A local Data Docs site whose pages compile their templates once per machine (see
    tasks/validate/gx_views.py); there are no profiling results, so no profiling section."""
    views = "stethoscope.tasks.validate.gx_views"
    return {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(Path(docs_dir).resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                               "view": {"module_name": views, "class_name": "CachedIndexPageView"}},
        "site_section_builders": {
            "expectations": {"view": {"module_name": views, "class_name": "CachedPageView"}},
            "validations": {"view": {"module_name": views, "class_name": "CachedPageView"}},
            "profiling": "None",  # GX spells "no section" as this string
        },
    }


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
