"""A large synthetic cohort for benchmarks, written fast with numpy (not the realistic
simulator: benchmarks need volume, not physiology)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stethoscope.schemas.tables import SENSOR_LOGS, USERS

START_US = 1_709_510_400_000_000  # 2024-03-04 00:00 UTC, a Monday


def write_bench_cohort(root: Path, num_users: int = 1000, minutes: int = 7 * 1440,
                       users_per_file: int = 50, defect_share: float = 0.0, seed: int = 0) -> int:
    """Write sensor_logs/ + users.parquet; return the number of rows."""
    rng = np.random.default_rng(seed)
    (root / "sensor_logs").mkdir(parents=True, exist_ok=True)
    ids = [f"user-{i:05d}" for i in range(num_users)]
    rows = 0
    for f, first in enumerate(range(0, num_users, users_per_file)):
        chunk = ids[first:first + users_per_file]
        n = len(chunk) * minutes
        hr = rng.normal(72, 10, n).clip(35, 200).round(1)
        hr[rng.random(n) < 0.1] = np.nan
        steps = rng.poisson(8, n).astype(np.int64)
        if defect_share:
            bad = rng.random(n) < defect_share
            hr[bad] = 400.0
        table = pa.table({
            "user_id": pa.array(np.repeat(np.array(chunk), minutes)),
            "timestamp": pa.array(np.tile(START_US + np.arange(minutes, dtype=np.int64) * 60_000_000,
                                          len(chunk)), pa.timestamp("us", tz="UTC")),
            "heart_rate": pa.array(hr, pa.float64(), from_pandas=True),
            "steps": pa.array(steps, pa.int64()),
            "device": pa.array(np.where(np.repeat(np.arange(len(chunk)) % 5 == 0, minutes),
                                        "apple_watch_1st_gen", "apple_watch_series_6")),
        }, schema=SENSOR_LOGS)
        pq.write_table(table, root / "sensor_logs" / f"part-{f:05d}.parquet")
        rows += n
    pq.write_table(pa.table({
        "user_id": ids, "age": rng.uniform(18, 85, num_users).round(),
        "sex": rng.choice(["F", "M", "U"], num_users), "timezone": ["Europe/Berlin"] * num_users,
    }, schema=USERS), root / "users.parquet")
    return rows
