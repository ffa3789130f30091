"""How sure a synthetic verdict is: user-level bootstrap intervals of the R² it rests on.

A target is *learned* when the network's R² passes three rules (audit.py `is_learned`): at
least `r2_threshold`, above the train mean's R², and no more than `reference_margin` below the
memory-less reference's. A verdict of *not learned* is a claim about the architecture, and it
is a warning only when the data show it: the interval of a rule that the point estimate fails
lies wholly on the failing side (R²'s upper bound below the threshold; the gain over the
train mean at most 0; the gap to the reference below -margin). Otherwise the verdict is
inconclusive (info): the validation user-weeks are too few to tell, and the finding says how
wide the interval was.

The intervals are BCa over user-level resamples (tasks/shared/bootstrap.py), the same method
as the prediction analysis: a user's weeks are not independent. R² on a resample weighs each
user-week by its user's count, with the resample's own mean of the truth (as
`sklearn.metrics.r2_score` uses the sample's). With fewer than MIN_USERS users with a known
value, or a degenerate resample distribution, an interval is None (no evidence either way).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stethoscope.tasks.audits.synthetic.config import R2Evidence
from stethoscope.tasks.shared.bootstrap import bca_interval, replicate

MIN_USERS = 5  # fewer users with a known value: no interval (a bootstrap over 4 clusters says little)
METHOD = "BCa over user-level bootstrap resamples of the validation user-weeks"


def r2_evidence(truth: np.ndarray, predicted: np.ndarray, reference: np.ndarray | None,
                train_mean: float, users: np.ndarray, num_bootstrap: int, alpha: float,
                rng: np.random.Generator) -> R2Evidence:
    """The intervals for one target. `truth` [n] (NaN = unknown), `predicted` and `reference`
    [n] in the target's units, `users` [n] the user of each row."""
    known = ~np.isnan(truth)
    y, p = truth[known].astype(float), predicted[known].astype(float)
    r = None if reference is None else reference[known].astype(float)
    index = pd.factorize(pd.Series(users[known]))[0]
    n_users = int(index.max()) + 1 if len(index) else 0
    if n_users < MIN_USERS:
        return R2Evidence(None, None, None, n_users)

    def statistic(counts: np.ndarray) -> np.ndarray:
        w = counts[:, index]  # [draws, rows]: a row weighs its user's count
        mean = (w @ y) / w.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            total = np.sum(w * (y[None, :] - mean[:, None]) ** 2, axis=1)
            total = np.where(total > 0, total, np.nan)
            r2 = 1 - (w @ (y - p) ** 2) / total
            rows = [r2, r2 - (1 - (w @ (y - train_mean) ** 2) / total)]
            if r is not None:
                rows.append(r2 - (1 - (w @ (y - r) ** 2) / total))
        return np.vstack(rows)

    reps = replicate(statistic, n_users, len(y), num_bootstrap, rng)
    cis = [bca_interval(float(reps.observed[i]), reps.draws[i], reps.jackknife[i], alpha)
           if np.isfinite(reps.observed[i]) else None for i in range(len(reps.observed))]
    return R2Evidence(cis[0], cis[1], cis[2] if r is not None else None, n_users)


BELOW_THRESHOLD = "below the threshold"
NO_BETTER_THAN_MEAN = "no better than the train mean"
BELOW_REFERENCE = "below the reference"


def failed_rules(r2: float, baseline_r2: float, reference_r2: float | None, threshold: float,
                 margin: float) -> list[str]:
    """The rules of `learned` that the point estimate fails, in words (empty: learned)."""
    failed = []
    if r2 < threshold:
        failed.append(BELOW_THRESHOLD)
    if r2 <= baseline_r2:
        failed.append(NO_BETTER_THAN_MEAN)
    if reference_r2 is not None and r2 < reference_r2 - margin:
        failed.append(BELOW_REFERENCE)
    return failed


def shown_failures(r2: float, baseline_r2: float, reference_r2: float | None,
                   evidence: R2Evidence, threshold: float, margin: float) -> list[str]:
    """The rules of `is_learned` that the point estimate fails AND whose interval excludes
    passing, in words (empty: not shown, whatever the point estimate says)."""
    def upper_below(ci: tuple[float, float] | None, bound: float, inclusive: bool = False
                    ) -> bool:
        return ci is not None and (ci[1] <= bound if inclusive else ci[1] < bound)

    shown = {BELOW_THRESHOLD: upper_below(evidence.r2_ci, threshold),
             NO_BETTER_THAN_MEAN: upper_below(evidence.baseline_gap_ci, 0.0, inclusive=True),
             BELOW_REFERENCE: upper_below(evidence.reference_gap_ci, -margin)}
    return [rule for rule in failed_rules(r2, baseline_r2, reference_r2, threshold, margin)
            if shown[rule]]
