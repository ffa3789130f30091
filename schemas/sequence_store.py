"""The sequence store: what the sequences stage writes and training / the audits stream.

Layout under `<run>/sequences/`:

    index.parquet          one row per included user-week (INDEX columns below, then one
                           float64 column per synthetic target and one nullable int8 column per
                           condition label, named as the target / condition)
    shards/<split>-NNNNN.npy
                           float32 arrays [n, T, C]; a shard holds user-weeks of one split only;
                           index rows point at (shard file name, row)
    stats.json             StoreStats below: T, channels, bin width, standardisation
                           statistics (from the train split only), targets, conditions,
                           the crc32 of every shard file
    excluded.parquet       EXCLUDED below: the user-weeks left out (coverage too low), listed

Shards are read with `numpy.load(mmap_mode="r")`, so memory stays bounded by a batch.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

CHANNELS: tuple[str, ...] = ("heart_rate", "steps", "heart_rate_missing")
OPTIONAL_CHANNELS: tuple[str, ...] = ("time_of_day_sin", "time_of_day_cos")
METADATA_FEATURES: tuple[str, ...] = ("age_std", "sex_F", "sex_M", "sex_U")
SPLITS: tuple[str, ...] = ("train", "val", "test")

INDEX = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("week_start", pa.date32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("shard", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
        pa.field("device", pa.string()),
        pa.field("device_generation", pa.int16()),
        pa.field("age", pa.float64()),
        pa.field("sex", pa.string()),
        pa.field("timezone", pa.string()),
        pa.field("coverage", pa.float64()),
        pa.field("metadata", pa.list_(pa.float32(), len(METADATA_FEATURES))),
    ]
)

EXCLUDED = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("week_start", pa.date32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("coverage", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


class StoreStats(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_steps: int  # T
    channels: list[str]
    bin_seconds: float
    metadata_features: list[str]
    # standardisation, computed on the train split only
    heart_rate_mean: float
    heart_rate_std: float
    log_steps_mean: float
    log_steps_std: float
    age_mean: float
    age_std: float
    targets: list[str]
    conditions: list[str]
    counts: dict[str, int]  # user-weeks per split
    # shard file name -> crc32 of the file as written ("crc32:<8 hex>"), checked by the reader;
    # empty in stores written before checksums (and by hand in tests)
    shard_checksums: dict[str, str] = {}


class StorePaths(BaseModel):
    model_config = ConfigDict(frozen=True)

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "index.parquet"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def stats(self) -> Path:
        return self.root / "stats.json"

    @property
    def excluded(self) -> Path:
        return self.root / "excluded.parquet"

    def shard(self, name: str) -> Path:
        return self.shards / name
