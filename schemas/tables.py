"""pyarrow schemas of every table stethoscope reads or persists.

Input tables (a cohort directory, docs/architecture.md §4) are accepted with some latitude (timestamp
in us or ns, any float/integer width) and normalised to the canonical schemas below, which are
what every persisted table uses.
"""

from __future__ import annotations

import pyarrow as pa

DEFAULT_CONDITIONS: tuple[str, ...] = (
    "diabetes",
    "hypertension",
    "sleep_apnea",
    "high_cholesterol",
)
SEXES: tuple[str, ...] = ("F", "M", "U")

# --- cohort input ------------------------------------------------------------------------

SENSOR_LOGS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("heart_rate", pa.float64()),
        pa.field("steps", pa.int64()),
        pa.field("device", pa.string(), nullable=False),
    ],
    metadata={"doc": "One row per sample: start of the sample's interval, UTC."},
)

USERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("age", pa.float64()),
        pa.field("sex", pa.string()),
        pa.field("timezone", pa.string(), nullable=False),
    ]
)


def labels_schema(conditions: tuple[str, ...] = DEFAULT_CONDITIONS) -> pa.Schema:
    """labels.parquet: user_id plus one nullable 0/1 column per condition (null = unknown)."""
    return pa.schema(
        [pa.field("user_id", pa.string(), nullable=False)]
        + [pa.field(name, pa.int8()) for name in conditions]
    )


LABELS = labels_schema()

# --- validation outputs ------------------------------------------------------------------

QUARANTINE = pa.schema(
    [field.with_nullable(True) for field in SENSOR_LOGS]  # as it came: nulls included
    + [
        pa.field("rule", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
    ],
    metadata={"doc": "A quarantined row as it came, the first rule it broke, and where from."},
)

# --- predictions (also the input of `stethoscope analyze`) ---------------------------------

PREDICTIONS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("week_start", pa.date32(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("y_true", pa.int8(), nullable=False),
        pa.field("y_score", pa.float64(), nullable=False),
        pa.field("device", pa.string()),
        pa.field("device_generation", pa.int16()),  # null = unknown device
        pa.field("age", pa.float64()),
        pa.field("sex", pa.string()),
    ],
    metadata={"doc": "One row per user-week and task; further columns are extra metadata."},
)

# --- labels: the user-week table (tasks.labels.user_weeks) --------------------------------------------

USER_WEEKS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("week_start", pa.date32(), nullable=False),  # the local Monday
        pa.field("week_start_utc", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("week_end_utc", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("num_samples", pa.int64(), nullable=False),
        pa.field("num_heart_rate_samples", pa.int64(), nullable=False),
        pa.field("coverage", pa.float64(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("device_generation", pa.int16()),  # null = unknown device
    ]
    + [
        pa.field(name, pa.float64(), metadata={"role": "target"})
        for name in (
            "hr_std_day_minus_night",
            "mean_daily_steps",
            "resting_heart_rate",
            "hr_recovery_minutes",
            "night_resting_hr_change",
        )
    ],
    metadata={"doc": "One row per user and local ISO week with samples: coverage, dominant "
              "device and the synthetic targets (defined in tasks.labels.user_weeks)."},
)
USER_WEEK_TARGETS: tuple[str, ...] = tuple(
    f.name for f in USER_WEEKS if f.metadata and f.metadata.get(b"role") == b"target"
)
