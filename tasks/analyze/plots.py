"""Figures of the analyze stage: ROC and precision-recall curves, reliability diagram, baseline
scatter, strata forest plot, weeks of top rows.

Figures are `matplotlib.figure.Figure` objects rendered by the Agg canvas, never pyplot: no
global state, no display needed, safe beside other stages in the same process. Every PNG is
written atomically. Week plots read only the sensor-log rows they draw (pyarrow filters on
user_id and time range), never the whole cohort.
"""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from stethoscope.schemas.errors import DataContractError, Problem
from stethoscope.tasks.analyze.config import AnalysisTables
from stethoscope.tasks.shared.calendar import week_window
from stethoscope.tasks.shared.figures import save_png
from stethoscope.tasks.shared.io import inside, list_parquet_files
from stethoscope.tasks.shared.users import read_users, timezones_of

log = logging.getLogger("stethoscope.analyze")

_DPI = 80
_SAMPLES = pa.schema([("user_id", pa.string()), ("timestamp", pa.timestamp("us", tz="UTC")),
                      ("heart_rate", pa.float64()), ("steps", pa.int64())])
_NIGHT_HOURS = (0, 6)  # local night shaded on week plots
_COLOURS = {"flagged": "#c0392b", "underpowered": "#95a5a6", "tested": "#2c3e50"}


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# --- per task: curves, calibration, baseline scatter and forest plot ----------------------


def plot_tasks(tables: AnalysisTables, out_dir: Path) -> list[Path]:
    """Per task with an AUROC: ROC and precision-recall curves, a reliability diagram; a
    scatter of network vs baseline scores when there is a baseline; a forest plot of strata."""
    written = []
    for _, task_row in tables.tasks.iterrows():
        name = task_row["task"]
        rows = tables.baseline_scores[tables.baseline_scores["task"] == name]
        stem = safe_name(name)
        if pd.notna(task_row["auroc"]):
            points = tables.operating_points[tables.operating_points["task"] == name]
            written.append(save_png(curves_figure(rows, task_row, points),
                                    out_dir / f"roc_pr_{stem}.png", dpi=_DPI, tight=True))
            bins = tables.calibration[tables.calibration["task"] == name]
            written.append(save_png(reliability_figure(bins, task_row),
                                    out_dir / f"calibration_{stem}.png", dpi=_DPI, tight=True))
        if rows["baseline_score"].notna().any():
            written.append(save_png(scatter_figure(rows, task_row),
                                    out_dir / f"scatter_{stem}.png", dpi=_DPI, tight=True))
        task_strata = tables.strata[tables.strata["task"] == name]
        if len(task_strata):
            written.append(save_png(forest_figure(task_strata, task_row),
                                    out_dir / f"forest_{stem}.png", dpi=_DPI, tight=True))
    return written


def _counts(task_row: pd.Series) -> str:
    return (f"{task_row['n']} user-weeks of {task_row['num_users']} users, "
            f"{task_row['positives']} positives ({task_row['positive_users']} users)")


def _estimate(task_row: pd.Series, name: str) -> str:
    low, high = task_row[f"{name}_ci_low"], task_row[f"{name}_ci_high"]
    interval = "interval undefined" if pd.isna(low) else f"[{low:.2f}, {high:.2f}]"
    return f"{_num(task_row[name], 3)} {interval}"


def curves_figure(rows: pd.DataFrame, task_row: pd.Series, points: pd.DataFrame) -> Figure:
    """ROC (left) and precision-recall (right) of the network, the baseline's dashed; the
    operating points marked on both."""
    fig = Figure(figsize=(9, 4.2))
    ax_roc, ax_pr = fig.subplots(1, 2)
    y = rows["y_true"].to_numpy()
    curves = [("network", rows["y_score"].to_numpy(), _COLOURS["tested"], "-")]
    if rows["baseline_score"].notna().all():
        curves.append(("metadata baseline", rows["baseline_score"].to_numpy(), "0.55", "--"))
    for label, scores, colour, style in curves:
        fpr, tpr, _ = roc_curve(y, scores)
        ax_roc.plot(fpr, tpr, color=colour, ls=style, lw=1.4, label=label)
        precision, recall, _ = precision_recall_curve(y, scores)
        ax_pr.plot(recall, precision, color=colour, ls=style, lw=1.4, label=label,
                   drawstyle="steps-post")
    ax_roc.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":", label="chance")
    prevalence = float(y.mean())
    ax_pr.axhline(prevalence, color="0.75", lw=0.8, ls=":",
                  label=f"share of positives {prevalence:.2f}")
    for marker, (_, p) in zip("osD^v", points.iterrows(), strict=False):
        label = f"{p['point']} (t={p['threshold']:.2f})"
        if pd.notna(p["specificity"]) and pd.notna(p["sensitivity"]):
            ax_roc.plot(1 - p["specificity"], p["sensitivity"], marker, ms=6, mfc="white",
                        color=_COLOURS["flagged"], label=label)
        if pd.notna(p["ppv"]) and pd.notna(p["sensitivity"]):
            ax_pr.plot(p["sensitivity"], p["ppv"], marker, ms=6, mfc="white",
                       color=_COLOURS["flagged"])
    ax_roc.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)",
               ylabel="true positive rate (sensitivity)")
    ax_roc.set_title(f"ROC: AUROC {_estimate(task_row, 'auroc')}", fontsize=9)
    ax_pr.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)",
              ylabel="precision (PPV)")
    ax_pr.set_title(f"precision-recall: AUPRC {_estimate(task_row, 'auprc')}", fontsize=9)
    for ax in (ax_roc, ax_pr):
        ax.legend(loc="lower right" if ax is ax_roc else "upper right", fontsize=8)
        _readable(ax)
    fig.suptitle(f"{task_row['task']}: {_counts(task_row)}", fontsize=9)
    return fig


def reliability_figure(bins: pd.DataFrame, task_row: pd.Series) -> Figure:
    """Observed rate against mean score per equal-count bin, with intervals; rows per bin
    below."""
    fig = Figure(figsize=(5, 5.4))
    ax, ax_count = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    low = (bins["observed_rate"] - bins["observed_rate_ci_low"]).clip(lower=0)
    high = (bins["observed_rate_ci_high"] - bins["observed_rate"]).clip(lower=0)
    defined = bins["observed_rate_ci_low"].notna()
    ax.errorbar(bins.loc[defined, "mean_score"], bins.loc[defined, "observed_rate"],
                yerr=[low[defined], high[defined]], fmt="o-", ms=4, capsize=2,
                color=_COLOURS["tested"], label="observed rate (interval)")
    if (~defined).any():
        ax.plot(bins.loc[~defined, "mean_score"], bins.loc[~defined, "observed_rate"], "o", ms=4,
                mfc="white", color=_COLOURS["underpowered"], label="interval undefined")
    ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":", label="perfect calibration")
    right = min(1.0, float(bins["score_high"].max()) + 0.05)  # zoom on the scores present
    ax.set(xlim=(0, right), ylim=(0, 1), ylabel="observed rate of positives")
    ax.set_title(f"{task_row['task']}: ECE {_estimate(task_row, 'ece')}, Brier "
                 f"{_num(task_row['brier'], 3)}\n{_counts(task_row)}", fontsize=9)
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    ax_count.bar(bins["mean_score"], bins["n"],
                 width=(bins["score_high"] - bins["score_low"]).clip(lower=0.005 * right),
                 color="0.7", edgecolor="0.4", lw=0.5)
    ax_count.set(xlabel="mean score in bin (equal-count bins)", ylabel="user-weeks")
    for axis in (ax, ax_count):
        _readable(axis)
    return fig


def _readable(ax: Axes) -> None:
    """Axis labels 9 pt and tick labels 8 pt: nothing on a figure below 8 pt."""
    ax.xaxis.label.set_fontsize(9)
    ax.yaxis.label.set_fontsize(9)
    ax.tick_params(labelsize=8)


def scatter_figure(rows: pd.DataFrame, task_row: pd.Series) -> Figure:
    """One dot per user-week: baseline score (x) against network score (y), by true label."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for label, colour in ((0, "#2980b9"), (1, "#e67e22")):
        part = rows[rows["y_true"] == label]
        ax.scatter(part["baseline_score"], part["y_score"], s=6, alpha=0.4, color=colour,
                   label=f"y_true = {label}", linewidths=0)
    ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"baseline score ({task_row['baseline_features']})",
           ylabel="network score")
    pearson, spearman = task_row["pearson_with_baseline"], task_row["spearman_with_baseline"]
    ax.set_title(f"{task_row['task']}: Pearson r = {_num(pearson)}, Spearman rho = "
                 f"{_num(spearman)}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8, markerscale=2)
    return fig


def forest_figure(strata: pd.DataFrame, task_row: pd.Series) -> Figure:
    """AUROC with its interval per stratum; red = flagged, grey = too small to test."""
    fig = Figure(figsize=(7, 1.1 + 0.36 * len(strata)))  # labels readable at the report's 80 dpi
    ax = fig.add_subplot()
    positions = np.arange(len(strata))[::-1]
    for y, (_, s) in zip(positions, strata.iterrows(), strict=True):
        status = "flagged" if s["flagged"] else "underpowered" if s["underpowered"] else "tested"
        if pd.isna(s["auroc"]):
            ax.text(0.5, y, "AUROC undefined", va="center", fontsize=10, color=_COLOURS[status])
            continue
        low = s["auroc_ci_low"] if pd.notna(s["auroc_ci_low"]) else s["auroc"]
        high = s["auroc_ci_high"] if pd.notna(s["auroc_ci_high"]) else s["auroc"]
        ax.errorbar(s["auroc"], y, xerr=[[s["auroc"] - low], [high - s["auroc"]]], fmt="o",
                    ms=4, capsize=2, color=_COLOURS[status],
                    mfc="white" if status == "underpowered" else _COLOURS[status])
        if pd.isna(s["auroc_ci_low"]):  # degenerate: say so rather than draw [a, a]
            ax.text(s["auroc"] + (0.02 if s["auroc"] < 0.8 else -0.02), y, "no interval",
                    va="center", ha="left" if s["auroc"] < 0.8 else "right", fontsize=10,
                    color=_COLOURS[status])
    if pd.notna(task_row["auroc"]):
        ax.axvline(task_row["auroc"], color="0.5", lw=0.8, ls="--")
    ax.set_yticks(positions, [f"{s['column']}={s['value']} (n={s['n']}, {s['positives']} pos.)"
                              for _, s in strata.iterrows()], fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_xlabel("AUROC (dashed: whole cohort); red: significantly worse, grey: too small",
                  fontsize=10)
    ax.tick_params(axis="x", labelsize=10)
    ax.set_title(f"{task_row['task']}: AUROC by stratum", fontsize=11)
    return fig


def _num(value: object, digits: int = 2) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


# --- weeks of the top rows ----------------------------------------------------------------


def check_sensor_logs(sensor_logs_dir: Path | None) -> None:
    """Fail before the analysis, not after it, when the sensor logs to plot are not there."""
    if sensor_logs_dir is not None and not Path(sensor_logs_dir).is_dir():
        raise DataContractError(f"analyze: no sensor logs at {sensor_logs_dir}", [Problem(
            rule="missing_directory", file=str(sensor_logs_dir),
            message="the directory of sensor logs to plot the weeks of top rows from is missing.",
            fix="pass --data a cohort directory holding sensor_logs/ and users.parquet, or "
                "leave --data out to skip the week plots.")])


def read_timezones(users_file: Path) -> dict[str, str]:
    """user_id -> IANA timezone from users.parquet."""
    users = read_users(users_file, ["user_id", "timezone"], stage="analyze")
    return {str(user): str(zone) for user, zone in timezones_of(users).items()}


def load_samples(sensor_logs_dir: Path, user_ids: list[str], start: pd.Timestamp,
                 end: pd.Timestamp) -> pd.DataFrame:
    """Sensor-log rows of `user_ids` in [start, end) (UTC), read with pushed-down filters.

    The run's clean logs or a cohort's own: each file is cast to _SAMPLES on reading, so files
    of the latitude docs/architecture.md §4.1 accepts (ns timestamps, integer heart rates,
    dictionary ids) mix."""
    files, refused = inside(sensor_logs_dir, list_parquet_files(sensor_logs_dir))
    if refused:
        log.warning("analyze: not read, they resolve outside %s: %s", sensor_logs_dir,
                    ", ".join(str(f) for f in refused[:5]))
    dataset = ds.dataset([str(f) for f in files], format="parquet", partitioning="hive",
                         partition_base_dir=str(sensor_logs_dir), schema=_SAMPLES)
    utc = pa.timestamp("us", tz="UTC")
    where = (ds.field("user_id").isin(user_ids)
             & (ds.field("timestamp") >= pa.scalar(start.to_pydatetime(), type=utc))
             & (ds.field("timestamp") < pa.scalar(end.to_pydatetime(), type=utc)))
    table = dataset.to_table(columns=["user_id", "timestamp", "heart_rate", "steps"],
                             filter=where)
    return table.to_pandas().sort_values(["user_id", "timestamp"], kind="stable")


def plot_top_weeks(top: pd.DataFrame, out_dir: Path, sensor_logs_dir: Path | None,
                   timezones: dict[str, str] | None) -> tuple[list[Path | None], str | None]:
    """A week plot per top row (aligned with `top`), or why none was drawn."""
    if "week_start" not in top.columns:
        return [None] * len(top), (
            "the predictions table has no week_start column: its rows are no weeks to plot")
    if sensor_logs_dir is None or timezones is None:
        return [None] * len(top), (
            "no sensor logs and users file given (analyze alone on a predictions file); "
            "pass --data COHORT (a cohort directory: sensor_logs/, users.parquet) to plot the "
            "weeks of top rows")
    if top.empty:
        return [], None
    zones = [timezones.get(u, "UTC") for u in top["user_id"]]
    windows = [week_window(w, z) for w, z in zip(top["week_start"], zones, strict=True)]
    try:
        samples = load_samples(Path(sensor_logs_dir), sorted(set(top["user_id"])),
                               min(w[0] for w in windows), max(w[1] for w in windows))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        return [None] * len(top), (
            f"the sensor logs in {sensor_logs_dir} could not be read ({type(exc).__name__}: "
            f"{exc}); `stethoscope validate` names the files that break the contract")
    by_user = {u: part for u, part in samples.groupby("user_id", sort=False)}
    written: list[Path | None] = []
    for (_, row), zone, (start, end) in zip(top.iterrows(), zones, windows, strict=True):
        part = by_user.get(row["user_id"], samples.iloc[:0])
        part = part[(part["timestamp"] >= start) & (part["timestamp"] < end)]
        path = out_dir / f"{safe_name(row['task'])}_{row['kind']}_{row['rank']:02d}.png"
        figure = week_figure(part, row, zone, known=row["user_id"] in timezones)
        written.append(save_png(figure, path, dpi=_DPI, tight=True))
    return written, None


def week_figure(samples: pd.DataFrame, row: pd.Series, timezone: str, known: bool) -> Figure:
    """Heart rate and steps of one local week, local night (00:00-06:00) shaded."""
    fig = Figure(figsize=(9, 3.6))
    ax_hr, ax_steps = fig.subplots(2, 1, sharex=True)
    local = samples["timestamp"].dt.tz_convert(timezone).dt.tz_localize(None)
    ax_hr.plot(local, samples["heart_rate"], ".", ms=1.5, color="#c0392b")
    ax_steps.plot(local, samples["steps"], lw=0.6, color="#2c3e50", drawstyle="steps-post")
    monday = pd.Timestamp(row["week_start"])
    for day in range(7):
        night = monday + timedelta(days=day)
        for ax in (ax_hr, ax_steps):
            ax.axvspan(night + timedelta(hours=_NIGHT_HOURS[0]),
                       night + timedelta(hours=_NIGHT_HOURS[1]), color="0.88", lw=0)
    ax_hr.set_ylabel("heart rate (bpm)", fontsize=8)
    ax_steps.set_ylabel("steps", fontsize=8)
    ax_steps.set_xlim(monday, monday + timedelta(days=7))
    zone = timezone if known else f"{timezone} (user not in users file)"
    fig.suptitle(f"{row['kind']} #{row['rank']}  task {row['task']}  user {row['user_id']}  "
                 f"week of {row['week_start']}  y_true={row['y_true']}  "
                 f"score={row['y_score']:.3f}  local time {zone}"
                 + ("" if len(samples) else "  (no samples)"), fontsize=8)
    return fig
