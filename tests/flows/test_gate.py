"""The nightly gate from the command line, on the real flows: the same users scored on three
nights (the second much worse: REGRESSION error, exit 3; the third as good as the first,
compared with the first because the second failed: no REGRESSION); identical runs (nothing);
and audit-model on a cohort whose heart rate is shifted by +15 bpm with a model with planted
dead units (DATA_DRIFT on heart-rate features only, the new dead units named)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stethoscope.flows.cli import EXIT_FAIL, EXIT_USAGE, main
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from tests.unit.test_gate_regressions import night

pytestmark = pytest.mark.slow

T = 128


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _codes(summary: dict, stage: str = "gate") -> list[str]:
    return [f["code"] for f in summary["findings"] if f["stage"] == stage]


def _analyze(table: pd.DataFrame, tmp_path: Path, name: str, *extra: str) -> tuple[int, dict]:
    file = tmp_path / f"{name}.parquet"
    table.to_parquet(file, index=False)
    config = tmp_path / "fast.yaml"
    config.write_text("analyze: {num_bootstrap: 200, num_permutations: 100}\n"
                      "gate: {num_bootstrap: 300}\n")
    out = tmp_path / "runs" / name
    code = main(["analyze", "--predictions", str(file), "--out", str(out), "--strata", "",
                 "--config", str(config), *extra])
    return code, _summary(out)


def test_three_nights_of_the_same_users(tmp_path: Path, prefect_server,
                                        capsys: pytest.CaptureFixture[str]):
    code, first = _analyze(night(0.85, 1), tmp_path, "night-1")
    assert code == 0 and first["flow"] == "analyze-predictions"
    assert _codes(first) == ["NO_REFERENCE"]

    code, second = _analyze(night(0.60, 2), tmp_path, "night-2")
    assert code == EXIT_FAIL
    assert second["comparison"]["reference"]["run_id"] == "night-1"
    [regression] = [f for f in second["findings"]
                    if f["code"] == "REGRESSION" and "AUROC" in f["message"]]
    assert regression["severity"] == "error" and "paired" in regression["message"]
    auroc = next(c for c in second["comparison"]["changes"] if c["measure"] == "auroc")
    assert auroc["verdict"] == "regression" and auroc["delta_ci"][1] < -0.02
    assert "Since the reference run" in (tmp_path / "runs" / "night-2" / "report.html").read_text()

    code, third = _analyze(night(0.85, 3), tmp_path, "night-3")
    assert code == 0
    assert third["comparison"]["reference"]["run_id"] == "night-1"  # night-2 failed
    assert "REGRESSION" not in _codes(third)

    # pinned: night-3 against night-2 is an improvement, not a finding
    code, pinned = _analyze(night(0.85, 3), tmp_path, "night-3b", "--baseline",
                            str(tmp_path / "runs" / "night-2"))
    assert code == 0 and pinned["comparison"]["reference"]["chosen"] == "pinned"
    assert {c["verdict"] for c in pinned["comparison"]["changes"]} == {"improved"}

    # blessing night-3 makes it the reference of the next run
    assert main(["bless", str(tmp_path / "runs" / "night-3")]) == 0
    _, fourth = _analyze(night(0.85, 3), tmp_path, "night-4")
    assert fourth["comparison"]["reference"] == {
        **fourth["comparison"]["reference"], "run_id": "night-3", "chosen": "blessed"}
    assert _codes(fourth) == []  # the same scores: nothing at all
    assert {c["verdict"] for c in fourth["comparison"]["changes"]} == {"same"}

    assert main(["bless", str(tmp_path / "runs" / "night-2")]) == EXIT_USAGE
    assert "status is fail" in capsys.readouterr().err


def _shifted(cohort: Path, out: Path, bpm: float) -> Path:
    """A copy of `cohort` whose every heart-rate sample is `bpm` higher."""
    (out / "sensor_logs").mkdir(parents=True)
    for file in sorted((cohort / "sensor_logs").glob("*.parquet")):
        logs = pd.read_parquet(file)
        logs["heart_rate"] = logs["heart_rate"] + bpm
        logs.to_parquet(out / "sensor_logs" / file.name, index=False)
    for name in ("users.parquet", "labels.parquet"):
        if (cohort / name).exists():
            (out / name).write_bytes((cohort / name).read_bytes())
    return out


def _model(path: Path, dead: list[int]) -> Path:
    """A DeepHeart-shaped network on the cohort's (T, C) and metadata, ReLU convolutions; the
    units `dead` of conv_1 planted dead (weights 0, bias -1)."""
    import keras

    from stethoscope.schemas.sequence_store import CHANNELS, METADATA_FEATURES
    from tests.model.conftest import healthy_audit_model

    model = healthy_audit_model(T, units=4, seed=0)
    conv = model.get_layer("conv_1")
    kernel, bias = conv.get_weights()
    bias[:] = 0.1
    kernel[:, :, dead], bias[dead] = 0.0, -1.0
    relu = keras.Model.from_config(_with_relu(model.get_config()))
    relu.set_weights(model.get_weights())
    relu.get_layer("conv_1").set_weights([kernel, bias])
    assert relu.input_shape[0][-1] == len(CHANNELS) and relu.input_shape[1][-1] == len(METADATA_FEATURES)
    relu.save(path)
    return path


def _with_relu(config: dict) -> dict:
    for layer in config["layers"]:
        if layer["config"].get("name") == "conv_1":
            layer["config"]["activation"] = "relu"
    return config


def test_drift_and_dead_units_against_the_last_run(tmp_path: Path, prefect_server):
    cohort = tmp_path / "cohort"
    simulate_cohort(SimulateConfig(users=48, weeks=1, seed=5), cohort)
    hotter = _shifted(cohort, tmp_path / "hotter", 15.0)
    healthy, planted = _model(tmp_path / "healthy.keras", []), _model(tmp_path / "dead.keras", [1, 4, 6])
    config = tmp_path / "fast.yaml"
    config.write_text(f"labels: {{num_bins: {T}}}\nsequences: {{num_steps: {T}, min_coverage: 0.3}}\n"
                      "activations: {max_user_weeks: 16}\ngradients: {max_user_weeks: 8}\n")

    def audit(model: Path, data: Path, name: str) -> dict:
        code = main(["audit-model", "--model", str(model), "--data", str(data), "--out",
                     str(tmp_path / "runs" / name), "--config", str(config)])
        assert code in (0, 3)
        return _summary(tmp_path / "runs" / name)

    audit(healthy, cohort, "a")
    same = audit(healthy, cohort, "b")
    assert same["comparison"]["reference"]["run_id"] == "a"
    assert _codes(same) == [] and not any(d["drifted"] for d in same["comparison"]["drift"])
    assert {c["verdict"] for c in same["comparison"]["changes"]} == {"same"}

    moved = audit(planted, hotter, "c")
    drifted = {(d["name"], d["stratum"]) for d in moved["comparison"]["drift"] if d["drifted"]}
    assert ("resting_heart_rate", "all") in drifted
    assert not {name for name, _ in drifted} & {"mean_daily_steps", "coverage"}
    [dead] = [f for f in moved["findings"]
              if f["code"] == "REGRESSION" and "dead units" in f["message"]]
    assert "conv_1" in dead["message"] and "1, 4, 6" in dead["message"]
    assert (tmp_path / "runs" / "c" / "gate" / "profile.json").is_file()
    assert np.isfinite([d["effect"] for d in moved["comparison"]["drift"]
                        if d["name"] == "resting_heart_rate" and d["stratum"] == "all"]).all()
