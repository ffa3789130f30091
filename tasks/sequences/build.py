"""Sequences stage: every well-covered user-week as a [T, C] tensor, in the sequence store.

Owns `<run>/sequences/` (layout and schemas in `schemas.sequence_store`): `shards/<split>-NNNNN.npy`
float32 [n, T, C], `index.parquet` (one row per stored user-week: where it is, its metadata
vector, every synthetic target and every condition label), `stats.json` and `excluded.parquet`.

- Bins. A user-week [week_start_utc, week_end_utc) of the user-week table is cut into T equal
  bins (default 4096, 147.66 s; DST weeks 146.78 s or 148.54 s, so a sequence always spans its
  whole week). Channels: 0 heart rate (mean of the bin), 1 steps (sum of the bin, log1p), both
  standardised with train-split statistics and 0 where the bin has no such sample; 2 heart rate
  missing (1 where the bin has no heart rate); with `time_of_day`, 3-4 sin and cos of the local
  time of day at the bin's centre.
- Coverage is the share of bins with heart rate (the user-week table's definition); user-weeks
  below `min_coverage` are left out and listed in `excluded.parquet`.
- Split by user, never by week: a user's split is fixed by blake2b(seed, user_id), so it is
  stable across runs, machines and cohort changes; fractions default to 70/15/15.
- Statistics (heart-rate and log-steps mean and std over the bins of train user-weeks, age over
  train users) come from the train split only and are saved in stats.json.
- Labels: when labels.parquet exists, its condition columns join the index by user; null stays
  null (unknown, masked by training), users without a labels row get nulls.

The clean logs are streamed in chunks of whole users; binning is one compiled pass over a
chunk's rows (`tasks.shared.kernels`). Memory: a few chunks in flight plus one open shard per split;
shards are standardised in place once the train statistics are known (`tasks.shared.store_writer`).
The store is built in a hidden sibling directory and renamed over `out_dir` when complete.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stethoscope.schemas.atomic import staging_dir, write_json_atomic, write_parquet_atomic
from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.sequence_store import (
    CHANNELS,
    EXCLUDED,
    METADATA_FEATURES,
    OPTIONAL_CHANNELS,
    SPLITS,
    StorePaths,
    StoreStats,
)
from stethoscope.tasks.sequences.config import SequencesConfig, SequencesResult
from stethoscope.tasks.sequences.index import PLACES, build_index
from stethoscope.tasks.shared import kernels
from stethoscope.tasks.shared.calendar import US_PER_DAY, US_PER_SECOND, to_local_us
from stethoscope.tasks.shared.io import list_parquet_files
from stethoscope.tasks.shared.store_writer import Moments, ShardWriter, shard_checksum
from stethoscope.tasks.shared.user_chunks import UserChunk, map_chunks
from stethoscope.tasks.shared.users import read_users

log = logging.getLogger("stethoscope.sequences")


def assign_split(user_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The user's split: blake2b of (seed, user_id) as a uniform number in [0, 1)."""
    digest = hashlib.blake2b(f"{seed}\x1f{user_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    edges = np.cumsum(fractions)
    return SPLITS[min(int(np.searchsorted(edges, u, side="right")), len(SPLITS) - 1)]


@dataclass(frozen=True)
class WeekSpans:
    """The user-week table's weeks, sorted by user, with a lookup of each user's rows."""

    week_start: np.ndarray  # int32 days
    start_us: np.ndarray  # int64
    end_us: np.ndarray  # int64
    rows_of: dict[str, tuple[int, int]]

    @classmethod
    def read(cls, user_weeks_file: Path) -> WeekSpans:
        table = pq.read_table(user_weeks_file,
                              columns=["user_id", "week_start", "week_start_utc", "week_end_utc"])
        table = table.sort_by([("user_id", "ascending"), ("week_start", "ascending")])
        users = table.column("user_id").to_numpy(zero_copy_only=False)
        starts: np.ndarray | list[int] = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
        ends = np.r_[starts[1:], len(users)] if len(users) else []
        return cls(
            week_start=table.column("week_start").cast(pa.int32()).to_numpy(),
            start_us=table.column("week_start_utc").cast(pa.int64()).to_numpy(),
            end_us=table.column("week_end_utc").cast(pa.int64()).to_numpy(),
            rows_of={users[s]: (int(s), int(e)) for s, e in zip(starts, ends, strict=True)},
        )


@dataclass(frozen=True)
class BinnedWeeks:
    """Some user-weeks of one chunk, binned: raw tensors, before standardisation."""

    user_id: np.ndarray  # object [k]
    week_start: np.ndarray  # int32 [k] days
    coverage: np.ndarray  # float64 [k]
    raw: np.ndarray  # float32 [k, T, C]: HR bin mean (NaN = none), log1p steps (NaN = none),
    #                   HR missing mask, then the optional time-of-day channels
    moments: np.ndarray  # float64 [k, 2, 3]: (count, sum, sum of squares) of channels 0 and 1


def bin_chunk(chunk: UserChunk, spans: WeekSpans, zone_of: dict[str, str],
              config: SequencesConfig) -> list[BinnedWeeks]:
    """Bin one chunk of whole users into the weeks of the user-week table, up to `shard_size`
    weeks at a time (memory: a few [shard_size, T] float64 arrays). Every row must fall in a
    week of the table (it was built from these logs)."""
    ranges = [spans.rows_of.get(u, (0, 0)) for u in chunk.user_ids]
    counts = np.array([e - s for s, e in ranges], dtype=np.int64)
    weeks = _concat_ranges(np.array([s for s, _ in ranges], dtype=np.int64), counts)
    user = np.repeat(np.arange(chunk.num_users), counts)
    start_us, end_us = spans.start_us[weeks], spans.end_us[weeks]
    lo = np.searchsorted(chunk.key, chunk.keys_of(user, start_us))
    hi = np.searchsorted(chunk.key, chunk.keys_of(user, end_us))
    user_ids = np.asarray(chunk.user_ids, dtype=object)
    covered = np.bincount(user, weights=hi - lo, minlength=chunk.num_users)
    stray = np.flatnonzero(covered != np.diff(chunk.user_offsets))
    if len(stray):
        raise DataContractError("sequences: the user-week table does not match the clean logs", [
            Problem(rule="rows_outside_user_weeks", file=chunk.source_file, column="user_id",
                    message=f"{len(stray)} users have rows in no week of the user-week table "
                    f"({list(user_ids[stray][:10])}).",
                    fix="re-run the labels stage on these clean logs")])
    # The weeks now partition the chunk's rows, in order: week w's rows are [lo[w], hi[w]).
    groups, size = [], config.shard_size
    for first in range(0, len(weeks), size):
        group = slice(first, first + size)
        raw, moments = _bin_rows(chunk, lo[group], hi[group], start_us[group],
                                 end_us[group], config.num_steps)
        if config.time_of_day:
            zones = np.array([zone_of[u] for u in user_ids[user[group]]], dtype=object)
            raw = np.concatenate([raw, time_of_day_channels(
                start_us[group], end_us[group], zones, config.num_steps)], axis=-1)
        groups.append(BinnedWeeks(
            user_id=user_ids[user[group]], week_start=spans.week_start[weeks[group]],
            coverage=(config.num_steps - raw[:, :, 2].sum(axis=1, dtype=np.float64))
            / config.num_steps, raw=raw, moments=moments))
    return groups


def _bin_rows(chunk: UserChunk, lo: np.ndarray, hi: np.ndarray, start_us: np.ndarray,
              end_us: np.ndarray, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """[k, T, 3] raw channels of the k user-weeks whose rows are [lo, hi), and the [k, 2, 3]
    moments of channels 0 and 1 (`tasks.shared.kernels.bin_user_weeks`: one pass over the rows)."""
    raw = np.empty((len(lo), num_steps, len(CHANNELS)), dtype=np.float32)
    moments = np.empty((len(lo), 2, 3), dtype=np.float64)
    kernels.bin_user_weeks(chunk.timestamp, chunk.heart_rate, chunk.heart_rate_valid, chunk.steps,
                           chunk.steps_valid, lo, hi, start_us, end_us, raw, moments)
    return raw, moments


def time_of_day_channels(start_us: np.ndarray, end_us: np.ndarray, zones: np.ndarray,
                         num_steps: int) -> np.ndarray:
    """[k, T, 2] float32: sin and cos of the local time of day at each bin's centre."""
    centre = (start_us[:, None] + ((2 * np.arange(num_steps) + 1) * (end_us - start_us)[:, None])
              // (2 * num_steps))
    local = np.empty_like(centre)
    for zone in np.unique(zones):
        rows = zones == zone
        local[rows] = to_local_us(centre[rows].ravel(), zone).reshape(-1, num_steps)
    angle = 2 * np.pi * (local % US_PER_DAY) / US_PER_DAY
    return np.stack([np.sin(angle), np.cos(angle)], axis=-1).astype(np.float32)


def build_sequences(
    clean_dir: Path, users_file: Path, user_weeks_file: Path, labels_file: Path | None,
    out_dir: Path, config: SequencesConfig,
) -> SequencesResult:
    """Write the sequence store to `out_dir`, built aside and renamed into place when done."""
    out_dir = Path(out_dir)
    users = read_users(users_file, ["user_id", "age", "sex", "timezone"], stage="sequences")
    spans = WeekSpans.read(user_weeks_file)
    with _staging(out_dir) as staging:
        store = StorePaths(root=staging)
        writer = ShardWriter(store.shards, config.shard_size)
        places, excluded, (hr, steps) = _write_tensors(clean_dir, spans, users, writer, config)
        if writer.counts["train"] == 0:
            raise DataContractError("sequences: no train user-week to standardise with", [Problem(
                rule="empty_train_split", file=str(user_weeks_file),
                message=f"none of the {places.num_rows} stored user-weeks is in the train split.",
                fix="add users, lower min_coverage, or change split_seed / split_fractions")])
        shard_names = writer.finish(hr, steps, config.workers)
        num_shards = len(shard_names)
        index, fixed = build_index(places, users, user_weeks_file, labels_file)
        stats = StoreStats(
            num_steps=config.num_steps,
            channels=list(CHANNELS) + (list(OPTIONAL_CHANNELS) if config.time_of_day else []),
            bin_seconds=7 * US_PER_DAY / US_PER_SECOND / config.num_steps,
            metadata_features=list(METADATA_FEATURES),
            heart_rate_mean=hr.mean, heart_rate_std=hr.std,
            log_steps_mean=steps.mean, log_steps_std=steps.std,
            counts=dict(writer.counts), **fixed,
            shard_checksums={n: shard_checksum(store.shard(n)) for n in shard_names})
        write_parquet_atomic(index, store.index)
        write_json_atomic(stats.model_dump(), store.stats)
        write_parquet_atomic(excluded, store.excluded)
    final = StorePaths(root=out_dir)
    result = SequencesResult(
        store_dir=out_dir, num_included=index.num_rows, num_excluded=excluded.num_rows,
        excluded_file=final.excluded, counts=stats.counts,
        num_users={s: len(pc.unique(index.filter(pc.equal(index["split"], s))["user_id"]))
                   for s in SPLITS},
        num_shards=num_shards, targets=stats.targets, conditions=stats.conditions)
    log.info("sequences: %s", result.describe())
    return result


def _write_tensors(
    clean_dir: Path, spans: WeekSpans, users: pa.Table, writer: ShardWriter,
    config: SequencesConfig,
) -> tuple[pa.Table, pa.Table, tuple[Moments, Moments]]:
    """Bin every chunk and queue the kept user-weeks; returns where each kept user-week is,
    the excluded user-weeks, and the train moments of heart rate and log steps."""
    zone_of = dict(zip(users["user_id"].to_pylist(), users["timezone"].to_pylist(), strict=True))

    @functools.cache
    def split_of(user_id: str) -> str:
        return assign_split(user_id, config.split_seed, config.split_fractions)

    places, excluded = [PLACES.empty_table()], [EXCLUDED.empty_table()]
    train = np.zeros((2, 3))
    for groups in map_chunks(lambda c: bin_chunk(c, spans, zone_of, config),
                             list_parquet_files(clean_dir), config.chunk_rows, config.workers):
        for binned in groups:
            split = np.array([split_of(u) for u in binned.user_id], dtype=object)
            keep = binned.coverage >= config.min_coverage
            low = np.flatnonzero(~keep)
            excluded.append(_week_rows(binned, low, split[low]).append_column(
                "reason", pa.array(["low_coverage"] * len(low), pa.string())).cast(EXCLUDED))
            for name in SPLITS:
                weeks = np.flatnonzero(keep & (split == name))
                if len(weeks) == 0:
                    continue
                if name == "train":
                    train += binned.moments[weeks].sum(axis=0)
                shards, rows = writer.add(name, binned.raw, weeks)
                places.append(_week_rows(binned, weeks, split[weeks])
                              .append_column("shard", pa.array(shards, pa.string()))
                              .append_column("row", pa.array(rows, pa.int32())).cast(PLACES))
    moments = (Moments() + train[0], Moments() + train[1])
    return pa.concat_tables(places), pa.concat_tables(excluded), moments


def _week_rows(binned: BinnedWeeks, weeks: np.ndarray, split: np.ndarray) -> pa.Table:
    """user_id, week_start, split, coverage of the weeks at positions `weeks`."""
    return pa.table({
        "user_id": pa.array(binned.user_id[weeks], pa.string()),
        "week_start": pa.array(binned.week_start[weeks].astype(np.int32), pa.date32()),
        "split": pa.array(split, pa.string()),
        "coverage": pa.array(binned.coverage[weeks], pa.float64()),
    })


@contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A hidden sibling of `out_dir` that replaces it when the block succeeds."""
    staging = staging_dir(out_dir, "sequences")
    try:
        yield staging
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _concat_ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)]), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return offsets + np.arange(total, dtype=np.int64)
