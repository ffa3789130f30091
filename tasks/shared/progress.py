"""Progress for long work: a rich bar on a terminal, a log line every 10% elsewhere (CI, Prefect)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("stethoscope")


def _interactive() -> bool:
    if os.environ.get("STETHOSCOPE_PROGRESS") == "0":
        return False
    return sys.stderr.isatty()


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """Yield `items`, showing progress out of `total`."""
    if _interactive():
        from rich.progress import track as rich_track

        yield from rich_track(items, total=total, description=description, transient=False)
        return
    next_mark = 0.1
    for done, item in enumerate(items, start=1):
        yield item
        if total and done / total >= next_mark - 1e-9:
            log.info("%s: %d/%d (%.0f%%)", description, done, total, 100 * done / total)
            while next_mark <= done / total + 1e-9:
                next_mark += 0.1
