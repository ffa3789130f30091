"""Streaming per-unit statistics of the activation audit: O(units) memory per layer, whatever
the number of user-weeks.

`reduce_batch` reduces one batch of one layer, a: [b, T_l, units], to per-unit counts (zeros,
saturated positions) and per-user-week ranges and standard deviations over time; `UnitSums`
accumulates them over the sample and turns them into the layer's rows of the per-unit table
(UNITS_SCHEMA: shares, dead, constant, saturated, by the definitions of tasks/audits/activations/audit.py);
`layer_record` summarises those rows as the layer's LayerActivations.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from stethoscope.schemas.summary import LayerActivations
from stethoscope.tasks.audits.activations.config import ActivationsConfig


class UnitSums:
    """Running per-unit counts of one layer; O(units) memory whatever the sample size."""

    def __init__(self, units: int, has_time: bool) -> None:
        self.has_time = has_time
        self.positions = 0
        self.user_weeks = 0
        self.zeros = np.zeros(units, np.int64)
        self.saturated = np.zeros(units, np.int64)
        self.constant_weeks = np.zeros(units, np.int64)
        self.std_sum = np.zeros(units, np.float64)
        self.low = np.full(units, np.inf)
        self.high = np.full(units, -np.inf)
        self.scale = np.zeros(units, np.float64)

    def add(self, out: dict[str, np.ndarray], config: ActivationsConfig) -> None:
        low, high, scale = (out[k].astype(np.float64) for k in ("low", "high", "scale"))
        self.positions += int(out["positions"])
        self.user_weeks += low.shape[0]
        self.zeros += out["zeros"]
        self.saturated += out["saturated"]
        if self.has_time:  # [b, units]: one range per user-week
            self.constant_weeks += np.count_nonzero(
                high - low <= config.constant_atol + config.constant_rtol * scale, axis=0)
            self.std_sum += out["std"].astype(np.float64).sum(axis=0)
        else:  # across user-weeks: keep the running range
            self.low = np.minimum(self.low, low.min(axis=0))
            self.high = np.maximum(self.high, high.max(axis=0))
            self.scale = np.maximum(self.scale, scale.max(axis=0))

    def table(self, layer: str, bound: str | None, config: ActivationsConfig) -> pd.DataFrame:
        zero_share = self.zeros / self.positions
        if self.has_time:
            constant_share = self.constant_weeks / self.user_weeks
            temporal_std_mean = self.std_sum / self.user_weeks
        elif self.user_weeks >= 2:
            flat = self.high - self.low <= config.constant_atol + config.constant_rtol * self.scale
            # Every unit flat: the layer's input did not vary over the sample (e.g. a cohort
            # whose metadata is all alike), which says nothing about the units themselves.
            constant_share = np.full(len(self.zeros), np.nan) if flat.all() else flat.astype(np.float64)
            temporal_std_mean = np.full(len(self.zeros), np.nan)
        else:  # one user-week: nothing to compare with
            constant_share = np.full(len(self.zeros), np.nan)
            temporal_std_mean = np.full(len(self.zeros), np.nan)
        saturated_share = self.saturated / self.positions if bound else np.full(len(self.zeros),
                                                                                 np.nan)
        dead = zero_share >= config.dead_threshold
        return pd.DataFrame({
            "layer": layer,
            "unit": np.arange(len(self.zeros), dtype=np.int32),
            "zero_share": zero_share,
            "temporal_std_mean": temporal_std_mean,
            "constant_share": constant_share,
            "saturated_share": saturated_share,
            "dead": dead,
            "constant": ~dead & (np.nan_to_num(constant_share) >= config.constant_threshold),
            "saturated": np.nan_to_num(saturated_share) >= config.saturated_threshold,
        })


def reduce_batch(a: tf.Tensor, bound: str | None, margin: float) -> dict[str, np.ndarray]:
    """Per-unit reductions of one batch of one layer, a: [b, T_l, units]."""
    if bound == "tanh":
        saturated = tf.math.count_nonzero(tf.abs(a) > 1.0 - margin, axis=[0, 1])
    elif bound == "sigmoid":
        saturated = tf.math.count_nonzero((a < margin) | (a > 1.0 - margin), axis=[0, 1])
    else:
        saturated = tf.zeros([a.shape[-1]], tf.int64)
    return {
        "positions": np.int64(a.shape[0] * a.shape[1]),
        "zeros": tf.math.count_nonzero(tf.equal(a, 0.0), axis=[0, 1]).numpy(),
        "saturated": saturated.numpy(),
        "low": tf.reduce_min(a, axis=1).numpy(),  # [b, units]
        "high": tf.reduce_max(a, axis=1).numpy(),
        "scale": tf.reduce_max(tf.abs(a), axis=1).numpy(),
        "std": tf.math.reduce_std(a, axis=1).numpy(),
    }


def layer_record(table: pd.DataFrame, name: str) -> LayerActivations:
    return LayerActivations(
        name=name,
        units=len(table),
        dead_units=table.loc[table["dead"], "unit"].astype(int).tolist(),
        dead_fraction=float(table["dead"].mean()),
        constant_units=table.loc[table["constant"], "unit"].astype(int).tolist(),
        saturated_fraction=float(table["saturated"].mean()),
    )
