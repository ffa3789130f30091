"""Links to a run's files: from the Prefect UI and from events (over `stethoscope serve`'s report
server when it runs, else file: URIs), and from report.html to what it summarises (the
great-expectations Data Docs, the TensorBoard logs, each stage's tables), found under the
run's directories as `RunPaths` names them."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from stethoscope.schemas.layout import RunPaths

REPORTS_URL_ENV = "STETHOSCOPE_REPORTS_URL"  # `stethoscope serve` serves reports over HTTP
_TABLES = ("*.parquet", "*.json")


@dataclass(frozen=True)
class RunFile:
    """A file (or directory) of the run that report.html links, under its report section.
    `href` is relative to the run directory (report.html lives at its root); `command` opens
    it when a browser cannot (TensorBoard)."""

    section: str
    label: str
    href: str
    path: Path
    command: str = ""


def report_link(path: Path) -> str:
    """A link to a run file: over `stethoscope serve`'s report server when it runs (browsers
    do not follow file: links from a web page), else a file: URI."""
    base = os.environ.get(REPORTS_URL_ENV)
    resolved = Path(path).resolve()
    return f"{base.rstrip('/')}{quote(str(resolved))}" if base else resolved.as_uri()


def run_files(run: RunPaths) -> list[RunFile]:
    """What the stages of a run wrote for a reader to open, per section, the files that exist
    only: Data Docs and the validation report, the user-week table, the TensorBoard logs and
    the training history, each audit's tables, the predictions and the analysis tables."""
    found = [
        *_existing(run, "data", [run.data_docs / "index.html"], "great-expectations Data Docs"),
        *_existing(run, "data", [run.validation_report, run.user_weeks]),
        *_tensorboard(run),
        *_existing(run, "training", sorted(run.model_dir.glob("*.json"))),
        *_existing(run, "predictions", [run.predictions]),
        *_existing(run, "predictions", _tables_in(run.analysis)),
    ]
    audits = sorted(p for p in run.audits.iterdir() if p.is_dir()) if run.audits.is_dir() else []
    for audit in audits:  # audits/<section>/: synthetic, activations, gradients
        found += _existing(run, audit.name, _tables_in(audit))
    return found


def _existing(run: RunPaths, section: str, paths: Iterable[Path], label: str = "") -> list[RunFile]:
    return [RunFile(section, label or path.name, _href(run, path), path)
            for path in paths if path.is_file()]


def _tables_in(directory: Path) -> list[Path]:
    return sorted(p for pattern in _TABLES for p in directory.glob(pattern)
                  if not p.name.startswith("."))


def _tensorboard(run: RunPaths) -> list[RunFile]:
    """The log directory holding every TensorBoard event file training wrote (one
    subdirectory per phase), with the command that opens it."""
    events = sorted(run.model_dir.rglob("events.out.tfevents.*")) if run.model_dir.is_dir() else []
    if not events:
        return []
    logdir = Path(os.path.commonpath([p.parent for p in events]))
    if logdir.name in {"train", "validation"}:  # a single phase: its train/ and validation/
        logdir = logdir.parent
    command = f"tensorboard --logdir {shlex.quote(str(logdir.resolve()))}"
    return [RunFile("training", "TensorBoard logs", _href(run, logdir), logdir, command)]


def _href(run: RunPaths, path: Path) -> str:
    return quote(Path(path).relative_to(run.root).as_posix())
