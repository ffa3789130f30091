"""Run history: one row per run in `<runs_dir>/history.parquet`, next to the run directories.

A row holds what a trend needs (data counts, dead share per layer, the gradient horizon, AUROC
per task, flagged strata, finding keys, status), so the report can compare a run with earlier
ones without opening their directories, which may be gone. The report stage appends the row of
its run — replacing an earlier row of the same run id, so a retried or resumed run stays one
row — under a lock, and rewrites the file atomically, so two runs finishing together cannot
lose each other's rows and a crash never leaves half a file.

"New since the last run" compares with the previous run of the same flow (a nightly audit with
the previous nightly audit): a finding is identified by `stage:CODE`, a flagged stratum by
`column=value · task`.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from stethoscope.schemas.atomic import write_parquet_atomic
from stethoscope.schemas.summary import Summary
from stethoscope.tasks.report.config import (
    HISTORY,
    HISTORY_FILE,
    TREND_RUNS,
    HistoryRow,
    Trend,
    finding_key,
    stratum_key,
)
from stethoscope.tasks.shared.figures import save_png

log = logging.getLogger("stethoscope.history")

def history_file(runs_dir: Path) -> Path:
    return Path(runs_dir) / HISTORY_FILE


def history_row(summary: Summary, flow: str = "") -> HistoryRow:
    """The history row of a run (infos are not findings worth a trend: errors and warnings)."""
    return HistoryRow(
        run_id=summary.run_id, status=summary.status, flow=flow,
        started_at=summary.started_at, finished_at=summary.finished_at,
        **summary.data.model_dump(),
        dead_share={layer.name: layer.dead_fraction for layer in summary.activations.layers},
        horizon_hours=summary.gradients.horizon_hours,
        auroc={t.task: t.auroc for t in summary.predictions.tasks},
        flagged_strata=tuple(sorted(stratum_key(s) for s in summary.predictions.strata if s.flagged)),
        findings=tuple(sorted({finding_key(f) for f in summary.findings if f.severity != "info"})),
        reference=summary.comparison.reference.run_id if summary.comparison.reference else None,
        regressions=sum(f.code == "REGRESSION" and f.severity != "info" for f in summary.findings),
        drifted=sum(f.code == "DATA_DRIFT" for f in summary.findings),
    )


def compare(current: HistoryRow, earlier: list[HistoryRow], keep: int = TREND_RUNS) -> Trend:
    """The trend of `current` against `earlier` rows (any order, other run ids)."""
    same_flow = sorted((r for r in earlier if r.flow == current.flow and r.run_id != current.run_id
                        and r.finished_at <= current.finished_at), key=lambda r: r.finished_at)
    previous = same_flow[-1] if same_flow else None
    if previous is None:
        return Trend(rows=[current], previous=None)
    return Trend(rows=[*same_flow[-(keep - 1):], current] if keep > 1 else [current],
                 previous=previous,
                 new_findings=frozenset(current.findings) - frozenset(previous.findings),
                 new_strata=frozenset(current.flagged_strata) - frozenset(previous.flagged_strata))


def read_history(path: Path) -> list[HistoryRow]:
    """Every row of a history file; [] when there is none yet."""
    path = Path(path)
    if not path.exists():
        return []
    table = pq.read_table(path)
    return [_row_of(record) for record in table.to_pylist()]


def append_history(path: Path, row: HistoryRow) -> list[HistoryRow]:
    """Add `row` to the history file (replacing a row of the same run id); return the other
    rows. An unreadable history file is moved aside (named in a warning), not lost."""
    path = Path(path)
    with _locked(path):
        try:
            earlier = [r for r in read_history(path) if r.run_id != row.run_id]
        except (OSError, pa.ArrowException, KeyError, TypeError) as exc:
            aside = path.with_name(f"{path.name}.unreadable-{datetime.now(UTC):%Y%m%d%H%M%S}")
            path.rename(aside)
            log.warning("history %s could not be read (%s); moved it to %s and started a new one",
                        path, exc, aside)
            earlier = []
        rows = sorted([*earlier, row], key=lambda r: r.finished_at)
        table = pa.Table.from_pylist([_record_of(r) for r in rows], schema=HISTORY)
        write_parquet_atomic(table, path)
    return earlier


def record_run(summary: Summary, runs_dir: Path, flow: str = "") -> Trend:
    """Append the run's row to `<runs_dir>/history.parquet` and compare it with earlier runs."""
    row = history_row(summary, flow)
    return compare(row, append_history(history_file(runs_dir), row))


def plot_trend(trend: Trend, out: Path) -> Path | None:
    """AUROC per task, the largest dead share and the gradient horizon over the shown runs;
    None when there is nothing to compare yet (a single run)."""
    if len(trend.rows) < 2:
        return None
    from matplotlib.figure import Figure


    x = list(range(len(trend.rows)))
    labels = [f"{r.finished_at:%m-%d %H:%M}" for r in trend.rows]
    fig = Figure(figsize=(9, 3))
    auroc_ax, dead_ax, horizon_ax = fig.subplots(1, 3)
    for task in trend.tasks:
        auroc_ax.plot(x, [r.auroc.get(task) if r.auroc.get(task) is not None else float("nan")
                          for r in trend.rows], marker="o", label=task)
    auroc_ax.set_title("AUROC per task", fontsize=9)
    if trend.tasks:
        auroc_ax.legend(fontsize=7)
    dead_ax.plot(x, [(r.worst_dead or ("", float("nan")))[1] for r in trend.rows], marker="o")
    dead_ax.set_title("largest dead share of a layer", fontsize=9)
    horizon_ax.plot(x, [r.horizon_hours if r.horizon_hours is not None else float("nan")
                        for r in trend.rows], marker="o")
    horizon_ax.set_title("gradient horizon (hours)", fontsize=9)
    for ax in (auroc_ax, dead_ax, horizon_ax):
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    return save_png(fig, out, dpi=80)


# --- private helpers --------------------------------------------------------------------


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `<path>.lock` for a read-modify-write of `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record_of(row: HistoryRow) -> dict:
    record = asdict(row)
    record["dead_share"] = list(row.dead_share.items())
    record["auroc"] = list(row.auroc.items())
    record["flagged_strata"] = list(row.flagged_strata)
    record["findings"] = list(row.findings)
    return record


def _row_of(record: dict) -> HistoryRow:
    known = {name: record[name] for name in HistoryRow.__dataclass_fields__ if name in record}
    known["flow"] = known.get("flow") or ""
    for name in ("dead_share", "auroc"):
        known[name] = dict(known.get(name) or [])
    for name in ("flagged_strata", "findings"):
        known[name] = tuple(known.get(name) or ())
    for name in ("rows_in", "rows_clean", "rows_quarantined", "users", "user_weeks",
                 "regressions", "drifted"):
        known[name] = known.get(name) or 0
    return HistoryRow(**known)
