"""Data drift: tonight's data profile against the reference run's, from the two summaries only.

Neither run's raw data is read: `profile.py` keeps, per stratum (all user-weeks, each device
generation, unknown devices) and feature, n, the mean, the std and 101 quantiles. Three kinds
of comparison, every p-value of one comparison corrected together (Holm 1979, family-wise, by
`tasks.shared.stats.adjust_p_values`):

- features, per stratum: each distribution is redrawn from its quantiles as a piecewise-linear
  CDF (the inverse of the linearly interpolated quantile function; a run of equal quantiles is
  a point mass). The two-sample Kolmogorov-Smirnov D is the largest gap between the two CDFs;
  between consecutive points of the union of both quantile grids both are linear, so D is the
  largest gap at those points, from the left and from the right. Its p-value is the asymptotic
  Kolmogorov distribution (`scipy.stats.kstwobign`) at D * sqrt(n m / (n + m)). The effect is
  the Wasserstein-1 distance, the integral over p of |Q_ref(p) - Q_cur(p)| (trapezoid over the
  levels), divided by the reference's std (a shift of 0.1 = a tenth of a standard deviation;
  with a std of 0: 0 when the quantiles agree, infinite otherwise), and beside it the
  population stability index over the reference's deciles (bins cut at its quantiles 0.1 ...
  0.9; each run's mass per bin from its CDF, floored at 1e-4 as Evidently does;
  PSI = sum (cur - ref) ln(cur / ref); Siddiqi 2006: < 0.1 stable, > 0.25 a major shift).
- the device mix: a chi-square test of the two count vectors (`scipy.stats.chi2_contingency`;
  devices expected fewer than 5 user-weeks in a run are pooled, Cochran's rule), the effect
  the total-variation distance of the two mixes, half the sum of |share_ref - share_cur|.
- quarantine, per validation rule: a two-proportion z-test of rows quarantined / rows in
  (pooled variance), the effect the absolute difference of the two rates.

A drift is flagged only when its adjusted p-value is below alpha AND its effect reaches its
threshold (features: normalised Wasserstein or PSI): at nightly sample sizes a test alone flags
shifts too small to matter, which is why Evidently swaps its KS test for a distance with a
threshold above 1,000 rows. Strata, device mixes and rules with fewer than `min_n` user-weeks
(rows) in either run are listed with a note, not compared.

Weeks of one user are not independent: a user's resting heart rate and device are nearly the
same every week. The sample sizes in the KS and chi-square tests are therefore users, not
user-weeks, whenever the profile counts them (the largest possible design effect, Kish 1965:
conservative when a user's weeks differ, right when they are alike); the chi-square statistic
is divided by the pooled user-weeks per user (a first-order Rao-Scott correction). Without
that, two independent nights of the same population disagree "significantly" on the device
mix. Quarantine rates are of log rows, clustered by user and file in ways a profile does not
record: their p-values treat rows as independent, so the rate threshold decides there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import integrate, stats

from stethoscope.tasks.gate.profile import QUANTILE_LEVELS, DataProfile, FeatureSummary
from stethoscope.tasks.shared.stats import adjust_p_values

PSI_FLOOR = 1e-4  # a bin's share below this counts as this (Evidently's default)
MIN_EXPECTED = 5.0  # Cochran's rule for the chi-square approximation
_LEVELS = np.asarray(QUANTILE_LEVELS)
_DECILE_INDICES = np.arange(10, 100, 10)  # QUANTILE_LEVELS[i] = 0.1, ..., 0.9

DriftKind = Literal["feature", "device_mix", "quarantine"]


@dataclass(frozen=True)
class DriftThresholds:
    """When a difference between the runs counts as drift (the gate's config passes them)."""

    alpha: float = 0.05  # family-wise level of the Holm-adjusted p-values
    wasserstein: float = 0.1  # Wasserstein-1 distance of a feature / the reference's std
    psi: float = 0.2  # population stability index of a feature
    device_mix_tvd: float = 0.1  # total-variation distance of the device mixes
    quarantine_rate: float = 0.01  # absolute change of a rule's quarantined share of rows
    min_n: int = 30  # fewer user-weeks (rows) in either run: not compared


@dataclass(frozen=True)
class Drift:
    """One comparison of the reference run and this run: a feature in a stratum, the device
    mix, or one validation rule's quarantine rate."""

    kind: DriftKind
    name: str  # the feature, "device mix", or the rule
    stratum: str  # "all", "generation 3", "unknown device"
    n_reference: int  # user-weeks with a value (rows in, for quarantine)
    n_current: int
    reference_value: float | None  # mean of the feature; quarantined share of the rule
    current_value: float | None
    shift: float | None  # current - reference
    statistic: float | None  # KS D, chi-square (design-effect corrected), z
    p_value: float | None
    p_adjusted: float | None  # Holm, over every p-value of the comparison
    effect: float | None  # normalised Wasserstein; total-variation distance; |rate difference|
    effect_name: str
    psi: float | None  # features only
    drifted: bool
    note: str = ""


def compare_profiles(reference: DataProfile, current: DataProfile,
                     config: DriftThresholds | None = None) -> list[Drift]:
    """Every comparison of two data profiles, p-values Holm-adjusted together, `drifted` set
    where the adjusted p-value is below alpha and the effect reaches its threshold."""
    config = config or DriftThresholds()
    drifts = [*_feature_drifts(reference, current, config.min_n),
              _device_mix_drift(reference, current, config.min_n),
              *_quarantine_drifts(reference, current, config.min_n)]
    tested = [(i, d.p_value) for i, d in enumerate(drifts) if d.p_value is not None]
    adjusted = adjust_p_values([p for _, p in tested], "holm")
    for (i, _), p_adjusted in zip(tested, adjusted, strict=True):
        drifts[i] = replace(drifts[i], p_adjusted=p_adjusted,
                            drifted=p_adjusted < config.alpha and _large(drifts[i], config))
    return drifts


def _large(drift: Drift, config: DriftThresholds) -> bool:
    effect = drift.effect if drift.effect is not None else 0.0
    if drift.kind == "feature":
        return effect >= config.wasserstein or (drift.psi or 0.0) >= config.psi
    if drift.kind == "device_mix":
        return effect >= config.device_mix_tvd
    return effect >= config.quarantine_rate


# --- features ---------------------------------------------------------------------------------

def quantile_cdf(quantiles: np.ndarray, x: np.ndarray, left: bool = False) -> np.ndarray:
    """The CDF drawn from quantiles at QUANTILE_LEVELS, F(x) = sup{p : Q(p) <= x} with Q the
    linear interpolation of the quantiles; with `left`, the left limit sup{p : Q(p) < x}."""
    q = np.asarray(quantiles, dtype=float)
    x = np.asarray(x, dtype=float)
    # number of quantiles <= x (< x for the left limit): x lies in [q[k-1], q[k]), q[k-1] < q[k]
    k = np.searchsorted(q, x, side="left" if left else "right")
    inner = np.clip(k, 1, len(q) - 1)
    low, high = q[inner - 1], q[inner]
    with np.errstate(invalid="ignore", divide="ignore"):
        along = np.clip((x - low) / (high - low), 0.0, 1.0)
    cdf = _LEVELS[inner - 1] + along * (_LEVELS[inner] - _LEVELS[inner - 1])
    return np.where(k == 0, 0.0, np.where(k == len(q), 1.0, cdf))


def ks_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Kolmogorov-Smirnov D of the two CDFs drawn from quantiles at QUANTILE_LEVELS."""
    grid = np.union1d(reference, current)
    gaps = [np.abs(quantile_cdf(reference, grid, left) - quantile_cdf(current, grid, left))
            for left in (False, True)]
    return float(max(g.max() for g in gaps))


def ks_p_value(distance: float, n: int, m: int) -> float:
    """Asymptotic two-sample KS p-value: the Kolmogorov distribution at D sqrt(n m / (n + m))."""
    return float(stats.kstwobign.sf(distance * math.sqrt(n * m / (n + m))))


def normalised_wasserstein(reference: np.ndarray, current: np.ndarray, std: float) -> float:
    """Wasserstein-1 distance, the integral of |Q_ref - Q_cur| over the levels, / the std."""
    distance = float(integrate.trapezoid(np.abs(np.asarray(reference) - np.asarray(current)),
                                         _LEVELS))
    if std > 0:
        return distance / std
    return 0.0 if distance == 0 else math.inf


def population_stability(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI over the reference's deciles, each run's mass per bin from its CDF (floored)."""
    edges = np.asarray(reference, dtype=float)[_DECILE_INDICES]

    def masses(quantiles: np.ndarray) -> np.ndarray:
        cdf = np.concatenate([[0.0], quantile_cdf(quantiles, edges), [1.0]])
        return np.maximum(np.diff(cdf), PSI_FLOOR)

    ref, cur = masses(reference), masses(current)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _feature_drifts(reference: DataProfile, current: DataProfile, min_n: int) -> list[Drift]:
    strata = list(reference.features) + [s for s in current.features
                                         if s not in reference.features]
    drifts = []
    for stratum in strata:
        ref_features = reference.features.get(stratum, {})
        cur_features = current.features.get(stratum, {})
        names = list(ref_features) + [f for f in cur_features if f not in ref_features]
        for name in names:
            drifts.append(_feature_drift(name, stratum, ref_features.get(name, _EMPTY),
                                         cur_features.get(name, _EMPTY), min_n))
    return drifts


_EMPTY = FeatureSummary(0, 0, None, None, ())


def _feature_drift(name: str, stratum: str, ref: FeatureSummary, cur: FeatureSummary,
                   min_n: int) -> Drift:
    shift = None if ref.mean is None or cur.mean is None else cur.mean - ref.mean
    record = Drift("feature", name, stratum, ref.n, cur.n, ref.mean, cur.mean, shift,
                   statistic=None, p_value=None, p_adjusted=None, effect=None,
                   effect_name="normalised Wasserstein", psi=None, drifted=False)
    if min(ref.n, cur.n) < min_n:
        return replace(record, note=f"n < min_n ({min_n}): not compared")
    q_ref, q_cur = np.asarray(ref.quantiles), np.asarray(cur.quantiles)
    distance = ks_distance(q_ref, q_cur)
    n, m = _sample_size(ref), _sample_size(cur)
    return replace(
        record, statistic=distance, p_value=ks_p_value(distance, n, m),
        effect=normalised_wasserstein(q_ref, q_cur, ref.std or 0.0),
        psi=population_stability(q_ref, q_cur),
        note="" if n == ref.n and m == cur.n else f"KS p-value on users ({n:,} vs {m:,})")


def _sample_size(summary: FeatureSummary) -> int:
    """Independent observations behind a summary: its users when known, else its user-weeks."""
    return summary.users if summary.users else summary.n


# --- device mix --------------------------------------------------------------------------------

def _device_mix_drift(reference: DataProfile, current: DataProfile, min_n: int) -> Drift:
    devices = sorted(set(reference.device_mix) | set(current.device_mix))
    counts = np.array([[mix.get(d, 0) for d in devices]
                       for mix in (reference.device_mix, current.device_mix)], dtype=float)
    n_ref, n_cur = (int(t) for t in counts.sum(axis=1))
    record = Drift("device_mix", "device mix", "all", n_ref, n_cur, None, None, None,
                   statistic=None, p_value=None, p_adjusted=None, effect=None,
                   effect_name="total-variation distance", psi=None, drifted=False)
    if min(n_ref, n_cur) < min_n:
        return replace(record, note=f"n < min_n ({min_n}): not compared")
    shares = counts / counts.sum(axis=1, keepdims=True)
    moves = shares[1] - shares[0]
    largest = np.argsort(-np.abs(moves), kind="stable")[:3]
    note = "largest moves: " + ", ".join(
        f"{devices[i]} {shares[0, i]:.1%} -> {shares[1, i]:.1%}" for i in largest if moves[i])
    chi_square, p_value = _chi_square(counts, _design_effect(reference, current))
    return replace(record, statistic=chi_square, p_value=p_value,
                   effect=float(0.5 * np.abs(moves).sum()),
                   note=note if np.any(moves) else "same mix")


def _design_effect(reference: DataProfile, current: DataProfile) -> float:
    """Pooled user-weeks per user (1 when a profile does not count its users)."""
    if not reference.users or not current.users:
        return 1.0
    return max(1.0, (reference.user_weeks + current.user_weeks)
               / (reference.users + current.users))


def _chi_square(counts: np.ndarray, design_effect: float) -> tuple[float, float]:
    """Chi-square test of a [2, devices] table, rare devices pooled, divided by the design
    effect; (0, 1) when fewer than two columns remain."""
    expected_least = counts.sum(axis=0) * counts.sum(axis=1).min() / counts.sum()
    rare = expected_least < MIN_EXPECTED
    table = counts[:, ~rare]
    if rare.any():
        table = np.column_stack([table, counts[:, rare].sum(axis=1)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    result = stats.chi2_contingency(table, correction=False)
    statistic = float(result.statistic) / design_effect
    return statistic, float(stats.chi2.sf(statistic, result.dof))


# --- quarantine --------------------------------------------------------------------------------

def _quarantine_drifts(reference: DataProfile, current: DataProfile, min_n: int) -> list[Drift]:
    rules = list(reference.quarantine) + [r for r in current.quarantine
                                          if r not in reference.quarantine]
    drifts = []
    for rule in rules:
        record = Drift("quarantine", rule, "all", reference.rows_in or 0, current.rows_in or 0,
                       None, None, None, statistic=None, p_value=None, p_adjusted=None,
                       effect=None, effect_name="absolute rate difference", psi=None,
                       drifted=False)
        if reference.rows_in is None or current.rows_in is None:
            drifts.append(replace(record, note="a run has no validation report: not compared"))
        elif rule not in reference.quarantine or rule not in current.quarantine:
            which = "reference" if rule not in reference.quarantine else "current"
            drifts.append(replace(record, note=f"rule absent from the {which} run: not compared"))
        elif min(reference.rows_in, current.rows_in) < min_n:
            drifts.append(replace(record, note=f"n < min_n ({min_n}): not compared"))
        else:
            drifts.append(_rate_drift(record, reference.quarantine[rule],
                                      current.quarantine[rule]))
    return drifts


def _rate_drift(record: Drift, ref_rows: int, cur_rows: int) -> Drift:
    """Two-proportion z-test with pooled variance; z = 0, p = 1 when neither rate varies."""
    n, m = record.n_reference, record.n_current
    ref_rate, cur_rate = ref_rows / n, cur_rows / m
    pooled = (ref_rows + cur_rows) / (n + m)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
    z = 0.0 if se == 0 else (cur_rate - ref_rate) / se
    return replace(record, reference_value=ref_rate, current_value=cur_rate,
                   shift=cur_rate - ref_rate, statistic=z,
                   p_value=float(2 * stats.norm.sf(abs(z))), effect=abs(cur_rate - ref_rate))
