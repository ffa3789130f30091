"""Links to a run's files from the Prefect UI and from events: over `stethoscope serve`'s report
server when it runs, else file: URIs."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

REPORTS_URL_ENV = "STETHOSCOPE_REPORTS_URL"  # `stethoscope serve` serves reports over HTTP


def report_link(path: Path) -> str:
    """A link to a run file: over `stethoscope serve`'s report server when it runs (browsers
    do not follow file: links from a web page), else a file: URI."""
    base = os.environ.get(REPORTS_URL_ENV)
    resolved = Path(path).resolve()
    return f"{base.rstrip('/')}{quote(str(resolved))}" if base else resolved.as_uri()
