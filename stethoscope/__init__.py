"""stethoscope: nightly Prefect audits of deep networks trained on wearable heart-rate and step data.

The repository's top-level folders install under this namespace: `stethoscope.flows` (the Prefect
flows and the command line), `stethoscope.tasks` (one package per stage), `stethoscope.model`
(the Keras networks) and `stethoscope.schemas` (the data contracts). docs/architecture.md
describes how they fit together.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stethoscope")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
