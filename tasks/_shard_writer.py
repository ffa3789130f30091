"""Write the sequence store's shards in two passes with bounded memory.

Pass 1 (`add`): dense raw user-weeks [T, C] (heart rate in bpm and log1p steps, NaN where the
bin has none) are buffered per split and saved as raw shards of `shard_size` user-weeks, while
the train split's channel sums are accumulated. Pass 2 (`finish`): each raw shard is
standardised with the train statistics, NaN set to 0, and saved under its final name. Memory:
three shard buffers plus one shard.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from schemas.sequence_store import SPLITS
from tasks.io import atomic_path

# Channels that are standardised, by position in [T, C]: 0 heart rate, 1 log1p steps.
STANDARDISED = (0, 1)


@dataclass
class Moments:
    """Running count, sum and sum of squares (float64) of the finite values seen."""

    count: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, values: np.ndarray) -> None:
        finite = values[np.isfinite(values)].astype(np.float64)
        self.count += len(finite)
        self.total += float(finite.sum())
        self.squares += float(np.square(finite).sum())

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
    raw_dir: Path
    shard_dir: Path
    shard_size: int
    train_moments: tuple[Moments, Moments] = field(default_factory=lambda: (Moments(), Moments()))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    _buffers: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {s: [] for s in SPLITS})
    _raw: list[tuple[str, Path]] = field(default_factory=list)

    def add(self, split: str, weeks: np.ndarray) -> list[tuple[str, int]]:
        """Queue raw user-weeks [k, T, C] of one split; returns (shard name, row) of each."""
        if split == "train":
            for channel, moments in zip(STANDARDISED, self.train_moments, strict=True):
                moments.add(weeks[:, :, channel])
        start = self.counts[split]
        self.counts[split] += len(weeks)
        self._buffers[split].append(weeks)
        while sum(len(b) for b in self._buffers[split]) >= self.shard_size:
            self._flush(split)
        return [(shard_name(split, i // self.shard_size), i % self.shard_size)
                for i in range(start, start + len(weeks))]

    def finish(self) -> list[str]:
        """Standardise every raw shard into its final file; returns the shard names."""
        for split in SPLITS:
            while self._buffers[split]:
                self._flush(split)
        names = []
        for name, raw in self._raw:
            weeks = np.load(raw)
            for channel, moments in zip(STANDARDISED, self.train_moments, strict=True):
                values = weeks[:, :, channel]
                values -= np.float32(moments.mean)
                values /= np.float32(moments.std)
            np.nan_to_num(weeks, copy=False, nan=0.0)
            with atomic_path(self.shard_dir / name) as tmp, tmp.open("wb") as handle:
                np.save(handle, weeks)
            raw.unlink()
            names.append(name)
        shutil.rmtree(self.raw_dir, ignore_errors=True)
        return names

    def _flush(self, split: str) -> None:
        """Save exactly one shard (shard_size user-weeks, or what is left at the end)."""
        queued = np.concatenate(self._buffers[split])
        shard, rest = queued[: self.shard_size], queued[self.shard_size:]
        self._buffers[split] = [rest] if len(rest) else []
        name = shard_name(split, len([n for n, _ in self._raw if n.startswith(f"{split}-")]))
        raw = self.raw_dir / name
        raw.parent.mkdir(parents=True, exist_ok=True)
        np.save(raw, shard)
        self._raw.append((name, raw))


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.npy"
