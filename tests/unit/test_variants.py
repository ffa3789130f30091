"""The variant comparison against known answers: a variant with a planted dead layer and weaker
scores on the same user-weeks is marked (for that variant only), beyond noise where the
intervals or the seeds say so; identical variants are marked nowhere."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stethoscope.schemas.summary import (
    ActivationsSection,
    GradientsSection,
    LayerActivations,
    PredictionsSection,
    Summary,
    TaskMetrics,
)
from stethoscope.tasks.variants.config import VariantRun, VariantsConfig
from stethoscope.tasks.variants.report import write_comparison
from tests.unit.test_gate_regressions import night

NOW = datetime(2026, 12, 6, tzinfo=UTC)


def _run(root: Path, name: str, seed: int, dead: list[int], auroc: float, score_seed: int,
         horizon: float = 24.0) -> VariantRun:
    run = root / f"{name}-seed{seed}"
    (run / "analysis").mkdir(parents=True)
    scores = night(auroc, score_seed, num_users=200)
    scores.to_parquet(run / "analysis" / "baseline_scores.parquet", index=False)
    layer = LayerActivations(name="conv_1", units=8, dead_units=dead, dead_fraction=len(dead) / 8,
                             constant_units=[], saturated_fraction=0.0)
    summary = Summary(
        run_id=run.name, flow="compare-architectures", status="pass", started_at=NOW,
        finished_at=NOW, config={}, activations=ActivationsSection(layers=[layer]),
        gradients=GradientsSection(output_layer="raw_output", horizon_hours=horizon),
        predictions=PredictionsSection(tasks=[TaskMetrics(
            task="diabetes", n=len(scores), auroc=auroc, auroc_ci=None, baseline_auroc=None,
            corr_with_baseline=None)]))
    (run / "summary.json").write_text(summary.model_dump_json())
    return VariantRun(name=name, seed=seed, run_dir=run, config={"model": {"activation": name}})


def _measure(comparison: dict, variant: str, measure: str) -> dict:
    entry = next(v for v in comparison["variants"] if v["name"] == variant)
    return next(m for m in entry["measures"] if m["measure"] == measure)


def test_a_planted_dead_layer_and_weaker_scores_mark_that_variant_only(tmp_path: Path):
    runs = [_run(tmp_path, "leaky", s, [], 0.85, 1 + s) for s in (0, 1)]
    runs += [_run(tmp_path, "relu", s, list(range(8)), 0.62, 10 + s) for s in (0, 1)]
    result = write_comparison(tmp_path, runs, VariantsConfig(num_bootstrap=300))
    comparison = json.loads(result.comparison_json.read_text())
    assert comparison["seeds"] == 2
    dead = _measure(comparison, "relu", "dead share conv_1")
    assert dead["value"] == 1.0 and dead["beyond_noise"] is True and not dead["best"]
    assert _measure(comparison, "leaky", "dead share conv_1")["best"]
    auroc = _measure(comparison, "relu", "auroc diabetes")
    assert auroc["beyond_noise"] is True and auroc["delta_ci"][1] < 0
    leaky = next(v for v in comparison["variants"] if v["name"] == "leaky")
    assert leaky["layers"] == [{"name": "conv_1", "dead_fraction": 0.0, "constant_fraction": 0.0}]
    assert not any(m["beyond_noise"] for m in leaky["measures"])
    html = result.comparison_html.read_text()
    assert "▼" in html and "relu-seed1/report.html" in html


def test_identical_variants_are_marked_nowhere(tmp_path: Path):
    runs = [_run(tmp_path, name, 0, [3], 0.8, 5) for name in ("a", "b")]
    comparison = json.loads(write_comparison(tmp_path, runs, VariantsConfig(num_bootstrap=200))
                            .comparison_json.read_text())
    for variant in comparison["variants"]:
        assert not any(m["best"] or m["beyond_noise"] for m in variant["measures"])


@pytest.mark.parametrize("variants", [
    [{"name": "a", "overrides": {"labels": {"num_bins": 64}}}, {"name": "b"}],
    [{"name": "a"}, {"name": "a"}],
    [{"name": "a"}],
])
def test_variant_parameters_refuse_what_cannot_be_compared(variants):
    from pydantic import ValidationError

    from stethoscope.flows.parameters import CompareParameters

    with pytest.raises(ValidationError):
        CompareParameters.model_validate({"data_dir": "c", "out_dir": "o", "variants": variants})


def test_seeds_make_runs_with_their_own_seed():
    from stethoscope.flows.parameters import CompareParameters

    params = CompareParameters.model_validate({
        "data_dir": "c", "out_dir": "o", "seeds": 2, "base": {"train": {"seed": 7}},
        "variants": [{"name": "a", "overrides": {"model": {"activation": "relu"}}}, {"name": "b"}]})
    runs = params.runs()
    assert [(v.name, k, p.run_id, p.train.seed) for v, k, p in runs] == [
        ("a", 0, "a-seed0", 7), ("a", 1, "a-seed1", 8), ("b", 0, "b-seed0", 7),
        ("b", 1, "b-seed1", 8)]
    assert runs[0][2].model.activation == "relu" and runs[2][2].model.activation == "leaky_relu"
    assert not runs[0][2].gate.enabled
