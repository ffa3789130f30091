"""Seeded predictions tables for the analyze stage's tests: the four required columns
(`minimal_table`), and cohorts with the metadata of predictions.parquet whose truth is known:
null tables (nothing to find) and tables with a planted effect of known size.

Labels are a user's (a condition), the same on each of their weeks; scores vary by week. A
network's logit is base + d * y + user effect + week noise with unit variance in all, so its
AUROC over user-weeks is Phi(d / sqrt(2)) (binormal) and a stratum whose noise is scaled has a
known lower AUROC (`binormal_separation`).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
from scipy import stats

DEVICES = {1: "apple_watch_1st_gen", 2: "apple_watch_series_2", 3: "apple_watch_series_3",
           4: "apple_watch_series_4"}
USER_SHARE = 0.5  # share of the logit noise's variance that is the user's (weeks correlate)


def minimal_table(num_users: int = 300, rows_per_user: int = 2, seed: int = 0,
                  tasks: tuple[str, ...] = ("sleep_apnea",)) -> tuple[pd.DataFrame, np.ndarray]:
    """user_id, task, y_true, y_score only: a decent network (scores = 2 latent + noise); also
    returns each row's noise draw, for planting a weak value."""
    rng = np.random.default_rng(seed)
    parts = []
    for task_name in tasks:
        n = num_users * rows_per_user
        latent = rng.normal(size=n)
        parts.append(pd.DataFrame({
            "user_id": np.repeat([f"u{i:04d}" for i in range(num_users)], rows_per_user),
            "task": task_name,
            "y_true": (latent + rng.normal(size=n) > 0.3).astype("int8"),
            "latent": latent, "noise": rng.normal(size=n),
        }))
    frame = pd.concat(parts, ignore_index=True)
    noise = frame.pop("noise").to_numpy()
    latent = frame.pop("latent").to_numpy()
    frame["y_score"] = 1 / (1 + np.exp(-(2 * latent + 0.5 * noise)))
    return frame, noise


def per_user(frame: pd.DataFrame, values: np.ndarray) -> np.ndarray:
    """A value per user (user u{i} gets values[i]) spread over the user's rows."""
    return values[frame["user_id"].str[1:].astype(int).to_numpy()]


def binormal_separation(auroc: float, noise_sd: float = 1.0) -> float:
    """d such that d * y + noise of sd `noise_sd` (per class) has this AUROC."""
    return float(np.sqrt(2) * noise_sd * stats.norm.ppf(auroc))


def cohort(num_users: int, rows_per_user: int, rng: np.random.Generator,
           train_share: float = 0.0) -> pd.DataFrame:
    """One row per user-week: user_id, week_start, split, device, age, sex (no task yet)."""
    generation = rng.integers(1, 5, num_users)
    users = pd.DataFrame({
        "user_id": [f"u{i:04d}" for i in range(num_users)],
        "age": rng.uniform(20, 85, num_users).round(1),
        "sex": rng.choice(["F", "M"], num_users),
        "device": [DEVICES[g] for g in generation],
        "split": np.where(rng.random(num_users) < train_share, "train", "test"),
    })
    frame = users.loc[np.repeat(users.index, rows_per_user)].reset_index(drop=True)
    frame["week_start"] = [date(2024, 1, 1) + timedelta(weeks=int(w))
                           for w in np.tile(np.arange(rows_per_user), num_users)]
    return frame


def user_labels(num_users: int, positive_share: float, rng: np.random.Generator) -> np.ndarray:
    """0/1 per user, exactly max(3, round(share * users)) positives, independent of all else."""
    labels = np.zeros(num_users, dtype="int8")
    labels[rng.choice(num_users, max(3, round(positive_share * num_users)), replace=False)] = 1
    return labels


def network_logit(y: np.ndarray, user_index: np.ndarray, separation: float,
                  rng: np.random.Generator, noise_sd: np.ndarray | float = 1.0,
                  base: float = -1.0) -> np.ndarray:
    """base + separation * y + noise of sd `noise_sd` per row, USER_SHARE of whose variance
    is a per-user effect shared by the user's weeks."""
    user_effect = rng.normal(size=user_index.max() + 1)[user_index]
    noise = np.sqrt(USER_SHARE) * user_effect + np.sqrt(1 - USER_SHARE) * rng.normal(size=len(y))
    return base + separation * y + noise_sd * noise


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def null_table(num_users: int, seed: int, rows_per_user: int = 2,
               tasks: tuple[str, ...] = ("sleep_apnea",), positive_share: float = 0.1,
               auroc: float = 0.5, train_share: float = 0.0) -> pd.DataFrame:
    """Nothing to find: labels independent of age, sex and device; the network's scores
    carry signal (`auroc`; 0.5: none) equally in every stratum; no value more common among
    losses than among correct predictions. The baseline cannot beat chance, no stratum
    differs from the rest."""
    rng = np.random.default_rng(seed)
    frame = cohort(num_users, rows_per_user, rng, train_share)
    user_index = frame["user_id"].str[1:].astype(int).to_numpy()
    parts = []
    for task_name in tasks:
        y = user_labels(num_users, positive_share, rng)[user_index]
        logit = network_logit(y, user_index, binormal_separation(auroc), rng)
        parts.append(frame.assign(task=task_name, y_true=y, y_score=sigmoid(logit)))
    return pd.concat(parts, ignore_index=True)


def weak_generation_table(num_users: int, seed: int, auroc: float, weak_auroc: float,
                          rows_per_user: int = 2, positive_share: float = 0.2) -> pd.DataFrame:
    """A network of AUROC `auroc` except on device generation 1, where its noise is scaled up
    so that the AUROC there is `weak_auroc`: a planted WEAK_STRATUM of known gap."""
    rng = np.random.default_rng(seed)
    frame = cohort(num_users, rows_per_user, rng)
    user_index = frame["user_id"].str[1:].astype(int).to_numpy()
    y = user_labels(num_users, positive_share, rng)[user_index]
    separation = binormal_separation(auroc)
    weak_sd = separation / binormal_separation(weak_auroc)
    noise_sd = np.where(frame["device"] == DEVICES[1], weak_sd, 1.0)
    logit = network_logit(y, user_index, separation, rng, noise_sd)
    return frame.assign(task="sleep_apnea", y_true=y, y_score=sigmoid(logit))


def metadata_network_table(num_users: int, seed: int, rows_per_user: int = 2,
                           metadata_auroc: float = 0.7, extra_auroc: float = 0.5
                           ) -> pd.DataFrame:
    """Labels that depend on age and sex alone (an AUROC of about `metadata_auroc` for a
    model of them) and a network whose score is that model's risk plus, when `extra_auroc`
    > 0.5, a signal the metadata do not have. extra_auroc = 0.5: a metadata-dominated network
    (the claim METADATA_DOMINATED is true)."""
    rng = np.random.default_rng(seed)
    frame = cohort(num_users, rows_per_user, rng)
    user_index = frame["user_id"].str[1:].astype(int).to_numpy()
    users = frame.drop_duplicates("user_id")
    risk = ((users["age"] - 52.5) / 18.8 + 0.5 * (users["sex"] == "M")).to_numpy()
    risk = risk / risk.std()
    # y = [risk * s + N(0, 1) > c]: the AUROC of `risk` for y is about metadata_auroc
    strength = binormal_separation(metadata_auroc) / 1.6
    extra = rng.normal(size=num_users)
    latent = strength * risk + binormal_separation(extra_auroc) / 1.6 * extra
    y_user = (latent + rng.normal(size=num_users) > np.quantile(latent, 0.7)).astype("int8")
    logit = risk[user_index] + (binormal_separation(extra_auroc) / 1.6 / max(strength, 1e-9)
                                * extra[user_index]) + 0.1 * rng.normal(size=len(frame))
    return frame.assign(task="hypertension", y_true=y_user[user_index],
                        y_score=sigmoid(logit - 1))
