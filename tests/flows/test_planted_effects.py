"""The prediction analysis finds the simulator's planted generation-1 effect (issue: "on the
simulated cohort, the planted oldest-generation effect is found").

Training a network that far is too slow for CI, so transparent, hand-written scorers stand in
for it: they read the simulated cohort's *real* clean sensor logs (simulate -> validate ->
labels), and the *real* `analyze_predictions` runs on their predictions, stratified by
`device_generation` (of the user-week table).

Scorers, per user-week (local time from users.timezone; a successive difference is the heart
rate of a minute minus that of the previous minute, kept only when both samples are the same
user's consecutive minutes and both are measured; a night pair is one whose two minutes are both
in local 00:00-06:00):

- `night_variability`: the standard deviation of the night pairs' successive differences — the
  planted sleep-apnea signal (minute-to-minute std ~1.8 -> ~4.1 bpm). Generation-1 devices add
  white noise of sd 4 bpm while the wearer sleeps (differences ~5.6 bpm without apnea).
  `max_pairs=None` uses the whole week; `max_pairs=SHORT_HORIZON_PAIRS` uses only the week's
  first 30 night pairs (mostly Monday 00:00-00:30, where some users are still awake), as a
  model whose effective horizon is about half an hour of night would (docs/architecture.md §1.1).
- `daytime_heart_rate`: the median heart rate in local 08:00-20:00 — the planted hypertension
  signal (+6 bpm); generation-1 devices are unbiased by day, so it is the control.

A score becomes a probability by its rank: rank / (n + 1) within the task. Rows whose label is
null, or whose scorer has no data, are left out.

What the measurements showed (600 users x 1 week, seed 0; seeds 1-5 alike): generation-1
noise does *not* make the week-long night score discriminate worse within the stratum (AUROC
1.000 there, 0.999 in the rest): ~2,000 night differences a week estimate a standard deviation
to ~2%, so the noise lifts every generation-1 week (~5.6 bpm without apnea, ~6.7 with) without
blurring their order. What it does to a week-long score is a shift: generation-1 weeks without
apnea outscore newer-device weeks with it, the pooled AUROC falls to 0.84, and the analysis
finds it as a LOSS_PATTERN (generation 1 is 100% of the top losses, 9% of the correct rows),
not as a WEAK_STRATUM, which compares rankings *within* strata. Only a noise-limited scorer (the
short-horizon one) is a WEAK_STRATUM: generation 1 AUROC 0.82 vs 0.98 for the rest (adjusted
p 0.012). Both tests fail when the generation-1 noise (asleep and awake) is set to the newer
devices' 1.0 bpm. The +6 bpm sleeping bias plays no part: successive differences cancel it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stethoscope.schemas.layout import RunPaths
from stethoscope.schemas.tables import PREDICTIONS
from stethoscope.tasks.analyze.analysis import analyze_predictions
from stethoscope.tasks.analyze.config import AnalysisResult, AnalyzeConfig
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from stethoscope.tasks.labels.config import LabelsConfig
from stethoscope.tasks.labels.user_weeks import build_user_weeks
from stethoscope.tasks.validate.config import ValidateConfig
from stethoscope.tasks.validate.gate import validate_cohort

pytestmark = pytest.mark.slow

# 400 users: the weak stratum is missed on 1 seed of 4 (12 generation-1 positives).
USERS, WEEKS, SEED = 600, 1, 0
NIGHT_HOURS, DAY_HOURS = (0, 6), (8, 20)  # local [start, end)
SHORT_HORIZON_PAIRS = 30
GENERATION_1 = "1"  # the stratum label of device_generation == 1
ANALYZE = AnalyzeConfig(strata_columns=("device_generation",), num_bootstrap=300,
                        num_permutations=500, seed=0)


@dataclass(frozen=True)
class Cohort:
    minutes: pd.DataFrame  # a row per clean sample; see _local_minutes
    user_weeks: pd.DataFrame  # user_id, week_start, device, device_generation, age, sex, labels


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Cohort:
    root = tmp_path_factory.mktemp("planted")
    started = time.perf_counter()
    simulated = simulate_cohort(SimulateConfig(users=USERS, weeks=WEEKS, seed=SEED,
                                               users_per_file=100), root / "cohort")
    run = RunPaths(root / "run")
    validate_cohort(simulated.paths, run, ValidateConfig(great_expectations=False))
    build_user_weeks(run.clean, simulated.paths.users, run.user_weeks, LabelsConfig())
    users = pq.read_table(simulated.paths.users).to_pandas()
    user_weeks = (pq.read_table(run.user_weeks, columns=["user_id", "week_start", "device",
                                                         "device_generation"]).to_pandas()
                  .merge(users[["user_id", "age", "sex"]], on="user_id")
                  .merge(pq.read_table(simulated.paths.labels).to_pandas(), on="user_id"))
    minutes = _local_minutes(pq.read_table(run.clean).to_pandas(),
                             users.set_index("user_id")["timezone"])
    print(f"\ncohort: {USERS} users x {WEEKS} week, {len(minutes):,} clean rows, "
          f"{len(user_weeks)} user-weeks, {int((user_weeks['device_generation'] == 1).sum())} "
          f"on generation 1; simulate+validate+labels+load {time.perf_counter() - started:.1f} s")
    return Cohort(minutes, user_weeks)


def _local_minutes(logs: pd.DataFrame, timezones: pd.Series) -> pd.DataFrame:
    """One row per clean sample: user_id, week_start (local Monday), hour (local), heart_rate,
    hr_step (successive difference, NaN unless the previous row is the same user's previous
    minute) and previous_hour (that minute's local hour)."""
    parts = []
    for zone, rows in logs.groupby(logs["user_id"].map(timezones), sort=False):
        parts.append(rows.assign(local=rows["timestamp"].dt.tz_convert(zone).dt.tz_localize(None)))
    logs = pd.concat(parts).sort_values(["user_id", "timestamp"], ignore_index=True)
    local = logs.pop("local")
    consecutive = ((logs["user_id"] == logs["user_id"].shift())
                   & (logs["timestamp"].diff() == pd.Timedelta(minutes=1)))
    return pd.DataFrame({
        "user_id": logs["user_id"],
        "week_start": (local.dt.normalize()
                       - pd.to_timedelta(local.dt.day_of_week, unit="D")).dt.date,
        "hour": local.dt.hour,
        "heart_rate": logs["heart_rate"],
        "hr_step": logs["heart_rate"].diff().where(consecutive),
        "previous_hour": local.dt.hour.shift().where(consecutive),
    })


def _in_hours(hour: pd.Series, window: tuple[int, int]) -> pd.Series:
    return (hour >= window[0]) & (hour < window[1])


def night_variability(minutes: pd.DataFrame, max_pairs: int | None = None) -> pd.Series:
    """Std of the night pairs' successive differences per (user_id, week_start); with
    `max_pairs`, of the week's first `max_pairs` night pairs only."""
    night = (_in_hours(minutes["hour"], NIGHT_HOURS)
             & _in_hours(minutes["previous_hour"], NIGHT_HOURS) & minutes["hr_step"].notna())
    pairs = minutes.loc[night, ["user_id", "week_start", "hr_step"]]
    if max_pairs is not None:
        pairs = pairs[pairs.groupby(["user_id", "week_start"]).cumcount() < max_pairs]
    return pairs.groupby(["user_id", "week_start"])["hr_step"].std()


def daytime_heart_rate(minutes: pd.DataFrame) -> pd.Series:
    """Median measured heart rate in local 08:00-20:00 per (user_id, week_start)."""
    day = minutes[_in_hours(minutes["hour"], DAY_HOURS)]
    return day.groupby(["user_id", "week_start"])["heart_rate"].median()


def write_predictions(cohort: Cohort, scores: dict[str, pd.Series], path: Path) -> Path:
    """predictions.parquet (PREDICTIONS) of task -> score per user-week; all rows "test"."""
    parts = []
    for task_name, score in scores.items():
        rows = cohort.user_weeks.merge(score.rename("score").reset_index(),
                                       on=["user_id", "week_start"])
        rows = rows.dropna(subset=[task_name, "score"])
        parts.append(pd.DataFrame({
            "user_id": rows["user_id"], "week_start": rows["week_start"], "task": task_name,
            "split": "test", "y_true": rows[task_name].astype("int8"),
            "y_score": rows["score"].rank().to_numpy() / (len(rows) + 1),
            "device": rows["device"], "device_generation": rows["device_generation"],
            "age": rows["age"], "sex": rows["sex"],
        }))
    table = pa.Table.from_pandas(pd.concat(parts, ignore_index=True), schema=PREDICTIONS,
                                 preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def run_analysis(cohort: Cohort, scores: dict[str, pd.Series],
                 out: Path) -> tuple[AnalysisResult, pd.DataFrame, pd.DataFrame]:
    """The real analysis of the scores' predictions; prints pooled and per-stratum AUROCs."""
    started = time.perf_counter()
    result = analyze_predictions(write_predictions(cohort, scores, out / "predictions.parquet"),
                                 out / "analysis", ANALYZE)
    strata = pd.read_parquet(result.tables["strata"])
    patterns = pd.read_parquet(result.tables["loss_patterns"])
    tasks = pd.read_parquet(result.tables["tasks"])
    print(f"analyze: {time.perf_counter() - started:.1f} s")
    for _, t in tasks.iterrows():
        print(f"  {t['task']}: pooled AUROC {t['auroc']:.3f} (n={t['n']}, "
              f"{t['positives']} positives), baseline {t['baseline_auroc']:.3f}")
    for _, s in strata.iterrows():
        tested = (f"rest {s['rest_auroc']:.3f}, delta {s['delta_vs_rest']:+.3f}, "
                  f"p_adj {s['p_adjusted']:.3g}" if not s["underpowered"] else s["reason"])
        print(f"    {s['task']} generation {s['value']:>2}: AUROC {_num(s['auroc'])} "
              f"(n={s['n']}, {s['positives']} positives) {tested}"
              f"{'  FLAGGED' if s['flagged'] else ''}")
    for _, p in patterns[patterns["reported"] & (patterns["column"] == "device_generation")].iterrows():
        print(f"    loss pattern {p['task']} generation {p['value']}: "
              f"{p['share_losses']:.0%} of losses vs {p['share_correct']:.0%} of correct")
    return result, strata, patterns


def _num(value: float | None) -> str:
    return "  n/a" if value is None or pd.isna(value) else f"{value:.3f}"


def _generation_1(strata: pd.DataFrame, task_name: str) -> pd.Series:
    rows = strata[(strata["task"] == task_name) & (strata["value"] == GENERATION_1)]
    assert len(rows) == 1, f"no generation-1 stratum for {task_name}: {strata[['task', 'value']]}"
    return rows.iloc[0]


def test_generation_1_is_a_weak_stratum_for_a_noise_limited_night_score(cohort, tmp_path):
    """With only ~30 night minutes a week, the generation-1 noise swamps the apnea signal: the
    stratum is flagged WEAK_STRATUM. The daytime control does not flag generation 1. Other
    generations of the control are not asserted: Benjamini-Hochberg bounds the false discovery
    rate, not the family-wise error, and the apnea task's true discoveries lift its threshold,
    so a chance flag happens (seed 1: hypertension generation 9, 48 user-weeks, AUROC 0.50 vs
    0.75, adjusted p 0.024)."""
    scores = {"sleep_apnea": night_variability(cohort.minutes, SHORT_HORIZON_PAIRS),
              "hypertension": daytime_heart_rate(cohort.minutes)}
    result, strata, _ = run_analysis(cohort, scores, tmp_path)

    weak = _generation_1(strata, "sleep_apnea")
    assert not weak["underpowered"], weak["reason"]
    assert weak["flagged"] and weak["delta_vs_rest"] < 0, weak.to_dict()
    assert weak["delta_ci_high"] < 0, weak.to_dict()
    named = [f for f in result.findings if f.code == "WEAK_STRATUM"
             and "task sleep_apnea, device_generation=1:" in f.message]
    assert len(named) == 1, [f.message for f in result.findings]

    control = _generation_1(strata, "hypertension")
    assert not control["underpowered"] and not control["flagged"], control.to_dict()
    assert not [f for f in result.findings if f.code == "WEAK_STRATUM"
                and "task hypertension, device_generation=1:" in f.message]


def test_generation_1_fills_the_losses_of_a_week_long_night_score(cohort, tmp_path):
    """Over a whole week the noise averages out within the stratum, but every generation-1
    night looks apnoeic: generation 1 is over-represented among the top losses (LOSS_PATTERN),
    and the pooled AUROC is below that of either part; the daytime control has no such pattern."""
    scores = {"sleep_apnea": night_variability(cohort.minutes),
              "hypertension": daytime_heart_rate(cohort.minutes)}
    result, strata, patterns = run_analysis(cohort, scores, tmp_path)

    generation = patterns[patterns["column"] == "device_generation"]
    apnea = generation[(generation["task"] == "sleep_apnea") & (generation["value"] == GENERATION_1)]
    assert apnea["reported"].tolist() == [True], apnea.to_dict("records")
    assert any(f.code == "LOSS_PATTERN" and "task sleep_apnea: device_generation=1 " in f.message
               for f in result.findings)
    pooled = next(t.auroc for t in result.tasks if t.task == "sleep_apnea")
    split = _generation_1(strata, "sleep_apnea")
    assert pooled < min(split["auroc"], split["rest_auroc"]) - 0.05, (pooled, split.to_dict())

    control = generation[(generation["task"] == "hypertension")
                         & (generation["value"] == GENERATION_1)]
    assert control["reported"].tolist() == [False], control.to_dict("records")
    assert not _generation_1(strata, "hypertension")["flagged"]
