"""The row gate's pure pieces against plain-Python references, on seeded random data."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from stethoscope.tasks.validate.files import CANONICAL
from stethoscope.tasks.validate.rules import _duplicates, sort_rows


def _duplicates_by_loop(user, ts, eligible):
    """Reference: an eligible row is a duplicate when an earlier eligible row has its key."""
    seen, out = set(), []
    for u, t, e in zip(user.tolist(), ts.tolist(), eligible.tolist(), strict=True):
        out.append(bool(e and (u, t) in seen))
        if e:
            seen.add((u, t))
    return np.array(out)


@pytest.mark.parametrize("seed", range(20))
def test_duplicates_match_the_plain_definition(seed):
    rng = np.random.default_rng(seed)
    n = 300
    user = np.sort(rng.integers(0, 4, n)).astype(np.int32)
    ts = np.zeros(n, dtype=np.int64)
    for u in np.unique(user):  # sorted keys with many repeats, as the gate sees them
        rows = user == u
        ts[rows] = np.sort(rng.integers(0, 40, rows.sum()))
    eligible = rng.random(n) < (1.0 if seed % 4 == 0 else 0.7)
    np.testing.assert_array_equal(_duplicates(user, ts, eligible), _duplicates_by_loop(user, ts, eligible))


def test_sort_rows_orders_by_user_then_time_and_says_where_rows_came_from():
    table = pa.table({
        "user_id": ["b", "a", None, "b", "a"],
        "timestamp": pa.array([5, 9, 1, 2, 3], pa.timestamp("us", tz="UTC")),
        "heart_rate": [1.0, 2.0, 3.0, 4.0, 5.0], "steps": [1, 2, 3, 4, 5], "device": ["d"] * 5,
    }).cast(CANONICAL)
    ordered, source_row, codes, starts, ts = sort_rows(table)
    assert ordered["user_id"].to_pylist() == ["a", "a", "b", "b", None]
    assert ts.tolist() == [3, 9, 2, 5, 1]
    assert source_row.tolist() == [4, 1, 3, 0, 2]
    assert starts.tolist() == [0, 2, 4] and codes[-1] == -1


def test_sorted_rows_are_left_in_place():
    table = pa.table({
        "user_id": ["a", "a", "b"], "timestamp": pa.array([1, 2, 1], pa.timestamp("us", tz="UTC")),
        "heart_rate": [1.0, 2.0, 3.0], "steps": [1, 2, 3], "device": ["d"] * 3,
    }).cast(CANONICAL)
    ordered, source_row, _, starts, _ = sort_rows(table)
    assert source_row is None and ordered is table and starts.tolist() == [0, 2]
