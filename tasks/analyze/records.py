"""The analysis tables turned into summary.json records."""

from __future__ import annotations

import pandas as pd

from stethoscope.schemas.summary import OperatingPoint, StratumMetrics, TaskMetrics, TopLoss
from stethoscope.tasks.analyze.findings import _interval, _optional
from stethoscope.tasks.analyze.metrics import OPERATING_POINT_METRICS


def task_records(tasks: pd.DataFrame,
                 operating_points: pd.DataFrame | None = None) -> list[TaskMetrics]:
    """One record per task, with its operating points when given."""
    points = operating_points if operating_points is not None else pd.DataFrame(
        columns=["task"])
    return [TaskMetrics(task=t["task"], n=int(t["n"]), n_positives=int(t["positives"]),
                        n_users=int(t["num_users"]), auroc=_optional(t["auroc"]),
                        auroc_ci=_ci(t, "auroc"), auprc=_optional(t["auprc"]),
                        auprc_ci=_ci(t, "auprc"), brier=_optional(t["brier"]),
                        ece=_optional(t["ece"]), ece_ci=_ci(t, "ece"),
                        baseline_auroc=_optional(t["baseline_auroc"]),
                        baseline_auroc_ci=_ci(t, "baseline_auroc"),
                        gain_vs_baseline=_optional(t["gain_vs_baseline"]),
                        gain_ci=_ci(t, "gain"),
                        corr_with_baseline=_optional(t["corr_with_baseline"]),
                        operating_points=_points(points[points["task"] == t["task"]]))
            for _, t in tasks.iterrows()]


def _ci(row: pd.Series, name: str) -> tuple[float, float] | None:
    return _interval(row[f"{name}_ci_low"], row[f"{name}_ci_high"])


def _points(points: pd.DataFrame) -> list[OperatingPoint]:
    return [OperatingPoint(point=p["point"], threshold=float(p["threshold"]),
                           **{k: int(p[k]) for k in ("tp", "fp", "fn", "tn")},
                           **{m: _optional(p[m]) for m in OPERATING_POINT_METRICS
                              if m != "npv"},
                           **{f"{m}_ci": _ci(p, m) for m in OPERATING_POINT_METRICS
                              if m != "npv"})
            for _, p in points.iterrows()]


def stratum_records(strata: pd.DataFrame) -> list[StratumMetrics]:
    """p_value is the adjusted one (what `flagged` compares with alpha); None when untested."""
    return [StratumMetrics(column=s["column"], value=s["value"], task=s["task"], n=int(s["n"]),
                           n_positives=int(s["positives"]), n_users=int(s["num_users"]),
                           auroc=_optional(s["auroc"]), auroc_ci=_ci(s, "auroc"),
                           delta_vs_rest=_optional(s["delta_vs_rest"]), delta_ci=_ci(s, "delta"),
                           p_value=_optional(s["p_adjusted"]), flagged=bool(s["flagged"]))
            for _, s in strata.iterrows()]


def top_loss_records(top: pd.DataFrame) -> list[TopLoss]:
    """The top FPs and FNs; week_start None when the table has no weeks."""
    losses = top[top["kind"].isin(["FP", "FN"])]
    return [TopLoss(user_id=r["user_id"], week_start=r.get("week_start"), task=r["task"],
                    y_true=int(r["y_true"]), y_score=float(r["y_score"]), kind=r["kind"])
            for _, r in losses.iterrows()]
