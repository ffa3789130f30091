"""Typed errors.

`DataContractError` means the *input* broke a contract: retrying cannot help, so the retry
policy never retries it and the command line exits with status 2. Every error lists all of its
problems at once, each answering: what happened (file, column, rule), what was expected, how to
fix it.
"""

from __future__ import annotations

import errno
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


# Filesystem errors that no retry mends, with what to do about each: the disk or the path is not
# what the run needs (docs/architecture.md §6.1). Anything else an OSError says may pass.
_FILESYSTEM_FIXES = {
    errno.EROFS: "the file system is read-only: give a run directory on a writable disk",
    errno.ENOSPC: "the disk is full: free space or give a run directory on another disk",
    errno.EDQUOT: "the disk quota is used up: free space or give a run directory elsewhere",
    errno.ENOTDIR: "a file stands where a directory is needed: move it away or choose another path",
    errno.EISDIR: "a directory stands where a file is needed: move it away or choose another path",
    errno.EEXIST: "something already stands where a directory is needed: move it away",
    errno.EACCES: "permission denied: make the path readable/writable for this user",
    errno.EPERM: "operation not permitted: check the path's permissions and owner",
    errno.ENOENT: "it vanished while the run used it (deleted by hand?): restore it and re-run",
    errno.ENAMETOOLONG: "the path is too long: choose a shorter run directory or cohort path",
}


def permanent_filesystem_error(exc: BaseException) -> str | None:
    """For an OSError that no retry mends (read-only or full disk, not a directory, no
    permission...), one line naming the path, what happened and the fix; else None."""
    if not isinstance(exc, OSError) or exc.errno not in _FILESYSTEM_FIXES:
        return None
    path = exc.filename if exc.filename is not None else "(path unknown)"
    if exc.filename2 is not None:  # a rename or a link: both ends
        path = f"{path} -> {exc.filename2}"
    return f"{path}: {exc.strerror or exc}. Fix: {_FILESYSTEM_FIXES[exc.errno]}"
