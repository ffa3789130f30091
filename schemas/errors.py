"""Typed errors.

`DataContractError` means the *input* broke a contract: retrying cannot help, so the retry
policy never retries it and the command line exits with status 2. Every error lists all of its
problems at once, each answering: what happened (file, column, rule), what was expected, how to
fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Problem:
    """One broken rule, located as precisely as we can."""

    rule: str
    message: str
    fix: str
    file: str | None = None
    column: str | None = None
    count: int | None = None

    def render(self) -> str:
        where = ", ".join(
            part
            for part in (
                f"file {self.file}" if self.file else "",
                f"column {self.column!r}" if self.column else "",
                f"rule {self.rule}",
                f"{self.count:,} rows" if self.count is not None else "",
            )
            if part
        )
        return f"{where}: {self.message} Fix: {self.fix}"


class StethoscopeError(Exception):
    """Base of every error stethoscope raises on purpose."""


@dataclass
class DataContractError(StethoscopeError):
    """The input data or a persisted table breaks its contract. Never retried; exit status 2."""

    summary: str
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [self.summary]
        lines += [f"  - {p.render()}" for p in self.problems]
        return "\n".join(lines)


class UsageError(StethoscopeError):
    """Bad command-line usage or configuration. Never retried; exit status 2."""
