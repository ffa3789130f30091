"""Statistics of the analyze stage, on numpy arrays only (no pandas, no files).

AUROC is the Mann-Whitney statistic P(score_pos > score_neg) + P(tie) / 2. Scores are sorted
once (`RankedScores`); the AUROC under any weighting of the rows is then a few O(n) passes, so a
whole block of bootstrap resamples or permutations is one matrix [draws, rows] at a time:
nothing calls scikit-learn inside a loop.

Weeks of one user are not independent, so both resampling schemes work on users:
- bootstrap: users are drawn with replacement; a row's weight is how often its user was drawn
  (tasks/shared/bootstrap.py, which also gives the BCa intervals and says when one is
  undefined);
- permutation: stratum membership (the value a user has on most of their weeks) is shuffled
  among users, so the test keeps each user's weeks together.

`compare_task` gathers one task's AUROC, its paired gain over a baseline, strata against the
rest and any further weighted statistics from one set of resamples; `min_detectable_delta` and
`detectable_difference` say what a test could have seen, within the AUROC's range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from stethoscope.tasks.shared.bootstrap import (
    DEFAULT_MAX_UNDEFINED,
    Estimate,
    UserStatistic,
    block_size,
    estimate,
    replicate,
)

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

    def average_precision(self) -> np.ndarray:
        """AUPRC as scikit-learn's average_precision_score (no interpolation): the precision
        at each distinct score, weighted by the positives it adds; NaN without both classes."""
        at_or_above_pos = self.num_pos[:, None] - np.cumsum(self.pos, axis=1) + self.pos
        at_or_above_neg = self.num_neg[:, None] - self.below + self.neg
        called = at_or_above_pos + at_or_above_neg
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(called > 0, at_or_above_pos / called, 0.0)
        return _ratio(np.sum(self.pos * precision, axis=1), self.num_pos * (self.num_neg > 0))

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


def permuted_memberships(
    user_member: np.ndarray, num_draws: int, num_rows: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Blocks [draws, users] of 0/1 stratum membership shuffled among users."""
    step = block_size(num_draws, num_rows, most=_PERMUTATION_BLOCK)
    for start in range(0, num_draws, step):
        size = min(step, num_draws - start)
        yield rng.permuted(np.tile(user_member.astype(float), (size, 1)), axis=1)


@dataclass(frozen=True)
class StratumComparison:
    """AUROC of a stratum against the rest of the cohort, on one task."""

    auroc: Estimate
    rest_auroc: Estimate
    delta: Estimate  # stratum minus rest, paired resample by resample
    p_value: float | None  # two-sided permutation p-value; None when not tested


@dataclass(frozen=True)
class TaskComparison:
    """Network AUROC, the paired gain over the baseline, the strata and any further weighted
    statistics of one task, every interval from the same user-level resamples."""

    auroc: Estimate
    baseline_auroc: Estimate | None  # None without a baseline
    gain: Estimate | None  # network minus baseline
    gain_p_value: float | None  # one-sided bootstrap p-value of gain <= 0
    strata: list[StratumComparison]
    extra: dict[str, Estimate]


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
    max_undefined: float = DEFAULT_MAX_UNDEFINED  # see tasks/shared/bootstrap.py
    min_class_users: int = 1  # fewer users of a class in its rows: a statistic has no interval


RowStatistic = Callable[[np.ndarray], np.ndarray]  # row weights [draws, rows] -> values [draws]


def compare_task(
    scores: np.ndarray,
    y_true: np.ndarray,
    user_index: np.ndarray,
    baseline: np.ndarray | None,
    strata: list[tuple[np.ndarray, np.ndarray | None]],
    resampling: Resampling,
    extra: Mapping[str, RowStatistic] | None = None,
) -> TaskComparison:
    """Everything one task needs, from one set of user-level bootstrap resamples.

    `strata` holds, per stratum, its row mask and the per-user membership to permute (None when
    the stratum is not to be tested); `extra` further statistics of the row weights (in row
    order; AUPRC, calibration, operating points). All resamples are shared: intervals of the
    network, the baseline, every stratum and every extra come from the same drawn users, so
    the paired differences (network - baseline, stratum - rest) are taken resample by
    resample. Intervals are BCa (tasks/shared/bootstrap.py), and None when the rows of a
    statistic hold fewer than `min_class_users` users of either class (the task's rows; a
    stratum's, the rest's, both for their difference): with few clusters a bootstrap
    understates the spread.
    """
    network = RankedScores(scores, y_true)
    base = None if baseline is None else RankedScores(baseline, y_true)
    extra = dict(extra or {})
    statistic = _task_statistic(network, base, user_index, [mask for mask, _ in strata], extra)
    replicates = replicate(statistic, int(user_index.max()) + 1, len(scores),
                           resampling.num_bootstrap, resampling.rng)

    def enough(rows: np.ndarray) -> bool:
        return min(len(np.unique(user_index[rows & (y_true == label)])) for label in (0, 1)
                   ) >= resampling.min_class_users

    def at(index: int, defined: bool) -> Estimate:
        found = estimate(replicates, index, resampling.alpha, resampling.max_undefined)
        return found if defined else Estimate(found.value, None, None)

    whole = enough(np.ones(len(scores), dtype=bool))
    unweighted = network.groups(np.ones(len(scores)))
    users_ranked = network.sort(user_index)
    comparisons = []
    for i, (mask, member) in enumerate(strata):
        inside_ok, rest_ok = enough(mask), enough(~mask)
        inside, rest = at(3 + 3 * i, inside_ok), at(4 + 3 * i, rest_ok)
        delta = at(5 + 3 * i, inside_ok and rest_ok)
        p_value = None
        if member is not None and delta.value is not None:
            p_value = _permutation_p_value(network, unweighted, member, users_ranked,
                                           abs(delta.value), len(mask), resampling)
        comparisons.append(StratumComparison(inside, rest, delta, p_value))
    gain = replicates.draws[2][np.isfinite(replicates.draws[2])]
    first_extra = 3 + 3 * len(strata)
    return TaskComparison(
        auroc=at(0, whole),
        baseline_auroc=None if base is None else at(1, whole),
        gain=None if base is None else at(2, whole),
        gain_p_value=None if base is None or gain.size == 0 else
        float((1 + np.sum(gain <= 0)) / (1 + gain.size)),
        strata=comparisons,
        extra={name: at(first_extra + j, whole) for j, name in enumerate(extra)},
    )


def _task_statistic(network: RankedScores, base: RankedScores | None, user_index: np.ndarray,
                    masks: list[np.ndarray], extra: dict[str, RowStatistic]) -> UserStatistic:
    """User counts [draws, users] -> [3 + 3 strata + extras, draws]: network AUROC, baseline
    AUROC, their difference, then per stratum (AUROC, rest's AUROC, difference), then extras."""
    users_ranked = network.sort(user_index)  # gathers user counts straight into score order
    base_users = None if base is None else base.sort(user_index)
    ranked_masks = [network.sort(mask.astype(float)) for mask in masks]

    def statistic(counts: np.ndarray) -> np.ndarray:
        values = np.full((3 + 3 * len(masks) + len(extra), len(counts)), np.nan)
        ranked_weights = counts[:, users_ranked]
        whole = network.groups(ranked_weights)
        values[0] = whole.auroc()
        if base is not None and base_users is not None:
            values[1] = base.groups(counts[:, base_users]).auroc()
            values[2] = values[0] - values[1]
        for i, mask in enumerate(ranked_masks):
            inside, rest = whole.split(network.groups(ranked_weights * mask))
            values[3 + 3 * i], values[4 + 3 * i], values[5 + 3 * i] = inside, rest, inside - rest
        if extra:
            row_weights = counts[:, user_index]
            for j, function in enumerate(extra.values()):
                values[3 + 3 * len(masks) + j] = function(row_weights)
        return values

    return statistic


def _permutation_p_value(network: RankedScores, unweighted: Groups, user_member: np.ndarray,
                         users_ranked: np.ndarray, observed: float, num_rows: int,
                         resampling: Resampling) -> float:
    """Two-sided permutation p-value of a stratum's AUROC difference to the rest: membership
    shuffled among users, so each user's weeks stay together."""
    nulls = (
        np.subtract(*unweighted.split(network.groups(members[:, users_ranked])))
        for members in permuted_memberships(
            user_member, resampling.num_permutations, num_rows, resampling.rng)
    )
    return sequential_p_value(nulls, observed)


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


def detectable_difference(standard_error: float, alpha: float, power: float) -> float:
    """Smallest true difference that a two-sided test at `alpha`, on an estimate with this
    standard error, detects with probability `power`: (z_{1-alpha/2} + z_power) * se."""
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * standard_error)


def min_detectable_delta(
    auroc: float, inside: tuple[int, int], outside: tuple[int, int], alpha: float, power: float
) -> float | None:
    """Smallest drop of a stratum's AUROC below the rest's (both at `auroc` under the null) a
    two-sided test at `alpha` detects with `power`. `inside` and `outside` count (positive,
    negative) *users*: Hanley-McNeil with a user's weeks counted once, since weeks of one user
    carry little more than one of them. None when a group lacks a class, or when no AUROC in
    [0, 1] lies that far below `auroc` (the data could not tell any stratum apart)."""
    if min(*inside, *outside) == 0:
        return None
    spread = auroc_variance(auroc, *inside) + auroc_variance(auroc, *outside)
    delta = detectable_difference(math.sqrt(spread), alpha, power)
    return delta if delta <= auroc else None


def fisher_greater(with_in_losses: int, losses: int, with_in_correct: int, correct: int) -> float:
    """One-sided Fisher exact p-value that a value is more common among losses than correct."""
    table = [
        [with_in_losses, losses - with_in_losses],
        [with_in_correct, correct - with_in_correct],
    ]
    return float(stats.fisher_exact(table, alternative="greater").pvalue)
