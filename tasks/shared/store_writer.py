"""Write the sequence store's shards with bounded memory, standardising once all is binned.

`add` copies raw user-weeks [k, T, C] (heart rate in bpm and log1p steps, NaN where the bin has
none) into the open shard of their split and saves it when full, so memory is one shard per
split. The train statistics are not known until every user-week is binned, so `finish` then
standardises every shard in place (memory-mapped, a few shards at a time on threads) and sets
NaN to 0.
"""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stethoscope.schemas.sequence_store import SPLITS

# Channels that are standardised, by position in [T, C]: 0 heart rate, 1 log1p steps.
STANDARDISED = (0, 1)


@dataclass(frozen=True)
class Moments:
    """Count, sum and sum of squares (float64) of some values; they add up."""

    count: float = 0.0
    total: float = 0.0
    squares: float = 0.0

    def __add__(self, other: np.ndarray) -> Moments:
        count, total, squares = np.asarray(other, dtype=np.float64).reshape(-1, 3).sum(axis=0)
        return Moments(self.count + count, self.total + total, self.squares + squares)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def std(self) -> float:
        """Population std; 1.0 when undefined or zero, so standardising never divides by 0."""
        if not self.count:
            return 1.0
        std = float(np.sqrt(max(self.squares / self.count - self.mean**2, 0.0)))
        return std if std > 0 else 1.0


@dataclass
class ShardWriter:
    shard_dir: Path
    shard_size: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    _open: dict[str, np.ndarray] = field(default_factory=dict)
    _saved: list[Path] = field(default_factory=list)

    def add(self, split: str, raw: np.ndarray, weeks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Queue `raw[weeks]` (user-weeks of one split); returns each one's shard name and row."""
        names, rows = [], []
        done = 0
        while done < len(weeks):
            number, row = divmod(self.counts[split], self.shard_size)
            if row == 0:
                self._open[split] = np.empty((self.shard_size, *raw.shape[1:]), np.float32)
            take = min(self.shard_size - row, len(weeks) - done)
            self._open[split][row:row + take] = raw[weeks[done:done + take]]
            names.append(np.full(take, shard_name(split, number), dtype=object))
            rows.append(np.arange(row, row + take, dtype=np.int32))
            self.counts[split] += take
            done += take
            if row + take == self.shard_size:
                self._save(split)
        return np.concatenate(names), np.concatenate(rows)

    def finish(self, heart_rate: Moments, log_steps: Moments, workers: int = 2) -> list[str]:
        """Save the last shard of each split; standardise every shard in place."""
        for split in SPLITS:
            if self.counts[split] % self.shard_size:
                self._save(split)
        moments = (heart_rate, log_steps)
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            list(pool.map(lambda path: _standardise(path, moments), self._saved))
        return [path.name for path in self._saved]

    def _save(self, split: str) -> None:
        rows = (self.counts[split] - 1) % self.shard_size + 1
        path = self.shard_dir / shard_name(split, (self.counts[split] - 1) // self.shard_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, self._open.pop(split)[:rows])
        self._saved.append(path)


def _standardise(path: Path, moments: tuple[Moments, Moments]) -> None:
    """In place, through the page cache: unmapping writes back without the synchronous disk
    write of `flush()` (msync); the store is published by renaming its directory anyway."""
    weeks = np.load(path, mmap_mode="r+")
    for channel, m in zip(STANDARDISED, moments, strict=True):
        values = weeks[:, :, channel]
        values -= np.float32(m.mean)
        values /= np.float32(m.std)
        values[np.isnan(values)] = 0.0
    del weeks


def shard_checksum(path: Path) -> str:
    """The crc32 of a shard file, "crc32:<8 hex>" (zlib's runs at GB/s: cheap on every open)."""
    crc = 0
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}"


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.npy"
