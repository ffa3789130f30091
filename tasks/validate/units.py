"""The validation stage's units: files that share users are checked together, each unit on a
worker thread, in user buckets, and written as clean and quarantine Parquet.

A unit's outcome is a `UnitTally` (counts per file and rule, users, unknown devices, its part
of the great-expectations sample); the stage merges them in order.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from stethoscope.schemas.atomic import write_parquet_atomic
from stethoscope.schemas.devices import DEVICE_CATALOG
from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.tables import QUARANTINE
from stethoscope.tasks.validate.files import (
    FileCheck,
    read_canonical,
    read_user_ids,
    write_sensor_logs,
)
from stethoscope.tasks.validate.rules import (
    NUM_CODES,
    RULE_NAMES,
    CheckedRows,
    RowLimits,
    check_rows,
    dictionary_codes,
)


def plan_units(checks: list[FileCheck]) -> list[list[FileCheck]]:
    """Group files that share users (so every clean file holds all rows of its users).

    Parquet min/max statistics decide most cases without reading data; files whose user ranges
    overlap have their user_id column read to decide exactly."""
    order = sorted(range(len(checks)), key=lambda i: checks[i].user_range or ("", ""))
    parent = list(range(len(checks)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # candidate pairs: overlapping ranges (unknown range overlaps everything)
    users: dict[int, set[str]] = {}

    def user_set(i: int) -> set[str]:
        if i not in users:
            users[i] = set(read_user_ids(checks[i].path).to_pylist())
        return users[i]

    for a_pos, a in enumerate(order):
        ra = checks[a].user_range
        for b in order[a_pos + 1:]:
            rb = checks[b].user_range
            if ra is not None and rb is not None and rb[0] > ra[1]:
                break  # sorted by range start: no later file can overlap a
            if find(a) != find(b) and user_set(a) & user_set(b):
                parent[find(b)] = find(a)
    groups: dict[int, list[FileCheck]] = {}
    for i in range(len(checks)):
        groups.setdefault(find(i), []).append(checks[i])
    return sorted(groups.values(), key=lambda g: str(g[0].path))


@dataclass(frozen=True)
class KnownUsers:
    """The ids of users.parquet: usable ones, and those set aside for bad metadata."""

    usable: pa.Array  # string
    set_aside: pa.Array  # string


@dataclass
class UnitTally:
    """Running counts while streaming; per file and per rule."""

    per_file: dict[str, Counter] = field(default_factory=dict)
    unknown_devices: Counter = field(default_factory=Counter)
    users: int = 0
    gx_parts: list[pa.Table] = field(default_factory=list)

    def add(self, name: str, key: str, count: int) -> None:
        self.per_file.setdefault(name, Counter())[key] += int(count)

    def merge(self, other: UnitTally) -> None:
        for name, counts in other.per_file.items():
            self.per_file.setdefault(name, Counter()).update(counts)
        self.unknown_devices.update(other.unknown_devices)
        self.users += other.users
        self.gx_parts += other.gx_parts


def check_unit(unit_no: int, unit: list[FileCheck], staged: RunPaths, users: KnownUsers,
                limits: RowLimits, bucket_rows: int, gx_every: int) -> UnitTally:
    """Check one unit of files (sharing users) in user buckets of at most `bucket_rows` rows;
    write its clean and quarantined rows; return its counts."""
    tally = UnitTally()
    rows = sum(c.num_rows or 0 for c in unit)
    num_buckets = max(1, -(-rows // bucket_rows))
    for bucket in range(num_buckets):
        parts, sources, positions = [], [], []
        for source_no, c in enumerate(unit):
            table = read_canonical(c.path)
            position = None
            if num_buckets > 1:
                keep = _bucket_of(table["user_id"], num_buckets) == bucket
                table, position = table.filter(pa.array(keep)), np.flatnonzero(keep)
            parts.append(table)
            sources.append(np.full(table.num_rows, source_no, dtype=np.int32))
            positions.append(np.arange(table.num_rows, dtype=np.int64) if position is None else position)
        table = pa.concat_tables(parts).unify_dictionaries() if len(parts) > 1 else parts[0]
        checked = check_rows(table, users.usable, limits, users.set_aside)
        name = f"part-{unit_no:05d}-{bucket:03d}.parquet"
        _write_outcome(unit, checked, name, staged, tally, num_buckets == 1)
        if checked.table.num_rows and gx_every:
            tally.gx_parts.append(checked.table.take(pa.array(np.arange(0, checked.table.num_rows, gx_every))))
        _count_rules(unit, checked, sources, positions, staged, name, tally)
    return tally


def _write_outcome(unit: list[FileCheck], checked: CheckedRows, name: str, staged: RunPaths,
                   tally: UnitTally, whole_unit: bool) -> None:
    """Write the clean rows of one bucket; count its users and its devices outside the catalog."""
    clean_mask = checked.rule == 0
    all_clean = bool(clean_mask.all())
    if not clean_mask.any():
        return
    target = staged.clean / name
    if len(unit) == 1 and whole_unit and unit[0].canonical and all_clean and not checked.reordered:
        # Nothing to change: copy the bytes instead of re-encoding them.
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(unit[0].path, target)
        clean = checked.table
    else:
        clean = checked.table if all_clean else checked.table.filter(pa.array(clean_mask))
        write_sensor_logs(clean, target)
    # users with a clean row: one run each (rows are sorted by user)
    if all_clean:
        tally.users += checked.user_starts.size
    else:
        clean_per_run = np.add.reduceat(clean_mask, checked.user_starts)
        tally.users += int(np.count_nonzero(clean_per_run))
    for device, count in _device_counts(clean["device"]).items():
        if device not in DEVICE_CATALOG:
            tally.unknown_devices[device] += count


def _count_rules(unit: list[FileCheck], checked: CheckedRows, sources: list[np.ndarray],
                 positions: list[np.ndarray], staged: RunPaths, name: str, tally: UnitTally) -> None:
    """Count every row under its first broken rule, per file; write the quarantined rows with
    the rule and where they came from."""
    rule = checked.rule
    bad = rule != 0
    source = sources[0] if len(sources) == 1 else np.concatenate(sources)
    if bad.any():
        position = positions[0] if len(positions) == 1 else np.concatenate(positions)
        bad_rows = np.flatnonzero(bad)
        from_row = bad_rows if checked.source_row is None else checked.source_row[bad_rows]
        names = np.array([c.name for c in unit], dtype=object)
        rule_names = np.array([RULE_NAMES[r] for r in range(1, NUM_CODES)], dtype=object)
        quarantined = checked.table.take(pa.array(bad_rows))
        quarantined = quarantined.append_column("rule", pa.array(rule_names[rule[bad_rows] - 1], pa.string())
        ).append_column("source_file", pa.array(names[source[from_row]], pa.string())
        ).append_column("source_row", pa.array(position[from_row], pa.int64()))
        write_parquet_atomic(quarantined.cast(QUARANTINE), staged.quarantine / name)

    if len(unit) == 1:
        counts = np.bincount(rule, minlength=NUM_CODES)[None]
    else:  # rows per (file, rule), one pass: `source` in the order as read, `rule` sorted
        in_order = source if checked.source_row is None else source[checked.source_row]
        counts = np.bincount(in_order.astype(np.int64) * NUM_CODES + rule,
                             minlength=NUM_CODES * len(unit)).reshape(-1, NUM_CODES)
    for c, per_rule in zip(unit, counts, strict=True):
        tally.add(c.name, "rows_in", int(per_rule.sum()))
        tally.add(c.name, "rows_clean", int(per_rule[0]))
        tally.add(c.name, "rows_quarantined", int(per_rule[1:].sum()))
        for code in range(1, NUM_CODES):
            if per_rule[code]:
                tally.add(c.name, f"rule:{RULE_NAMES[code]}", int(per_rule[code]))


def _device_counts(device: pa.ChunkedArray) -> Counter:
    """Rows per device value. Devices come in long runs (a user wears one for weeks), so
    counting runs of dictionary codes costs one integer comparison per row."""
    counts: Counter = Counter()
    for chunk in device.chunks:
        if not len(chunk):
            continue
        codes = chunk.indices.to_numpy(zero_copy_only=False)
        starts = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
        lengths = np.diff(np.r_[starts, codes.size])
        values = chunk.dictionary.take(chunk.indices.take(pa.array(starts))).to_pylist()
        for value, length in zip(values, lengths.tolist(), strict=True):
            counts[value] += length
    return counts


def _bucket_of(user_id: pa.ChunkedArray, num_buckets: int) -> np.ndarray:
    """A stable bucket per user (hash of the id), so a user's rows land in one bucket
    (null user_id: bucket 0)."""
    codes = dictionary_codes(user_id)
    values = user_id.chunks[0].dictionary.to_numpy(zero_copy_only=False) if user_id.num_chunks else []
    hashed = pd.util.hash_array(np.asarray(values, dtype=object)) % num_buckets
    return np.r_[hashed, 0][codes].astype(np.int64)
