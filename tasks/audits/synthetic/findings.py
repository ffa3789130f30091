"""Findings of the synthetic-target audit: what a verdict that is not `learned` tells the reader.

`target_finding` gives SYNTHETIC_NOT_EVALUATED (info) for a target with too few known values
and SYNTHETIC_NOT_LEARNED for an evaluated target that was not learned where the data show it
(the interval of a failed rule excludes passing it, evidence.py), naming the prerequisite it
stands for and the rule it failed (below the threshold, no better than the train mean, or
clearly below the reference) with a recommendation to match. A target whose point estimate
fails a rule that no interval shows failed is SYNTHETIC_INCONCLUSIVE (info), with the interval
and the R² the data could have shown. When the sanity target (SANITY_TARGET) was shown not
learned, the run's other not-learned verdicts are inconclusive (info).
"""

from __future__ import annotations

from stethoscope.schemas.findings import FindingCode
from stethoscope.schemas.summary import Finding
from stethoscope.tasks.audits.synthetic.config import (
    DEFAULT_CONFIG,
    SyntheticAudit,
    SyntheticConfig,
    TargetScore,
)
from stethoscope.tasks.audits.synthetic.evidence import (
    BELOW_THRESHOLD,
    NO_BETTER_THAN_MEAN,
    failed_rules,
)


def synthetic_findings(audit: SyntheticAudit, config: SyntheticConfig = DEFAULT_CONFIG
                       ) -> list[Finding]:
    """SYNTHETIC_NOT_LEARNED per evaluated target that was not learned, naming its
    prerequisite; SYNTHETIC_NOT_EVALUATED (info) per target with too few known values.

    When the sanity target (SANITY_TARGET) is evaluated and not learned, its finding says so and
    the other not-learned targets are reported as inconclusive (info), not as limits of the
    architecture."""
    sanity_failed = any(s.target == SANITY_TARGET and s.evaluated and s.shown_not_learned
                        for s in audit.scores)
    findings = (target_finding(s, audit, config, sanity_failed) for s in audit.scores)
    return [f for f in findings if f is not None]


STAGE = "synthetic"
# Every architecture must learn this one; when the network does not, the run's other verdicts
# say more about its training budget (or a broken network) than about what it could learn.
SANITY_TARGET = "mean_daily_steps"


def target_finding(s: TargetScore, audit: SyntheticAudit, config: SyntheticConfig,
                   sanity_failed: bool) -> Finding | None:
    """The finding on one target's score, None when it was learned. `sanity_failed`: the
    sanity target was evaluated and not learned in this run."""
    if not s.evaluated:
        return Finding(
            stage=STAGE, severity="info", code=FindingCode.SYNTHETIC_NOT_EVALUATED,
            message=f"{s.target}: only {s.n_train} train and {s.n_val} validation "
            f"user-weeks with a known value in the budget (at least {config.min_known} "
            "each needed), so whether the network can learn it is unknown.",
            recommendation="Raise synthetic.max_train_user_weeks / max_val_user_weeks, "
            "or check why the labels stage leaves this target null (window minimums).")
    if not s.learned and not s.shown:
        return inconclusive_finding(s, audit, config)
    if not s.learned and sanity_failed and s.target == SANITY_TARGET:
        return Finding(
            stage=STAGE, severity="warning", code=FindingCode.SYNTHETIC_NOT_LEARNED,
            message=not_learned_message(s, audit, config) + (
                " Every architecture should learn this one: with "
                f"{audit.num_train_user_weeks} train user-weeks and {audit.epochs_trained} "
                "epochs the training budget is too small, or the network is broken (see "
                "the activation and gradient audits); the other synthetic verdicts of this "
                "run are inconclusive."),
            recommendation=(f"Raise {audit.epochs_setting} and {audit.more_data} "
                            "(or lower the learning rate) until this target is learned; only "
                            "then read the other targets' verdicts as the architecture's."))
    if not s.learned:
        return Finding(
            stage=STAGE, severity="info" if sanity_failed else "warning",
            code=FindingCode.SYNTHETIC_NOT_LEARNED,
            message=not_learned_message(s, audit, config, inconclusive=sanity_failed),
            recommendation=recommendation(s, audit, config))
    return None


def not_learned_message(s: TargetScore, audit: SyntheticAudit, config: SyntheticConfig,
                        inconclusive: bool = False) -> str:
    """Which rule the score failed, in words (the first the data show, else the first the point
    estimate fails); `inconclusive` when the sanity target failed."""
    if s.r2 is None or s.baseline_r2 is None:
        raise ValueError(f"{s.target} was not evaluated: it has no R^2 to explain")
    scores = _scores(s, audit)
    rule = s.shown[0] if s.shown else _failed_rules(s, config)[0]
    if rule == BELOW_THRESHOLD and inconclusive:
        verdict = (f"the {audit.network} does not learn it in this run: {scores}, below the "
                   f"threshold {config.r2_threshold:g}; inconclusive, since it did not learn "
                   f"the sanity target {SANITY_TARGET} either")
    elif rule == BELOW_THRESHOLD:
        verdict = (f"the {audit.network} does not learn it: {scores}, below the threshold "
                   f"{config.r2_threshold:g}")
        if s.target != SANITY_TARGET:  # a sanity failure says nothing about conditions
            verdict += f". A condition that needs {s.prerequisite} is then out of its reach too"
    elif rule == NO_BETTER_THAN_MEAN:
        verdict = f"the {audit.network} does no better than the train mean: {scores}"
    else:
        verdict = (f"the {audit.network} learns it less well than the {audit.reference}: "
                   f"{scores}, more than {config.reference_margin:g} below the reference")
    return f"{s.target} (needs {s.prerequisite}): {verdict}.{_budget(s)}"


def inconclusive_finding(s: TargetScore, audit: SyntheticAudit, config: SyntheticConfig
                         ) -> Finding:
    """SYNTHETIC_INCONCLUSIVE: the point estimate fails a rule, no interval shows it."""
    rule = _failed_rules(s, config)[0]
    ci = s.r2_ci
    if ci is not None:
        half = (ci[1] - ci[0]) / 2
        could = (f"with {s.evidence.n_users if s.evidence else 0} validation users its R² "
                 f"interval spans about ±{half:.2f}, so an R² below "
                 f"{config.r2_threshold - half:.2f} would have been shown below the threshold "
                 f"{config.r2_threshold:g}")
    else:
        could = ("there is no interval (fewer than 5 validation users with a known value, a "
                 "degenerate resample distribution, or a training record without "
                 "predictions), so no verdict either way")
    return Finding(
        stage=STAGE, severity="info", code=FindingCode.SYNTHETIC_INCONCLUSIVE,
        message=f"{s.target} (needs {s.prerequisite}): the data cannot tell whether the "
                f"{audit.network} learns it: {_scores(s, audit)}; the point estimate is "
                f"{rule}, but no interval excludes passing; {could}.{_budget(s)}",
        recommendation=(
            "Not a verdict on the architecture: score more validation user-weeks (a larger "
            "cohort, or synthetic.max_val_user_weeks when the audit trains its own network) "
            "before reading it." + (f" First raise {audit.epochs_setting}: the loss was still "
                                    "falling." if s.still_improving else "")))


def _failed_rules(s: TargetScore, config: SyntheticConfig) -> list[str]:
    """The rules of `learned` that the point estimate fails (evidence.py's words)."""
    if s.r2 is None or s.baseline_r2 is None:
        return []
    return failed_rules(s.r2, s.baseline_r2, s.reference_r2, config.r2_threshold,
                        config.reference_margin)


def _scores(s: TargetScore, audit: SyntheticAudit) -> str:
    """R² with its interval and counts, next to the train mean's and the reference's."""
    reference = "" if s.reference_r2 is None else f", {audit.reference} {s.reference_r2:.2f}"
    ci = "" if s.r2_ci is None else f" [{s.r2_ci[0]:.2f}, {s.r2_ci[1]:.2f}]"
    users = "" if s.evidence is None else f" of {s.evidence.n_users} users"
    return (f"R^2 {s.r2:.2f}{ci} on {s.n_val} validation user-weeks{users} (train mean "
            f"{s.baseline_r2:.2f}{reference})")


def _budget(s: TargetScore) -> str:
    return (" Its validation loss on this target was still falling at the last epoch: the "
            "verdict may be the training budget's." if s.still_improving else "")


def recommendation(s: TargetScore, audit: SyntheticAudit, config: SyntheticConfig) -> str:
    """What to change first: the budget, then the network's parts, then its memory."""
    if s.still_improving:
        return (f"Raise {audit.epochs_setting} (or {audit.more_data}) until the "
                "validation loss levels off, then re-read this verdict before changing the "
                "architecture.")
    if s.r2 is None:
        raise ValueError(f"{s.target} was not evaluated: there is no verdict to act on")
    if s.r2 >= config.r2_threshold:
        return (f"The {audit.reference} does better: what the network adds hurts. Check the "
                "activation audit for dead or saturated units and the gradient audit for "
                "vanishing gradients; try leaky_relu, a lower learning rate or a GRU.")
    return ("Give the network what the target needs: longer memory (a bidirectional LSTM/GRU, "
            "dilated convolutions or pooling before the recurrent layer; see the gradient "
            "audit's horizon), or time-of-day channels for day vs night.")
