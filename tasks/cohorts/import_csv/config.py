"""Configuration and result records of the CSV import."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from stethoscope.schemas.config import StageConfig


class ImportConfig(StageConfig):
    """Metadata the exports lack. None = take it from `users_csv`, else the default. Values are
    checked when the import starts (UsageError), like those of the users CSV."""

    timezone: str | None = None
    device: str | None = None
    age: float | None = None
    sex: Literal["F", "M", "U"] | None = None
    users_csv: Path | None = None


@dataclass(frozen=True)
class ChannelImport:
    """What happened to one export file."""

    channel: Channel
    file: str
    num_rows_read: int
    num_nonexistent: int
    num_ambiguous_resolved: int
    num_ambiguous_unresolved: int
    num_duplicates: int


@dataclass(frozen=True)
class UserImport:
    """One user's import: metadata, per-file counts, and the written table's shape."""

    profile: UserProfile
    channels: tuple[ChannelImport, ...]
    num_rows: int
    num_heart_rate: int
    num_steps: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None

    @property
    def missing_channels(self) -> tuple[Channel, ...]:
        present = {c.channel for c in self.channels}
        return tuple(c for c in CHANNELS if c not in present)

    def _total(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.channels)

    @property
    def num_nonexistent(self) -> int:
        return self._total("num_nonexistent")

    @property
    def num_ambiguous_resolved(self) -> int:
        return self._total("num_ambiguous_resolved")

    @property
    def num_ambiguous_unresolved(self) -> int:
        return self._total("num_ambiguous_unresolved")

    @property
    def num_duplicates(self) -> int:
        return self._total("num_duplicates")

    def describe(self) -> str:
        p = self.profile
        span = (
            f"{self.first_timestamp:%Y-%m-%d %H:%M:%S}..{self.last_timestamp:%Y-%m-%d %H:%M:%S} UTC"
            if self.first_timestamp and self.last_timestamp
            else "no samples"
        )
        return (
            f"{p.user_id}: {self.num_rows:,} rows (hr {self.num_heart_rate:,}, steps "
            f"{self.num_steps:,}), {span}, {p.timezone}, {p.device}; nonexistent "
            f"{self.num_nonexistent}, ambiguous {self.num_ambiguous_resolved} resolved + "
            f"{self.num_ambiguous_unresolved} unresolved, duplicates {self.num_duplicates}"
        )


@dataclass(frozen=True)
class ImportResult:
    """The cohort written and what happened to every user."""

    source: Path
    out: Path
    users: tuple[UserImport, ...]
    warnings: tuple[str, ...]
    seconds: float

    @property
    def num_rows(self) -> int:
        return sum(u.num_rows for u in self.users)

    def describe(self) -> str:
        lines = [
            f"{len(self.users)} users, {self.num_rows:,} rows from {self.source} "
            f"-> {self.out} in {self.seconds:.1f} s"
        ]
        lines += [f"  {u.describe()}" for u in self.users]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


Channel = Literal["heart_rate", "steps"]
CHANNELS: tuple[Channel, ...] = ("heart_rate", "steps")


@dataclass(frozen=True)
class UserProfile:
    """One user's resolved metadata."""

    user_id: str
    timezone: str
    device: str
    age: float | None
    sex: str
