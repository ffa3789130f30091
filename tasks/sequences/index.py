"""The sequence store's index and stats: join the stored user-weeks with the user-week table
(device, targets), the users table (age, sex, time zone, metadata vector) and the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.schemas.sequence_store import INDEX, METADATA_FEATURES
from stethoscope.schemas.tables import SEXES

PLACES = pa.schema([INDEX.field(name) for name in
                    ("user_id", "week_start", "split", "coverage", "shard", "row")])


def build_index(places: pa.Table, users: pa.Table, user_weeks_file: Path,
                labels_file: Path | None) -> tuple[pa.Table, dict]:
    """The index (INDEX columns, one float64 column per target, one int8 column per
    condition; sorted by shard and row) and the statistics it fixes: age mean and std over
    train users, the targets and the conditions."""
    targets = [f.name for f in pq.read_schema(user_weeks_file)
               if f.metadata and f.metadata.get(b"role") == b"target"]
    weeks = pq.read_table(user_weeks_file, columns=["user_id", "week_start", "device",
                                                   "device_generation", *targets])
    index = places.join(weeks, keys=["user_id", "week_start"], join_type="left outer")
    index = index.join(users, keys="user_id", join_type="left outer")
    labels, conditions = read_labels(labels_file, reserved=set(index.column_names))
    if labels is not None:
        index = index.join(labels, keys="user_id", join_type="left outer")
    index = index.sort_by([("shard", "ascending"), ("row", "ascending")])
    age_mean, age_std = train_age_moments(index)
    index = index.append_column("metadata", metadata_vectors(index, age_mean, age_std))
    schema = pa.schema(list(INDEX) + [pa.field(t, pa.float64()) for t in targets]
                       + [pa.field(c, pa.int8()) for c in conditions])
    stats = {"age_mean": age_mean, "age_std": age_std, "targets": targets,
             "conditions": conditions}
    return index.select(schema.names).cast(schema), stats


def read_labels(labels_file: Path | None, reserved: set[str]) -> tuple[pa.Table | None, list[str]]:
    """labels.parquet as (user_id, int8 condition columns), or (None, []) when absent."""
    if labels_file is None or not Path(labels_file).exists():
        return None, []
    labels = pq.read_table(labels_file)
    conditions = [c for c in labels.column_names if c != "user_id"]
    problems = []
    clash = sorted(set(conditions) & reserved)
    if clash:
        problems.append(Problem(
            rule="label_column_clash", file=str(labels_file), column=clash[0],
            message=f"condition columns {clash} are also index columns.",
            fix="rename those condition columns"))
    if len(pc.unique(labels["user_id"])) != labels.num_rows:
        problems.append(Problem(
            rule="duplicate_user", file=str(labels_file), column="user_id",
            message="a user has more than one row.", fix="keep one row per user"))
    if problems:
        raise DataContractError("sequences: labels.parquet cannot be joined", problems)
    schema = pa.schema([pa.field("user_id", pa.string())]
                       + [pa.field(c, pa.int8()) for c in conditions])
    return labels.select(schema.names).cast(schema), conditions


def train_age_moments(index: pa.Table) -> tuple[float, float]:
    """Mean and population std of age over the train users (each counted once)."""
    train = index.filter(pc.equal(index["split"], "train")).select(["user_id", "age"])
    ages = train.group_by("user_id").aggregate([("age", "min")])["age_min"]
    values = ages.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return 0.0, 1.0
    std = float(values.std())
    return float(values.mean()), std if std > 0 else 1.0


def metadata_vectors(index: pa.Table, age_mean: float, age_std: float) -> pa.Array:
    """[standardised age (0 when unknown), sex one-hot F, M, U (U when unknown)] per row."""
    age = index["age"].to_numpy(zero_copy_only=False).astype(np.float64)
    age = np.nan_to_num((age - age_mean) / age_std, nan=0.0)
    sex = np.asarray(index["sex"].fill_null("U").to_pylist(), dtype=object)
    sex = np.where(np.isin(sex, SEXES), sex, "U")
    values = np.column_stack([age] + [sex == s for s in SEXES]).astype(np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel(), pa.float32()),
                                             len(METADATA_FEATURES))
