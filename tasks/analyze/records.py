"""The analysis tables turned into summary.json records."""

from __future__ import annotations

import pandas as pd

from stethoscope.schemas.summary import StratumMetrics, TaskMetrics, TopLoss
from stethoscope.tasks.analyze.findings import _interval, _optional


def task_records(tasks: pd.DataFrame) -> list[TaskMetrics]:
    return [TaskMetrics(task=t["task"], n=int(t["n"]), auroc=_optional(t["auroc"]),
                        auroc_ci=_interval(t["auroc_ci_low"], t["auroc_ci_high"]),
                        baseline_auroc=_optional(t["baseline_auroc"]),
                        corr_with_baseline=_optional(t["corr_with_baseline"]))
            for _, t in tasks.iterrows()]


def stratum_records(strata: pd.DataFrame) -> list[StratumMetrics]:
    """p_value is the adjusted one (what `flagged` compares with alpha); None when untested."""
    return [StratumMetrics(column=s["column"], value=s["value"], task=s["task"], n=int(s["n"]),
                           auroc=_optional(s["auroc"]),
                           auroc_ci=_interval(s["auroc_ci_low"], s["auroc_ci_high"]),
                           delta_vs_rest=_optional(s["delta_vs_rest"]),
                           p_value=_optional(s["p_adjusted"]), flagged=bool(s["flagged"]))
            for _, s in strata.iterrows()]


def top_loss_records(top: pd.DataFrame) -> list[TopLoss]:
    """The top FPs and FNs; week_start None when the table has no weeks."""
    losses = top[top["kind"].isin(["FP", "FN"])]
    return [TopLoss(user_id=r["user_id"], week_start=r.get("week_start"), task=r["task"],
                    y_true=int(r["y_true"]), y_score=float(r["y_score"]), kind=r["kind"])
            for _, r in losses.iterrows()]
