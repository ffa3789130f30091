"""A tiny sequence store in the exact schemas/sequence_store.py format, with learnable signals.

Planted signals (so that "training lowers the loss" means something):
- `diabetes` = 1 shifts the heart-rate channel up by 1 (standardised units) in every measured bin;
- `sleep_apnea` is noise: no signal, a head that must not be able to learn much;
- `hr_std_day_minus_night` is computed from the heart-rate channel exactly as its name says, with
  "day" the middle half of each of the 7 days of the week and "night" the first quarter.
About 20% of the condition labels and 10% of the targets are unknown (null).
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stethoscope.schemas.sequence_store import (
    CHANNELS,
    INDEX,
    METADATA_FEATURES,
    StorePaths,
    StoreStats,
)

CONDITIONS = ("diabetes", "sleep_apnea")
TARGETS = ("hr_std_day_minus_night",)
FIRST_MONDAY = date(2024, 3, 4)


def day_night_masks(num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean [T] masks of the fabricated day and night bins (7 days of T / 7 bins)."""
    phase = (np.arange(num_steps) * 7 / num_steps) % 1.0  # position within the day, 0..1
    return (phase >= 0.25) & (phase < 0.75), phase < 0.25


def write_store(
    root: Path,
    *,
    num_users: int = 30,
    weeks: int = 2,
    num_steps: int = 64,
    conditions: tuple[str, ...] = CONDITIONS,
    targets: tuple[str, ...] = TARGETS,
    shard_size: int = 8,
    seed: int = 0,
) -> Path:
    """Write index.parquet, shards/<split>-NNNNN.npy and stats.json under `root`; return it."""
    rng = np.random.default_rng(seed)
    paths = StorePaths(root=Path(root))
    paths.shards.mkdir(parents=True, exist_ok=True)
    users = [f"u{i:03d}" for i in range(num_users)]
    split_of = {u: ("train", "train", "train", "val", "test")[i % 5] for i, u in enumerate(users)}
    age = {u: float(rng.integers(25, 75)) for u in users}
    sex = {u: str(rng.choice(["F", "M", "U"], p=[0.45, 0.45, 0.1])) for u in users}
    device = {u: str(rng.choice(["apple_watch_1st_gen", "apple_watch_series_6"])) for u in users}
    label = {(u, c): (None if rng.random() < 0.2 else int(rng.random() < 0.5))
             for u in users for c in ("diabetes", "sleep_apnea")}
    day, night = day_night_masks(num_steps)

    rows: list[dict] = []
    sequences: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for u in users:
        for w in range(weeks):
            missing = rng.random(num_steps) < 0.1
            amplitude = np.where(day, rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5))
            heart_rate = rng.normal(0.0, 1.0, num_steps) * amplitude
            heart_rate += 1.0 if label[(u, "diabetes")] == 1 else 0.0
            heart_rate[missing] = 0.0
            steps = rng.normal(0.0, 1.0, num_steps)
            sequence = np.stack([heart_rate, steps, missing.astype(float)], axis=-1)
            measured = ~missing
            target = float(np.std(heart_rate[day & measured]) - np.std(heart_rate[night & measured]))
            split = split_of[u]
            sequences[split].append(sequence.astype(np.float32))
            rows.append({
                "user_id": u, "week_start": FIRST_MONDAY + timedelta(weeks=w), "split": split,
                "device": device[u],
                "device_generation": 1 if device[u] == "apple_watch_1st_gen" else 6,
                "age": age[u], "sex": sex[u], "timezone": "Europe/Berlin",
                "coverage": float(measured.mean()),
                "metadata": [(age[u] - 50.0) / 15.0, *(float(sex[u] == s) for s in "FMU")],
                "hr_std_day_minus_night": None if rng.random() < 0.1 else target,
                **{c: label[(u, c)] for c in conditions},
            })

    # shards hold one split each; index rows point at (shard, row)
    position = {split: 0 for split in sequences}
    for row in rows:
        split, k = row["split"], position[row["split"]]
        row["shard"], row["row"] = f"{split}-{k // shard_size:05d}.npy", k % shard_size
        position[split] += 1
    for split, arrays in sequences.items():
        for start in range(0, len(arrays), shard_size):
            np.save(paths.shard(f"{split}-{start // shard_size:05d}.npy"),
                    np.stack(arrays[start:start + shard_size]))

    schema = pa.schema([*INDEX, *(pa.field(t, pa.float64()) for t in targets),
                        *(pa.field(c, pa.int8()) for c in conditions)])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), paths.index)
    stats = StoreStats(
        num_steps=num_steps, channels=list(CHANNELS), bin_seconds=7 * 86400 / num_steps,
        metadata_features=list(METADATA_FEATURES), heart_rate_mean=70.0, heart_rate_std=10.0,
        log_steps_mean=1.5, log_steps_std=1.0, age_mean=50.0, age_std=15.0,
        targets=list(targets), conditions=list(conditions),
        counts={split: len(arrays) for split, arrays in sequences.items()},
    )
    paths.stats.write_text(stats.model_dump_json(indent=2))
    return paths.root


@pytest.fixture
def make_store(tmp_path: Path):
    """make_store(**write_store options) -> store directory (a fresh one per call)."""
    counter = iter(range(1000))

    def make(**options) -> Path:
        return write_store(tmp_path / f"store-{next(counter)}", **options)

    return make


def write_array_store(root: Path, x: np.ndarray, meta: np.ndarray, splits: list[str] | None = None,
                      bin_seconds: float = 3600.0) -> None:
    """Given arrays as a store: one shard holding `x` [n, T, C], metadata `meta` [n, M], every
    user-week its own user, split `splits[i]` (default: all "val")."""
    n = len(x)
    splits = splits or ["val"] * n
    (root / "shards").mkdir(parents=True)
    np.save(root / "shards" / "all-00000.npy", x)
    pq.write_table(pa.table({
        "user_id": [f"u{i}" for i in range(n)],
        "week_start": [date(2024, 1, 1)] * n,
        "split": splits,
        "shard": ["all-00000.npy"] * n,
        "row": np.arange(n, dtype=np.int32),
        "device": ["fitbit"] * n,
        "device_generation": np.ones(n, np.int16),
        "age": np.full(n, 40.0),
        "sex": ["F"] * n,
        "timezone": ["UTC"] * n,
        "coverage": np.ones(n),
        "metadata": list(meta),
    }, schema=INDEX), root / "index.parquet")
    counts = {s: splits.count(s) for s in sorted(set(splits))}
    stats = StoreStats(num_steps=x.shape[1], channels=list(CHANNELS), bin_seconds=bin_seconds,
                       metadata_features=list(METADATA_FEATURES), heart_rate_mean=0,
                       heart_rate_std=1, log_steps_mean=0, log_steps_std=1, age_mean=40, age_std=10,
                       targets=[], conditions=[], counts=counts)
    (root / "stats.json").write_text(stats.model_dump_json())


def healthy_audit_model(steps: int, units: int, seed: int = 0, channels: int = len(CHANNELS),
                        metadata_size: int = len(METADATA_FEATURES)):
    """A DeepHeart-shaped network at random initialisation, for the audits' clean cases:
    leaky-ReLU convolutions, a BiLSTM of `units` started from a metadata Dense, raw_output, a
    pooled sigmoid head."""
    import keras

    keras.utils.set_random_seed(seed)
    sequence = keras.Input((steps, channels), name="sequence")
    metadata = keras.Input((metadata_size,), name="metadata")
    x = keras.layers.Conv1D(8, 5, padding="same", activation="leaky_relu", name="conv_1")(sequence)
    x = keras.layers.Conv1D(8, 5, padding="same", activation="leaky_relu", name="conv_2")(x)
    states = keras.layers.Dense(4 * units, activation="tanh", name="initial_state")(metadata)
    x = keras.layers.Bidirectional(keras.layers.LSTM(units, return_sequences=True), name="bilstm")(
        x, initial_state=list(keras.ops.split(states, 4, axis=-1)))
    raw = keras.layers.Dense(1, name="raw_output")(x)
    pooled = keras.layers.GlobalAveragePooling1D(name="pooled")(raw)
    return keras.Model([sequence, metadata], keras.layers.Activation("sigmoid", name="head_a")(pooled))
