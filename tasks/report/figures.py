"""Which figures report.html embeds and which only the gallery beside it shows.

A run can hand over hundreds of figures (a week plot per top row of every task and kind); one
file that embeds them all is ten megabytes and sixty screens. So report.html embeds every
other figure and a handful of week plots per kind (false negatives and false positives
first), within what its text leaves of 1.9 MB; the gallery file beside it embeds all week
plots and whatever the budget left out. Prediction figures are grouped by the task their file
is named after. Pure functions over `Figure` records: only file sizes and, for data URIs,
file contents are read.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stethoscope.schemas.outcome import Figure

# A week plot of analyze: `<task>_<kind>_<rank>.png` (rank 1 = the most egregious row).
_WEEK_PLOT = re.compile(r"^(?P<task>.+)_(?P<kind>FN|FP|TP|TN)_(?P<rank>\d+)$")
WEEK_KINDS = ("FN", "FP", "TP", "TN")  # errors first: what a reader looks at
WEEK_PLOTS_PER_KIND = 2  # embedded in report.html; all of them are in the gallery
# report.html at most, in bytes: what the text leaves of it goes to embedded PNGs (base64
# adds a third), so the report stays under 2 MB whatever the stages hand over.
REPORT_BYTES = 1_900_000


@dataclass(frozen=True)
class WeekPlot:
    """A figure that is a week plot: of which task (as named in the file), kind and rank."""

    figure: Figure
    task: str
    kind: str
    rank: int


@dataclass(frozen=True)
class FigurePlan:
    """What report.html embeds, and what the gallery shows (all week plots, in task and kind
    order, and every figure the budget left out of the report)."""

    inline: list[Figure]
    gallery: list[Figure]
    weeks: list[WeekPlot]

    @property
    def left_out(self) -> list[Figure]:
        """Figures that are not week plots and only the gallery shows."""
        weeks = {w.figure for w in self.weeks}
        return [f for f in self.gallery if f not in weeks]

    def weeks_inline(self) -> list[WeekPlot]:
        inline = set(self.inline)
        return [w for w in self.weeks if w.figure in inline]


def week_plot(figure: Figure) -> WeekPlot | None:
    """The week plot `figure` is, by its file name; None for any other figure."""
    match = _WEEK_PLOT.match(Path(figure.path).stem)
    if match is None:
        return None
    return WeekPlot(figure, match["task"], match["kind"], int(match["rank"]))


def task_of(figure: Figure, tasks: Sequence[str]) -> str | None:
    """The task a figure is about: the longest task name (as a file name spells it) that is a
    whole `_`-separated part of the file's name; None for a figure of no single task."""
    stem = Path(figure.path).stem
    for task in sorted(tasks, key=len, reverse=True):
        if re.search(rf"(?:^|_){re.escape(file_name_of(task))}(?:_|$)", stem):
            return task
    return None


def file_name_of(task: str) -> str:
    """A task name as analyze spells it in file names."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", task)


def inline_budget(text_bytes: int, report_bytes: int = REPORT_BYTES) -> int:
    """PNG bytes report.html may embed beside `text_bytes` of text and markup (base64 makes
    4 bytes of 3; a figure's own markup is a few hundred bytes)."""
    return max(0, (report_bytes - text_bytes) * 3 // 4 - 20_000)


def plan_figures(figures: Sequence[Figure], tasks: Sequence[str], budget: int,
                 per_kind: int = WEEK_PLOTS_PER_KIND) -> FigurePlan:
    """Split `figures` (files that exist, in the stages' order) into what report.html embeds
    and what the gallery shows. Every figure that is no week plot comes first, in order, then
    the `per_kind` lowest-ranked week plots of each kind; a figure that would take the
    embedded PNG bytes over `budget` is left to the gallery."""
    order = {task: i for i, task in enumerate(map(file_name_of, tasks))}
    weeks = sorted((w for w in map(week_plot, figures) if w is not None),
                   key=lambda w: (order.get(w.task, len(order)), w.task, _kind_rank(w.kind),
                                  w.rank))
    week_figures = {w.figure for w in weeks}
    wanted = [f for f in figures if f not in week_figures]
    for kind in WEEK_KINDS:
        of_kind = sorted((w for w in weeks if w.kind == kind),
                         key=lambda w: (w.rank, order.get(w.task, len(order))))
        wanted += [w.figure for w in of_kind[:per_kind]]
    inline: list[Figure] = []
    used = 0
    for figure in wanted:
        size = Path(figure.path).stat().st_size
        if used + size <= budget:
            inline.append(figure)
            used += size
    inline_set = set(inline)
    left_out = [f for f in wanted if f not in inline_set and f not in week_figures]
    return FigurePlan(inline=inline, gallery=[w.figure for w in weeks] + left_out, weeks=weeks)


def data_uri(path: Path) -> str:
    """A PNG file as a data URI: what report.html, the gallery and the Prefect UI embed."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def _kind_rank(kind: str) -> int:
    return WEEK_KINDS.index(kind) if kind in WEEK_KINDS else len(WEEK_KINDS)
