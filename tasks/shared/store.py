"""The one reader of the sequence store: checked, memory-mapped shards and the index split by
split (`open_store`), and bounded batches of one split (`iter_store_batches`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stethoscope.model.config import ModelConfig
from stethoscope.schemas.errors import DataContractError, Problem, UsageError
from stethoscope.schemas.sequence_store import INDEX, StorePaths, StoreStats
from stethoscope.tasks.shared.audited_model import sequence_index
from stethoscope.tasks.shared.progress import log_every
from stethoscope.tasks.shared.store_writer import shard_checksum

log = logging.getLogger("stethoscope.audits")


def iter_store_batches(
    store_dir: Path, split: str = "val", max_user_weeks: int | None = 256, batch_size: int = 16,
    stage: str = "audits",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (sequence [b, T, C] float32, metadata [b, M] float32) batches of the first
    `max_user_weeks` user-weeks of `split`, in index order. Shards are memory-mapped, so memory
    stays bounded by one batch whatever the sample size. A small cohort may have no user-week
    in `split`: then the next of val, test, train that has some is used, with a warning."""
    store = open_store(store_dir, stage=stage)
    if not len(store.splits[split]):
        fallback = next((s for s in ("val", "test", "train") if len(store.splits[s])), None)
        if fallback is None:
            raise DataContractError(f"{stage}: the sequence store {store_dir} holds no user-weeks", [
                Problem(rule="empty_store", file=str(StorePaths(root=Path(store_dir)).index),
                        message="no user-week passed the coverage bound.",
                        fix="lower sequences.min_coverage or audit a cohort with more data")])
        log.warning("no %s user-weeks in %s: the %s sample comes from %s", split, store_dir,
                    stage, fallback)
        split = fallback
    chosen = store.splits[split]
    count = len(chosen) if max_user_weeks is None else min(len(chosen), max_user_weeks)
    for start in range(0, count, batch_size):
        at = slice(start, min(count, start + batch_size))
        yield store.read(chosen.shard_ids[at], chosen.shard_rows[at]), chosen.metadata[at]


def audit_sample(store_dir: Path, split: str, max_user_weeks: int | None, batch_size: int,
                 stage: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`iter_store_batches` for an audit, with a progress line at most every 10 s."""
    return log_every(
        iter_store_batches(store_dir, split, max_user_weeks, batch_size, stage=stage),
        lambda done: f"{stage}: {done} batches of up to {batch_size} user-weeks",
        logging.getLogger(f"stethoscope.{stage}"))


def store_stats(store_dir: Path, model: keras.Model | None = None) -> StoreStats | None:
    """The store's stats.json (None when it has none), checked against the shape [T, C] of the
    model's time-series input when `model` is given."""
    path = StorePaths(root=Path(store_dir)).stats
    if not path.exists():
        return None
    stats = StoreStats.model_validate_json(path.read_text())
    expected = (tuple(model.inputs[sequence_index(model)].shape[1:]) if model is not None
                else None)
    if expected is not None and expected[0] is None:
        expected = (stats.num_steps, expected[1])  # a model of any length: channels only
    if expected is not None and expected != (stats.num_steps, len(stats.channels)):
        raise DataContractError(
            f"audits: the model does not fit the sequence store {store_dir}",
            [Problem(rule="store_shape", file=str(path), message=f"the model takes sequences "
                     f"{list(expected)}, the store holds [{stats.num_steps}, "
                     f"{len(stats.channels)}] ({', '.join(stats.channels)}).",
                     fix="Audit the model trained on this store, or rebuild the store with "
                         "the model's num_steps and channels.")],
        )
    return stats


@dataclass(frozen=True)
class Split:
    """The index rows of one split, as arrays; sequences stay on disk."""

    rows: pa.Table  # index rows in store order (for predictions)
    shard_ids: np.ndarray  # int32 [n], into Store.shards
    shard_rows: np.ndarray  # int32 [n]
    metadata: np.ndarray  # float32 [n, M]
    labels: dict[str, np.ndarray]  # task -> float32 [n], NaN = unknown

    def __len__(self) -> int:
        return len(self.shard_rows)


@dataclass(frozen=True)
class Store:
    """An opened store: its stats, its shards (memory-mapped) and the index of every split."""

    stats: StoreStats
    shards: tuple[np.ndarray, ...]  # memory-mapped float32 [n_shard, T, C]
    splits: dict[str, Split]

    def read(self, shard_ids: np.ndarray, shard_rows: np.ndarray) -> np.ndarray:
        """Sequences of a batch, [b, T, C] float32, gathered shard by shard."""
        out = np.empty((len(shard_rows), *self.shards[0].shape[1:]), np.float32)
        for shard in np.unique(shard_ids):
            at = np.flatnonzero(shard_ids == shard)
            out[at] = self.shards[shard][shard_rows[at]]
        return out


def open_store(root: Path, model_config: ModelConfig | None = None, stage: str = "train") -> Store:
    """The store at `root`, checked (every breach at once; against the model's (T, C, M) when
    `model_config` is given), its shards memory-mapped. `stage` names the caller in errors."""
    paths = StorePaths(root=Path(root))
    missing = [p for p in (paths.index, paths.stats) if not p.exists()]
    if missing:
        raise DataContractError(f"{stage}: the sequence store is incomplete", [
            Problem("missing_file", f"{p.name} does not exist.", "Run the sequences stage first.",
                    file=str(p)) for p in missing])
    stats = StoreStats.model_validate_json(paths.stats.read_text())
    index = pq.read_table(paths.index)
    _check_store(paths, stats, index, model_config, stage)
    names = sorted(set(index.column("shard").to_pylist()))
    shards = _load_shards(paths, names, stats, stage)
    bad = [Problem("shard_shape", f"shape {s.shape}, dtype {s.dtype}; expected [n, "
                   f"{stats.num_steps}, {len(stats.channels)}] float32.", "Re-run the sequences "
                   "stage.", file=str(paths.shard(name)))
           for name, s in zip(names, shards, strict=True)
           if s.dtype != np.float32 or s.shape[1:] != (stats.num_steps, len(stats.channels))]
    if bad:
        raise DataContractError(f"{stage}: shards do not match stats.json", bad)
    shard_ids = pc.index_in(index.column("shard"), pa.array(names)).to_numpy().astype(np.int32)
    shard_lengths = np.array([len(s) for s in shards])
    rows = index.column("row").to_numpy().astype(np.int32)
    if np.any(rows >= shard_lengths[shard_ids]):
        raise DataContractError(f"{stage}: index.parquet and the shards disagree", [Problem(
            "row_out_of_range", f"{int(np.sum(rows >= shard_lengths[shard_ids]))} index rows "
            "point past the end of their shard.", "Re-run the sequences stage.",
            file=str(paths.index), column="row")])
    split_column = index.column("split").to_numpy(zero_copy_only=False)
    splits = {name: _split(index, np.flatnonzero(split_column == name), shard_ids, stats)
              for name in ("train", "val", "test")}
    return Store(stats=stats, shards=shards, splits=splits)


def _load_shards(paths: StorePaths, names: list[str], stats: StoreStats,
                 stage: str) -> tuple[np.ndarray, ...]:
    """The shards, memory-mapped, once each matches the checksum stats.json recorded for it;
    every missing, truncated or changed shard named at once (never numpy's "mmap length is
    greater than file size")."""
    fix = (f"Delete the sequence store {paths.root} and re-run the run (the sequences stage "
           "rebuilds it), or re-run with the same run id, which notices the change")
    shards, problems = [], []
    for name in names:
        path = paths.shard(name)
        recorded = stats.shard_checksums.get(name)
        if not path.is_file():
            problems.append(Problem("shard_missing", "the shard file does not exist.", fix,
                                    file=str(path)))
            continue
        if recorded is not None and shard_checksum(path) != recorded:
            problems.append(Problem("shard_checksum", f"its content ({path.stat().st_size} "
                                    "bytes) does not match the checksum recorded in stats.json "
                                    "when it was written: truncated or corrupted.", fix,
                                    file=str(path)))
            continue
        try:
            shards.append(np.load(path, mmap_mode="r"))
        except (ValueError, OSError, EOFError) as exc:  # a store without checksums
            problems.append(Problem("shard_unreadable", f"not a readable .npy shard ({exc}).",
                                    fix, file=str(path)))
    if problems:
        raise DataContractError(f"{stage}: the sequence store {paths.root} has broken shards",
                                problems)
    return tuple(shards)


def _split(index: pa.Table, at: np.ndarray, shard_ids: np.ndarray, stats: StoreStats) -> Split:
    rows = index.take(at)
    metadata = rows.column("metadata").combine_chunks().flatten().to_numpy()
    return Split(
        rows=rows,
        shard_ids=shard_ids[at],
        shard_rows=rows.column("row").to_numpy().astype(np.int32),
        metadata=metadata.reshape(len(at), len(stats.metadata_features)).astype(np.float32),
        labels={name: pc.cast(rows.column(name), pa.float32()).to_numpy(zero_copy_only=False)
                for name in (*stats.targets, *stats.conditions)},
    )


def _check_store(paths: StorePaths, stats: StoreStats, index: pa.Table,
                 config: ModelConfig | None, stage: str) -> None:
    """Every contract breach at once: index columns, null metadata, model/store shapes."""
    problems = [Problem("missing_column", f"column {c!r} is missing.", "Re-run the sequences "
                        "stage.", file=str(paths.index), column=c)
                for c in (*INDEX.names, *stats.targets, *stats.conditions)
                if c not in index.column_names]
    if not problems and index.column("metadata").null_count:
        problems.append(Problem("null_metadata", "metadata vectors are null.", "Re-run the "
                                "sequences stage.", file=str(paths.index), column="metadata",
                                count=index.column("metadata").null_count))
    if problems:
        raise DataContractError(f"{stage}: index.parquet breaks the sequence store contract",
                                problems)
    if config is None:
        return
    store_shape = (stats.num_steps, len(stats.channels), len(stats.metadata_features))
    model_shape = (config.num_steps, config.num_channels, config.num_metadata)
    if model_shape not in (store_shape, (*store_shape[:2], 0)):
        raise UsageError(
            f"{stage}: the model expects (T, C, M) = {model_shape} but the store at {paths.root} "
            f"holds {store_shape}. Set model num_steps={store_shape[0]}, num_channels="
            f"{store_shape[1]}, num_metadata={store_shape[2]} (or 0 for no metadata)."
        )
