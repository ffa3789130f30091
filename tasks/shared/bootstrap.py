"""User-level (cluster) bootstrap with BCa intervals, for statistics of weighted rows (numpy only).

Weeks of one user are not independent, so users are what is resampled. A statistic here is a
function of user counts [draws, users] (how often each user is in a resample; each of the
user's rows weighs that much) returning values [statistics, draws], so whole blocks of
resamples are evaluated at once. `replicate` evaluates it on the sample itself (every count
1), on the bootstrap resamples and on a leave-one-group-out jackknife; `estimate` turns one
statistic's replicates into a value, a BCa interval and a standard error.

BCa (Efron 1987; Efron & Tibshirani 1993, ch. 14) takes the percentiles of the bootstrap draws
at levels shifted by the bias correction z0 (where the observed value falls among the draws;
draws equal to it count half, which matters for the discrete AUROCs of small samples) and the
acceleration a (the skewness of the jackknife influence values). With more users than
`max_groups` the jackknife leaves out groups of users: the second and third cumulants of sums
of independent influences add up, so the acceleration keeps its expectation. The same number
as `scipy.stats.bootstrap(method="BCa")` with users as the observations, computed without
re-evaluating the statistic per resample in Python.

An interval is undefined (None), never a misleading pair of numbers, when it is degenerate:
- more than `max_undefined` of the resamples leave the statistic undefined (an AUROC whose
  resample lacks a class: with u users of a class, about exp(-u) of the resamples lack them
  all, so the default 10% asks for about three users of each class);
- the defined draws do not vary (an AUROC of 1.000 in every resample of eight rows);
- the observed value lies outside the draws (z0 infinite), or the acceleration breaks the
  percentile formula.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Largest block of [draws, rows] float64 held at once (~16 MB).
_BLOCK_ELEMENTS = 2_000_000
MAX_JACKKNIFE_GROUPS = 200
DEFAULT_MAX_UNDEFINED = 0.1

UserStatistic = Callable[[np.ndarray], np.ndarray]  # counts [draws, users] -> [statistics, draws]


def block_size(num_draws: int, num_rows: int, most: int = 1_000) -> int:
    return int(max(1, min(num_draws, most, _BLOCK_ELEMENTS // max(num_rows, 1))))


def user_bootstrap_counts(
    num_users: int, num_draws: int, num_rows: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Blocks [draws, users]: how often each user is drawn (with replacement) per resample.
    A row's weight is its user's count: gather with a row -> user index."""
    step = block_size(num_draws, num_rows)
    for start in range(0, num_draws, step):
        size = min(step, num_draws - start)
        drawn = rng.integers(0, num_users, size=(size, num_users))
        flat = (drawn + num_users * np.arange(size)[:, None]).ravel()
        yield np.bincount(flat, minlength=size * num_users).reshape(size, num_users).astype(float)


def jackknife_counts(
    num_users: int, num_rows: int, rng: np.random.Generator, max_groups: int = MAX_JACKKNIFE_GROUPS
) -> Iterator[np.ndarray]:
    """Blocks [groups, users] of 0/1 counts, each leaving out one group of users: one user per
    group up to `max_groups` users, else users dealt at random into `max_groups` groups."""
    num_groups = min(num_users, max_groups)
    group_of = rng.permutation(num_users) % num_groups
    step = block_size(num_groups, num_rows)
    for start in range(0, num_groups, step):
        left_out = np.arange(start, min(start + step, num_groups))
        yield (group_of[None, :] != left_out[:, None]).astype(float)


@dataclass(frozen=True)
class Replicates:
    """A statistic evaluated on the sample, its bootstrap resamples and its jackknife."""

    observed: np.ndarray  # [statistics]
    draws: np.ndarray  # [statistics, num_bootstrap]; NaN where a resample leaves it undefined
    jackknife: np.ndarray  # [statistics, groups]


def replicate(statistic: UserStatistic, num_users: int, num_rows: int, num_bootstrap: int,
              rng: np.random.Generator, max_groups: int = MAX_JACKKNIFE_GROUPS) -> Replicates:
    """`statistic` on every user once, on `num_bootstrap` user-level resamples and on the
    leave-one-group-out jackknife; blocks sized for `num_rows` rows."""
    observed = statistic(np.ones((1, num_users)))[:, 0]
    draws = np.concatenate([statistic(c) for c in user_bootstrap_counts(
        num_users, num_bootstrap, num_rows, rng)], axis=1)
    jackknife = np.concatenate([statistic(c) for c in jackknife_counts(
        num_users, num_rows, rng, max_groups)], axis=1)
    return Replicates(observed, draws, jackknife)


@dataclass(frozen=True)
class Estimate:
    """A statistic's value with its BCa interval and bootstrap standard error; the interval
    and the error are None when undefined (see the module docstring), the value when the
    sample itself leaves it undefined."""

    value: float | None
    ci: tuple[float, float] | None
    se: float | None


UNDEFINED = Estimate(None, None, None)


def estimate(replicates: Replicates, index: int, alpha: float,
             max_undefined: float = DEFAULT_MAX_UNDEFINED) -> Estimate:
    """Statistic `index` of `replicates` with its BCa interval at level 1 - alpha."""
    observed = float(replicates.observed[index])
    if not np.isfinite(observed):
        return UNDEFINED
    draws = replicates.draws[index]
    ci = bca_interval(observed, draws, replicates.jackknife[index], alpha, max_undefined)
    se = float(np.std(draws[np.isfinite(draws)], ddof=1)) if ci is not None else None
    return Estimate(observed, ci, se)


def bca_interval(observed: float, draws: np.ndarray, jackknife: np.ndarray, alpha: float,
                 max_undefined: float = DEFAULT_MAX_UNDEFINED) -> tuple[float, float] | None:
    """Two-sided BCa interval at level 1 - alpha, or None when degenerate."""
    finite = draws[np.isfinite(draws)]
    if finite.size < 2 or 1 - finite.size / draws.size > max_undefined:
        return None
    tolerance = 1e-12 * max(1.0, abs(observed))
    if np.ptp(finite) <= tolerance:
        return None
    share_below = (np.mean(finite < observed - tolerance)
                   + 0.5 * np.mean(np.abs(finite - observed) <= tolerance))
    if not 0 < share_below < 1:
        return None
    z0 = stats.norm.ppf(share_below)
    acceleration = _acceleration(jackknife[np.isfinite(jackknife)])
    if acceleration is None:
        return None
    z = z0 + stats.norm.ppf([alpha / 2, 1 - alpha / 2])
    denominator = 1 - acceleration * z
    if np.any(denominator <= 0):
        return None
    levels = stats.norm.cdf(z0 + z / denominator)
    low, high = np.quantile(finite, levels)
    return float(low), float(high)


def _acceleration(jackknife: np.ndarray) -> float | None:
    """Efron's acceleration from jackknife values: skewness of the influence values / 6."""
    if jackknife.size < 2:
        return None
    influence = jackknife.mean() - jackknife
    spread = float(np.sum(influence**2))
    return 0.0 if spread == 0 else float(np.sum(influence**3) / (6 * spread**1.5))
