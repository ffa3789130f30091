"""Progress for long work: a rich bar on a terminal, a log line every 10% elsewhere (CI, Prefect)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import keras

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


def epoch_logger(logger: logging.Logger, what: str, total_epochs: int, steps_per_epoch: int
                 ) -> keras.callbacks.Callback:
    """A Keras callback that logs one line per epoch: `what: epoch 3/12 (40 batches, 2.1 s):
    loss 0.412, val_loss 0.455`. Long fits show progress in the terminal and the run's logs."""
    import time

    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            values = ", ".join(f"{k} {v:.4g}" for k, v in (logs or {}).items()
                               if k in ("loss", "val_loss"))
            logger.info("%s: epoch %d/%d (%d batches, %.1f s): %s", what, epoch + 1,
                        total_epochs, steps_per_epoch, time.perf_counter() - self.started, values)

    return EpochLog()


def log_every(items: Iterable[T], describe: Callable[[int], str], logger: logging.Logger,
              seconds: float = 10.0) -> Iterator[T]:
    """Yield `items`; log `describe(done)` (done = items so far) at most every `seconds`, and
    once at the end: progress for loops whose length is not known up front."""
    import time

    started = last = time.perf_counter()
    done = 0
    for done, item in enumerate(items, start=1):  # noqa: B007 - `done` is read after the loop
        yield item
        now = time.perf_counter()
        if now - last >= seconds:
            logger.info("%s (%.0f s)", describe(done), now - started)
            last = now
    logger.info("%s (%.0f s, done)", describe(done), time.perf_counter() - started)
