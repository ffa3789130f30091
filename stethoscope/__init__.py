"""stethoscope: nightly Prefect audits of deep networks trained on wearable heart-rate and step data.

The Python API (stethoscope/api.py):

    import stethoscope
    result = stethoscope.run("cohorts/demo", "runs/try-1")       # the whole nightly audit
    stethoscope.audit_model("model.keras", "cohorts/demo", "runs/audit-1")
    stethoscope.analyze("predictions.parquet", "runs/analysis-1")
    result.status, result.findings, result.report_path

The repository's top-level folders install under this namespace: `stethoscope.flows` (the Prefect
flows and the command line), `stethoscope.tasks` (one package per stage), `stethoscope.model`
(the Keras networks) and `stethoscope.schemas` (the data contracts). docs/architecture.md
describes how they fit together. Importing the package is cheap: the API loads Prefect and
TensorFlow only when called.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("stethoscope")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["AuditResult", "__version__", "analyze", "audit_model", "run"]


def __getattr__(name: str) -> Any:
    if name in ("AuditResult", "analyze", "audit_model", "run"):
        from stethoscope import api

        return getattr(api, name)
    raise AttributeError(f"module 'stethoscope' has no attribute {name!r}")
