"""Statistics of the analyze stage, on numpy arrays only (no pandas, no files).

AUROC is the Mann-Whitney statistic P(score_pos > score_neg) + P(tie) / 2. Scores are sorted
once (`RankedScores`); the AUROC under any weighting of the rows is then a few O(n) passes, so a
whole block of bootstrap resamples or permutations is one matrix [draws, rows] at a time:
nothing calls scikit-learn inside a loop.

Weeks of one user are not independent, so both resampling schemes work on users:
- bootstrap: users are drawn with replacement; a row's weight is how often its user was drawn;
- permutation: stratum membership (the value a user has on most of their weeks) is shuffled
  among users, so the test keeps each user's weeks together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import stats

# Largest block of [draws, rows] float64 held at once (~16 MB).
_BLOCK_ELEMENTS = 2_000_000
# Permutations stop once this many are at least as extreme as the observed difference
# (Besag & Clifford 1991): a clearly null stratum costs ~2x this many, not all of them.
STOP_AFTER_EXCEEDANCES = 50
_PERMUTATION_BLOCK = 100


class RankedScores:
    """Scores sorted once, with their tie groups, to evaluate many weighted AUROCs cheaply."""

    def __init__(self, scores: np.ndarray, y_true: np.ndarray) -> None:
        self.order = np.argsort(scores, kind="stable")
        ranked = np.asarray(scores, dtype=float)[self.order]
        self.positive = np.asarray(y_true, dtype=bool)[self.order]
        # First index of each run of equal scores: ties share one group.
        self.starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
        self.has_ties = len(self.starts) < len(ranked)

    def sort(self, row_values: np.ndarray) -> np.ndarray:
        """Put per-row values ([rows] or [draws, rows]) in score order."""
        return row_values[..., self.order]

    def groups(self, sorted_weights: np.ndarray) -> Groups:
        """Positive and negative weight per tie group of sorted weights [draws, rows]."""
        weights = np.atleast_2d(sorted_weights).astype(float, copy=False)
        pos = np.where(self.positive, weights, 0.0)
        neg = weights - pos
        if self.has_ties:
            pos = np.add.reduceat(pos, self.starts, axis=1)
            neg = np.add.reduceat(neg, self.starts, axis=1)
        return Groups(pos, neg, self.has_ties)

    def auroc(self, weights: np.ndarray | None = None) -> np.ndarray:
        """AUROC per row of `weights` ([draws, rows], row order); all-ones when None."""
        if weights is None:
            weights = np.ones(len(self.order))
        return self.groups(self.sort(weights)).auroc()


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of [draws, groups] arrays; either may be a single broadcast row."""
    if len(a) == 1 and len(b) > 1:
        return np.einsum("ij,j->i", b, a[0])
    if len(b) == 1 and len(a) > 1:
        return np.einsum("ij,j->i", a, b[0])
    return np.einsum("ij,ij->i", a, b)


class Groups:
    """Positive and negative weight per tie group, [draws, groups], in ascending score order.

    A positive beats the negatives of lower groups and ties with half of its own group's:
    wins = sum(pos * cumsum(neg)) - sum(pos * neg) / 2 and AUROC = wins / (P * N).
    """

    def __init__(self, pos: np.ndarray, neg: np.ndarray, has_ties: bool) -> None:
        self.pos, self.neg, self.has_ties = pos, neg, has_ties
        self.below = np.cumsum(neg, axis=1)
        self.wins = _row_dot(pos, self.below)
        if has_ties:
            self.wins = self.wins - 0.5 * _row_dot(pos, neg)
        self.num_pos, self.num_neg = pos.sum(axis=1), neg.sum(axis=1)

    def auroc(self) -> np.ndarray:
        return _ratio(self.wins, self.num_pos * self.num_neg)

    def split(self, inside: Groups) -> tuple[np.ndarray, np.ndarray]:
        """AUROC of a part of these weights (`inside`) and of the rest, per draw.

        The rest's wins follow without another cumulative sum:
        wins_out = wins + wins_in - pos.below_in - pos_in.below (+ tie terms)."""
        pos_in, neg_in = inside.pos, inside.neg
        wins_out = (self.wins + inside.wins - _row_dot(self.pos, inside.below)
                    - _row_dot(pos_in, self.below))
        if self.has_ties:
            wins_out = wins_out + 0.5 * (_row_dot(self.pos, neg_in) + _row_dot(pos_in, self.neg))
        pairs_out = (self.num_pos - inside.num_pos) * (self.num_neg - inside.num_neg)
        return inside.auroc(), _ratio(wins_out, pairs_out)


def _ratio(wins: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """wins / pairs, NaN where there is no positive-negative pair."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


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


def permuted_memberships(
    user_member: np.ndarray, num_draws: int, num_rows: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Blocks [draws, users] of 0/1 stratum membership shuffled among users."""
    step = block_size(num_draws, num_rows, most=_PERMUTATION_BLOCK)
    for start in range(0, num_draws, step):
        size = min(step, num_draws - start)
        yield rng.permuted(np.tile(user_member.astype(float), (size, 1)), axis=1)


def percentile_interval(draws: np.ndarray, alpha: float) -> tuple[float, float] | None:
    """Percentile interval at level 1 - alpha of the finite draws; None if there are none."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


@dataclass(frozen=True)
class StratumComparison:
    """AUROC of a stratum against the rest of the cohort, on one task."""

    auroc: float | None
    auroc_ci: tuple[float, float] | None
    rest_auroc: float | None
    delta: float | None  # stratum minus rest
    delta_ci: tuple[float, float] | None
    p_value: float | None  # two-sided permutation p-value; None when not tested


@dataclass(frozen=True)
class TaskComparison:
    """Network AUROC with its interval, the paired gain over the baseline, and the strata."""

    auroc: float | None
    auroc_ci: tuple[float, float] | None
    baseline_auroc: float | None
    gain_ci: tuple[float, float] | None  # network minus baseline
    gain_p_value: float | None  # one-sided bootstrap p-value of gain <= 0
    strata: list[StratumComparison]


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def permutations_needed(num_tests: int, alpha: float, at_least: int) -> int:
    """Permutations enough for the smallest attainable p-value, 1 / (P + 1), to pass a
    Bonferroni/BH threshold alpha / num_tests with room to spare (P >= 2 num_tests / alpha)."""
    return max(at_least, math.ceil(2 * num_tests / alpha))


@dataclass(frozen=True)
class Resampling:
    """How many user-level resamples and permutations, at which level, from which stream."""

    num_bootstrap: int
    num_permutations: int  # most per stratum; clear nulls stop early
    alpha: float  # intervals at level 1 - alpha
    rng: np.random.Generator


def compare_task(
    scores: np.ndarray,
    y_true: np.ndarray,
    user_index: np.ndarray,
    baseline: np.ndarray | None,
    strata: list[tuple[np.ndarray, np.ndarray | None]],
    resampling: Resampling,
) -> TaskComparison:
    """Everything one task needs, from one set of user-level bootstrap resamples.

    `strata` holds, per stratum, its row mask and the per-user membership to permute (None when
    the stratum is not to be tested). All resamples are shared: intervals of the network, the
    baseline and every stratum come from the same drawn users, so the paired differences
    (network - baseline, stratum - rest) are computed resample by resample.
    """
    network = RankedScores(scores, y_true)
    base = None if baseline is None else RankedScores(baseline, y_true)
    draws = _bootstrap_draws(network, base, user_index, [mask for mask, _ in strata], resampling)
    unweighted = network.groups(np.ones(len(scores)))
    users_ranked = network.sort(user_index)
    comparisons = [
        _compare_stratum(network, unweighted, mask, member, users_ranked,
                         (draws[2 + 2 * i], draws[3 + 2 * i]), resampling)
        for i, (mask, member) in enumerate(strata)
    ]
    gain = draws[0] - draws[1]
    finite_gain = gain[np.isfinite(gain)]
    return TaskComparison(
        auroc=_finite(unweighted.auroc()[0]),
        auroc_ci=percentile_interval(draws[0], resampling.alpha),
        baseline_auroc=None if base is None else _finite(base.auroc()[0]),
        gain_ci=None if base is None else percentile_interval(gain, resampling.alpha),
        gain_p_value=None if base is None or finite_gain.size == 0 else
        float((1 + np.sum(finite_gain <= 0)) / (1 + finite_gain.size)),
        strata=comparisons,
    )


def _bootstrap_draws(network: RankedScores, base: RankedScores | None, user_index: np.ndarray,
                     masks: list[np.ndarray], resampling: Resampling) -> np.ndarray:
    """AUROC per resample [2 + 2 * strata, draws]: network, baseline, then (stratum, rest)."""
    users_ranked = network.sort(user_index)  # gathers user counts straight into score order
    ranked_masks = [network.sort(mask.astype(float)) for mask in masks]
    draws = np.full((2 + 2 * len(masks), resampling.num_bootstrap), np.nan)
    done = 0
    for counts in user_bootstrap_counts(user_index.max() + 1, resampling.num_bootstrap,
                                        len(user_index), resampling.rng):
        cols = slice(done, done + len(counts))
        ranked_weights = counts[:, users_ranked]
        whole = network.groups(ranked_weights)
        draws[0, cols] = whole.auroc()
        if base is not None:
            draws[1, cols] = base.groups(counts[:, base.sort(user_index)]).auroc()
        for i, mask in enumerate(ranked_masks):
            inside = network.groups(ranked_weights * mask)
            draws[2 + 2 * i, cols], draws[3 + 2 * i, cols] = whole.split(inside)
        done += len(counts)
    return draws


def _compare_stratum(
    network: RankedScores,
    unweighted: Groups,
    mask: np.ndarray,
    user_member: np.ndarray | None,
    users_ranked: np.ndarray,
    draws: tuple[np.ndarray, np.ndarray],
    resampling: Resampling,
) -> StratumComparison:
    """Observed AUROCs, bootstrap intervals from `draws` (stratum, rest) and, when
    `user_member` is given, the permutation p-value of the difference."""
    def split(ranked_membership: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return unweighted.split(network.groups(ranked_membership))

    observed_in, observed_out = split(network.sort(mask.astype(float))[None, :])
    auroc, rest = _finite(observed_in[0]), _finite(observed_out[0])
    delta = None if auroc is None or rest is None else auroc - rest
    p_value = None
    if user_member is not None and delta is not None:
        nulls = (
            np.subtract(*split(members[:, users_ranked]))
            for members in permuted_memberships(
                user_member, resampling.num_permutations, len(mask), resampling.rng)
        )
        p_value = sequential_p_value(nulls, abs(delta))
    return StratumComparison(
        auroc=auroc,
        auroc_ci=percentile_interval(draws[0], resampling.alpha),
        rest_auroc=rest,
        delta=delta,
        delta_ci=None if delta is None else percentile_interval(draws[0] - draws[1],
                                                                 resampling.alpha),
        p_value=p_value,
    )


def sequential_p_value(null_blocks: Iterable[np.ndarray], observed: float) -> float:
    """Two-sided Monte Carlo p-value of |observed| against blocks of null draws, stopping early.

    Besag & Clifford's sequential p-value: stop at the h-th null draw with |null| >= observed
    and return h / (draws so far); if that never happens, (1 + hits) / (1 + draws). Both are
    valid p-values; undefined (NaN) null draws are skipped.
    """
    hits = draws = 0
    for block in null_blocks:
        extreme = np.abs(block[np.isfinite(block)]) >= observed - 1e-12
        running = hits + np.cumsum(extreme)
        if running.size and running[-1] >= STOP_AFTER_EXCEEDANCES:
            stop = int(np.argmax(running >= STOP_AFTER_EXCEEDANCES)) + 1
            return STOP_AFTER_EXCEEDANCES / (draws + stop)
        hits, draws = hits + int(extreme.sum()), draws + extreme.size
    return (1 + hits) / (1 + draws)


def adjust_p_values(p_values: list[float], method: str) -> list[float]:
    """Benjamini-Hochberg ("bh", false discovery rate) or Holm ("holm", family-wise) adjustment."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return []
    if method == "bh":
        return [float(v) for v in stats.false_discovery_control(p, method="bh")]
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in adjusted]


def auroc_variance(auroc: float, num_pos: int, num_neg: int) -> float:
    """Hanley & McNeil (1982) variance of an AUROC estimated on num_pos x num_neg rows."""
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    spread = auroc * (1 - auroc) + (num_pos - 1) * (q1 - auroc**2) + (num_neg - 1) * (q2 - auroc**2)
    return spread / (num_pos * num_neg)


def min_detectable_delta(
    auroc: float, inside: tuple[int, int], outside: tuple[int, int], alpha: float, power: float
) -> float:
    """Smallest AUROC difference (stratum vs rest) a two-sided test at `alpha` detects with
    `power`, both groups at `auroc`; inf when a group lacks positives or negatives.

    Hanley-McNeil counts user-weeks as independent, so on weeks clustered by user this is a
    lower bound: the true detectable difference is larger still.
    """
    if min(*inside, *outside) == 0:
        return float("inf")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    spread = auroc_variance(auroc, *inside) + auroc_variance(auroc, *outside)
    return float(z * np.sqrt(spread))


def fisher_greater(with_in_losses: int, losses: int, with_in_correct: int, correct: int) -> float:
    """One-sided Fisher exact p-value that a value is more common among losses than correct."""
    table = [
        [with_in_losses, losses - with_in_losses],
        [with_in_correct, correct - with_in_correct],
    ]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)
