"""`stethoscope compare` end to end on a tiny cohort: the data stages once, two variants each
with its own run directory on the shared store, comparison.json and comparison.html; a
variants file that cannot be compared is exit 2 before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stethoscope.flows.cli import EXIT_USAGE, main
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from tests.flows.conftest import tiny_settings

pytestmark = pytest.mark.slow

VARIANTS = yaml.safe_dump({
    "base": tiny_settings(128),
    "variants": {"relu": {"model": {"activation": "relu"}},
                 "nolstm": {"model": {"recurrence": "none"}}},
    "comparison": {"num_bootstrap": 200},
}, sort_keys=False)


def test_compare_two_tiny_variants(tmp_path: Path, prefect_server,
                                   capsys: pytest.CaptureFixture[str]):
    cohort = tmp_path / "cohort"
    simulate_cohort(SimulateConfig(users=16, weeks=1, seed=3), cohort)
    spec = tmp_path / "variants.yaml"
    spec.write_text(VARIANTS)
    out = tmp_path / "compare"
    assert main(["compare", "--data", str(cohort), "--variants", str(spec), "--out", str(out)]) == 0
    assert "comparison.html" in capsys.readouterr().out
    comparison = json.loads((out / "comparison.json").read_text())
    relu, nolstm = comparison["variants"]
    assert (relu["name"], nolstm["name"]) == ("relu", "nolstm")
    assert relu["config"] == {"model": {"activation": "relu"}}
    assert {layer["name"] for layer in relu["layers"]} >= {"conv_1", "bilstm"}
    assert "bilstm" not in {layer["name"] for layer in nolstm["layers"]}
    for variant in (relu, nolstm):
        assert set(variant) >= {"name", "config", "layers", "horizon_hours", "synthetic", "auroc"}
        run = out / variant["name"]
        assert (run / "sequences").is_symlink() and (run / "report.html").is_file()
        assert json.loads((run / "summary.json").read_text())["flow"] == "compare-architectures"
    assert not (out / "nolstm" / "validation").exists()  # the data stages ran once, in data/
    assert (out / "data" / "sequences" / "index.parquet").is_file()
    html = (out / "comparison.html").read_text()
    assert "Variant × measure" in html and "data:image/png;base64," in html


def test_variants_that_change_the_data_are_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    cohort = tmp_path / "cohort"
    (cohort / "sensor_logs").mkdir(parents=True)
    spec = tmp_path / "variants.yaml"
    spec.write_text("variants:\n  a: {labels: {num_bins: 64}}\n  b: {}\n")
    code = main(["compare", "--data", str(cohort), "--variants", str(spec),
                 "--out", str(tmp_path / "out")])
    assert code == EXIT_USAGE
    assert "a variant may change only" in capsys.readouterr().err
    spec.write_text("variant: {a: {}}\n")
    assert main(["compare", "--data", str(cohort), "--variants", str(spec),
                 "--out", str(tmp_path / "out")]) == EXIT_USAGE
    assert not (tmp_path / "out").exists()
