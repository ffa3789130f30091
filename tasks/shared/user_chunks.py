"""Stream clean sensor logs as chunks of whole users, as numpy arrays (labels and sequences).

The clean files (`RunPaths.clean`) hold all rows of their users, sorted by (user_id, timestamp)
and unique. A chunk is a run of whole users with at least `chunk_rows` rows (the last chunk of a
file may be smaller; one user with more rows makes a bigger chunk), so memory is bounded by the
chunk size, or the largest user, whatever the cohort size.

Within a chunk every user's rows get a *key*: microseconds since the chunk's origin (two days
before its first instant) plus the user's lane, `rank x lane_us`. Keys increase strictly through
the whole chunk, so one `np.searchsorted` finds the row position of any (user, instant), and a
user's keys lie at least two days above 0 and above every key of the previous user: a
`maximum.accumulate` that looks back up to two days never reaches another user.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.tasks.shared.executor import map_ordered

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
_LANE_MARGIN_US = 2 * US_PER_DAY
_COLUMNS = ("user_id", "timestamp", "heart_rate", "steps", "device")
_FIX_ORDER = "re-run the validation stage; its clean files are sorted and hold whole users"

Out = TypeVar("Out")


@dataclass(frozen=True)
class UserChunk:
    """Whole users' rows. Row arrays have length n; user arrays length U."""

    user_ids: tuple[str, ...]
    user_offsets: np.ndarray  # int64 [U + 1]: rows of user u are [offsets[u], offsets[u + 1])
    timestamp: np.ndarray  # int64 [n], microseconds since the epoch, UTC
    heart_rate: np.ndarray  # float64 [n], 0 where null (see heart_rate_valid)
    heart_rate_valid: np.ndarray  # bool [n]
    steps: np.ndarray  # float64 [n], 0 where null (see steps_valid)
    steps_valid: np.ndarray  # bool [n]
    device: np.ndarray  # int32 [n], index into device_names (sorted, so ties break by name)
    device_names: tuple[str, ...]
    source_file: str

    @property
    def num_rows(self) -> int:
        return len(self.timestamp)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @cached_property
    def origin_us(self) -> int:
        """Two days before the chunk's first instant: keys are relative to it."""
        return (int(self.timestamp.min()) if self.num_rows else 0) - _LANE_MARGIN_US

    @cached_property
    def lane_us(self) -> int:
        span = int(self.timestamp.max()) - self.origin_us if self.num_rows else 0
        return span + 1 + _LANE_MARGIN_US

    @cached_property
    def row_user(self) -> np.ndarray:
        """int64 [n]: the user index of every row."""
        return run_index(self.user_offsets[:-1], self.num_rows)

    @cached_property
    def key(self) -> np.ndarray:
        """int64 [n], strictly increasing over the whole chunk (checked on load)."""
        return (self.timestamp - self.origin_us) + self.row_user * self.lane_us

    def keys_of(self, user: np.ndarray, instant_us: np.ndarray) -> np.ndarray:
        """Keys of (user index, UTC microseconds) pairs, for searchsorted against `key`.
        Instants are clipped to the lane so that an instant outside the chunk's span still
        lands before the user's first row or after the last one."""
        offset = np.clip(np.asarray(instant_us, dtype=np.int64) - self.origin_us,
                         0, self.lane_us - 1)
        return offset + np.asarray(user, dtype=np.int64) * self.lane_us


def iter_user_chunks(files: Iterable[Path], chunk_rows: int) -> Iterator[UserChunk]:
    """Yield chunks of whole users from clean Parquet files, in file and row order. Raises a
    DataContractError when a user's rows are not contiguous (within a file, or across the files
    of one call) or not strictly increasing in time."""
    seen: set[str] = set()
    for path in files:
        parquet = pq.ParquetFile(path, read_dictionary=["user_id", "device"])
        pending: list[pa.RecordBatch] = []
        num_pending = 0
        batches = parquet.iter_batches(batch_size=max(chunk_rows, 1), columns=list(_COLUMNS))
        for batch in batches:
            pending.append(batch)
            num_pending += batch.num_rows
            if num_pending < chunk_rows:
                continue
            table = pa.Table.from_batches(pending)
            cut = _last_user_start(table)
            if cut == 0:
                continue  # one user so far: keep reading until the next user starts
            yield _to_chunk(table.slice(0, cut), path, seen)
            rest = table.slice(cut)
            pending, num_pending = rest.to_batches(), rest.num_rows
        if num_pending:
            yield _to_chunk(pa.Table.from_batches(pending), path, seen)


def map_chunks(fn: Callable[[UserChunk], Out], files: Iterable[Path], chunk_rows: int,
               workers: int) -> Iterator[Out]:
    """`fn(chunk)` for every chunk of whole users of `files`, in order, on `workers` threads.

    A file of at most 2 x chunk_rows rows is read by the thread that computes it, so such files
    are read in parallel; a larger one is streamed by the reader thread and its chunks computed
    in parallel. Memory: about 2 x workers small files, or 2 x workers chunks, in flight.
    Raises a DataContractError when a user's rows are in two files."""

    def whole_file(path: Path) -> list[tuple[tuple[str, ...], Out]]:
        # One chunk per small file: a chunk has a fixed cost (calendars, windows) of a few ms,
        # and a file a little over chunk_rows would otherwise leave a tiny second chunk.
        return [(c.user_ids, fn(c)) for c in iter_user_chunks([path], 2 * chunk_rows)]

    def one_chunk(chunk: UserChunk) -> list[tuple[tuple[str, ...], Out]]:
        return [(chunk.user_ids, fn(chunk))]

    def jobs() -> Iterator[Callable[[], list[tuple[tuple[str, ...], Out]]]]:
        for path in files:
            if pq.ParquetFile(path).metadata.num_rows <= 2 * chunk_rows:
                yield functools.partial(whole_file, path)
            else:
                for chunk in iter_user_chunks([path], chunk_rows):
                    yield functools.partial(one_chunk, chunk)

    seen: set[str] = set()
    for results in map_ordered(_call, jobs(), workers):
        for user_ids, result in results:
            repeated = sorted(seen.intersection(user_ids))
            if repeated:
                raise DataContractError("labels/sequences: the clean sensor logs are not in the "
                                        "order the validation stage promises", [Problem(
                                            rule="user_rows_not_contiguous", column="user_id",
                                            message=f"the rows of {len(repeated)} users are in "
                                            f"more than one file ({repeated[:5]}).",
                                            fix=_FIX_ORDER)])
            seen.update(user_ids)
            yield result


def _call(job: Callable[[], Out]) -> Out:
    return job()


def run_index(starts: np.ndarray, num_rows: int) -> np.ndarray:
    """int64 [num_rows]: the number of the run each row is in, for runs of rows that start at
    `starts` (non-decreasing, the first at 0; a run may be empty) and cover every row.

    `values[run_index(starts, n)]` is `np.repeat(values, lengths)`: np.repeat holds the GIL for
    its whole loop, a scatter, a cumulative sum and a gather release it, so chunks binned on
    several threads do not wait for each other."""
    marker = np.zeros(num_rows + 1, dtype=np.int64)
    np.add.at(marker, np.asarray(starts[1:], dtype=np.int64), 1)  # one per run, not per row
    return np.cumsum(marker[:num_rows])


def _last_user_start(table: pa.Table) -> int:
    """Row position where the table's last user begins."""
    users = table.column("user_id")
    last = users[-1].as_py()
    for chunk_end in range(users.num_chunks - 1, -1, -1):
        codes = users.chunk(chunk_end)
        names = np.asarray(codes.dictionary.to_pylist(), dtype=object)
        last_codes = np.flatnonzero(names == last)
        indices = codes.indices.to_numpy(zero_copy_only=False)
        others = np.flatnonzero(~np.isin(indices, last_codes))
        if len(others):
            return sum(len(users.chunk(i)) for i in range(chunk_end)) + int(others[-1]) + 1
    return 0


def _to_chunk(table: pa.Table, path: Path, seen: set[str]) -> UserChunk:
    table = table.unify_dictionaries().combine_chunks()
    users = table.column("user_id").chunk(0)
    codes = users.indices.to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(codes[1:] != codes[:-1]) + 1]).astype(np.int64)
    user_ids = tuple(users.dictionary.take(pa.array(codes[starts])).to_pylist())
    problems = []
    repeated = sorted({u for u in user_ids if u in seen} | _duplicates(user_ids))
    if repeated:
        problems.append(Problem(
            rule="user_rows_not_contiguous", file=str(path), column="user_id",
            message=f"the rows of {len(repeated)} users are split ({repeated[:5]}).",
            fix=_FIX_ORDER))
    seen.update(user_ids)
    timestamp = table.column("timestamp").chunk(0)
    if timestamp.type != pa.timestamp("us", tz="UTC"):
        timestamp = timestamp.cast(pa.timestamp("us", tz="UTC"))
    heart_rate, heart_rate_valid = _values(table.column("heart_rate").chunk(0))
    steps, steps_valid = _values(table.column("steps").chunk(0))
    devices = table.column("device").chunk(0)
    names = devices.dictionary.to_pylist()
    order = np.argsort(np.asarray(names, dtype=object)).astype(np.int32)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order), dtype=np.int32)
    chunk = UserChunk(
        user_ids=user_ids,
        user_offsets=np.append(starts, len(codes)),
        timestamp=timestamp.cast(pa.int64()).to_numpy(zero_copy_only=False),
        heart_rate=heart_rate, heart_rate_valid=heart_rate_valid,
        steps=steps, steps_valid=steps_valid,
        device=rank[devices.indices.to_numpy(zero_copy_only=False)],
        device_names=tuple(names[i] for i in order),
        source_file=str(path),
    )
    if chunk.num_rows > 1 and not bool(np.all(chunk.key[1:] > chunk.key[:-1])):
        problems.append(Problem(
            rule="timestamps_not_increasing", file=str(path), column="timestamp",
            message="a user's timestamps are not strictly increasing (unsorted or duplicated).",
            fix=_FIX_ORDER))
    if problems:
        raise DataContractError("labels/sequences: the clean sensor logs are not in the order "
                                "the validation stage promises", problems)
    return chunk


def _duplicates(items: tuple[str, ...]) -> set[str]:
    return {item for item, count in Counter(items).items() if count > 1}


def _values(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with nulls and NaN as 0, validity mask)."""
    values = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    valid = (np.ones(len(column), dtype=bool) if column.null_count == 0
             else column.is_valid().to_numpy(zero_copy_only=False))
    if pa.types.is_floating(column.type):
        nan = np.isnan(values)
        if nan.any():
            valid &= ~nan
            values = np.where(nan, 0.0, values)
    return values, valid
