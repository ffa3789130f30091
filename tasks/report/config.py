"""Records of the report stage: the history table's schema and rows, and the trend of a run
against earlier runs of the same flow (report/history.py reads and writes them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from stethoscope.schemas.summary import Finding, StratumMetrics

HISTORY_FILE = "history.parquet"
TREND_RUNS = 10  # rows shown in a report's trend: this run and up to 9 before it

HISTORY = pa.schema([
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("flow", pa.string()),  # Prefect flow name, e.g. nightly-model-audit
    pa.field("status", pa.string(), nullable=False),
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
    pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("rows_in", pa.int64()),
    pa.field("rows_clean", pa.int64()),
    pa.field("rows_quarantined", pa.int64()),
    pa.field("users", pa.int64()),
    pa.field("user_weeks", pa.int64()),
    pa.field("dead_share", pa.map_(pa.string(), pa.float64())),  # layer -> dead fraction
    pa.field("horizon_hours", pa.float64()),
    pa.field("auroc", pa.map_(pa.string(), pa.float64())),  # task -> AUROC, null: not evaluable
    pa.field("flagged_strata", pa.list_(pa.string())),  # stratum keys
    pa.field("findings", pa.list_(pa.string())),  # finding keys, errors and warnings
    pa.field("reference", pa.string()),  # run id the gate compared with; null: none
    pa.field("regressions", pa.int64()),  # REGRESSION findings (errors and warnings)
    pa.field("drifted", pa.int64()),  # DATA_DRIFT findings
])


@dataclass(frozen=True)
class HistoryRow:
    """One run, as the history table stores it."""

    run_id: str
    status: str
    finished_at: datetime
    flow: str = ""
    started_at: datetime | None = None
    rows_in: int = 0
    rows_clean: int = 0
    rows_quarantined: int = 0
    users: int = 0
    user_weeks: int = 0
    dead_share: dict[str, float] = field(default_factory=dict)
    horizon_hours: float | None = None
    auroc: dict[str, float | None] = field(default_factory=dict)
    flagged_strata: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()
    reference: str | None = None
    regressions: int = 0
    drifted: int = 0

    @property
    def worst_dead(self) -> tuple[str, float] | None:
        """(layer, share) of the layer with the largest dead share."""
        return max(self.dead_share.items(), key=lambda kv: kv[1]) if self.dead_share else None


@dataclass(frozen=True)
class Trend:
    """This run against earlier ones: the rows to show (oldest first, this run last), the run
    compared with, and what is new since it."""

    rows: list[HistoryRow]
    previous: HistoryRow | None
    new_findings: frozenset[str] = frozenset()
    new_strata: frozenset[str] = frozenset()

    @property
    def tasks(self) -> list[str]:
        """Every task with an AUROC in any shown row, sorted: the trend table's columns."""
        return sorted({t for r in self.rows for t in r.auroc})

    def is_new(self, item: Finding | StratumMetrics) -> bool:
        if isinstance(item, Finding):
            return finding_key(item) in self.new_findings
        return item.flagged and stratum_key(item) in self.new_strata


def finding_key(finding: Finding) -> str:
    return f"{finding.stage}:{finding.code}"


def stratum_key(stratum: StratumMetrics) -> str:
    return f"{stratum.column}={stratum.value} · {stratum.task}"
