"""Hand-built cohorts for data tests: small, seeded, with defects planted where asked."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stethoscope.schemas.tables import SENSOR_LOGS, USERS

START = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday


def sensor_table(user_id: str, minutes: int, device: str = "apple_watch_series_4", seed: int = 0,
                 start: datetime = START) -> pa.Table:
    """`minutes` clean minute rows of one user."""
    rng = np.random.default_rng(seed)
    ts = np.datetime64(start.replace(tzinfo=None), "us") + np.arange(minutes) * np.timedelta64(60, "s")
    return pa.table({
        "user_id": pa.array([user_id] * minutes, pa.string()),
        "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "heart_rate": pa.array(rng.normal(70, 8, minutes).round(1), pa.float64()),
        "steps": pa.array(rng.integers(0, 60, minutes), pa.int64()),
        "device": pa.array([device] * minutes, pa.string()),
    }, schema=SENSOR_LOGS)


def write_users(path: Path, ids: list[str], timezone: str = "Europe/Berlin") -> None:
    pq.write_table(pa.table({
        "user_id": ids, "age": [40.0 + i for i in range(len(ids))],
        "sex": ["F" if i % 2 else "M" for i in range(len(ids))], "timezone": [timezone] * len(ids),
    }, schema=USERS), path)


@pytest.fixture
def make_cohort(tmp_path: Path):
    """make_cohort({"a.parquet": table, ...}, users=[...]) -> cohort dir."""

    def make(files: dict[str, pa.Table | bytes], users: list[str]) -> Path:
        root = tmp_path / "cohort"
        (root / "sensor_logs").mkdir(parents=True)
        for name, content in files.items():
            path = root / "sensor_logs" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                pq.write_table(content, path)
        write_users(root / "users.parquet", users)
        return root

    return make
