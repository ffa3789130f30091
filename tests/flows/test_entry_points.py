"""The command line and the Python API as a user meets them: usage errors answer at once, with a
message and no traceback, before TensorFlow or Prefect is loaded; -q / -v / --version; serve
refuses to start outside a project; and the API runs the real flows end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stethoscope
from stethoscope.flows.cli import EXIT_USAGE, build_parser, main
from stethoscope.schemas.errors import UsageError
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from tests.flows.conftest import tiny_settings

PROJECT = Path(__file__).resolve().parents[2]
PROBE = """
import sys, time
started = time.perf_counter()
from stethoscope.flows.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("tensorflow", "keras", "prefect") if m in sys.modules)
print(f"exit={code} heavy={heavy} seconds={time.perf_counter() - started:.3f}")
"""


@pytest.fixture
def empty_cohort(tmp_path: Path) -> Path:
    cohort = tmp_path / "cohort"
    (cohort / "sensor_logs").mkdir(parents=True)
    return cohort


def _probe(*argv: str, cwd: Path) -> tuple[str, str, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    return done.stdout, done.stderr, time.perf_counter() - started


def test_a_bad_config_key_answers_without_heavy_imports(tmp_path: Path, empty_cohort: Path):
    """What makes the answer fast is that TensorFlow, Keras and Prefect are never imported
    before the config is checked; how fast it is on this machine is a benchmark's business
    (bench/bench_cli.py), not a test's: a loaded machine would make a timing flaky."""
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  epochz: 3\n")
    argv = ("run", "--data", str(empty_cohort), "--out", str(tmp_path / "runs" / "r"),
            "--config", str(config))
    stdout, stderr, _ = _probe(*argv, cwd=tmp_path)
    assert "exit=2 heavy=[]" in stdout, stdout + stderr
    assert "train.epochz: Extra inputs are not permitted (given: 3)" in stderr
    assert f"--config {config}" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "runs").exists()  # nothing half-written


@pytest.mark.parametrize(("setup", "expected"), [
    ("missing_cohort", "the cohort directory {tmp}/nowhere does not exist"),
    ("out_under_a_file", "is a file, so no directory can be made under it"),
    ("yaml_syntax", "not readable as YAML or JSON"),
    ("binary_config", "not readable as YAML or JSON"),
    ("key_from_the_command_line", "data_dir come from the command line"),
])
def test_usage_errors_name_the_problem_and_exit_2(
        setup: str, expected: str, tmp_path: Path, empty_cohort: Path,
        capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "config.yaml"
    argv = ["run", "--data", str(empty_cohort), "--out", str(tmp_path / "runs" / "r")]
    if setup == "missing_cohort":
        argv[2] = str(tmp_path / "nowhere")
    elif setup == "out_under_a_file":
        (tmp_path / "file").write_text("x")
        argv[4] = str(tmp_path / "file" / "r")
    else:
        config.write_bytes({"yaml_syntax": b"train: [\n", "binary_config": b"\xff\xfe\x00\x81",
                            "key_from_the_command_line": b"data_dir: elsewhere\n"}[setup])
        argv += ["--config", str(config)]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert expected.format(tmp=tmp_path) in err and "Traceback" not in err


def test_quiet_verbose_and_version():
    parser = build_parser()
    for argv in (["-q", "validate", "--data", "d", "--out", "o"],
                 ["validate", "-q", "--data", "d", "--out", "o"]):
        args = parser.parse_args(argv)
        assert args.quiet and not args.verbose
    assert parser.parse_args(["run", "-v", "--data", "d", "--out", "o"]).verbose
    assert not parser.parse_args(["run", "--data", "d", "--out", "o"]).quiet
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "-q", "-v", "--data", "d", "--out", "o"])
    done = subprocess.run([sys.executable, "-m", "stethoscope.flows.cli", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"stethoscope {stethoscope.__version__}"


def test_serve_refuses_to_start_outside_a_project(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "stethoscope.flows.cli", "serve"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_USAGE
    assert "has no prefect.yaml" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no cohorts/, runs/ or .prefect/ written


def test_the_python_api_refuses_bad_input_before_starting(tmp_path: Path):
    with pytest.raises(UsageError, match="does not exist"):
        stethoscope.run(tmp_path / "nowhere", tmp_path / "runs" / "r")
    with pytest.raises(UsageError, match="no such file"):
        stethoscope.analyze(tmp_path / "missing.parquet", tmp_path / "runs" / "a")


@pytest.mark.slow
def test_the_python_api_runs_and_analyses_end_to_end(tmp_path: Path, prefect_server):
    cohort = tmp_path / "cohort"
    simulate_cohort(SimulateConfig(users=16, weeks=1, seed=5), cohort)
    result = stethoscope.run(cohort, tmp_path / "runs" / "api-1", config=tiny_settings(128))
    assert result.run_id == "api-1" and result.status in ("pass", "warn", "fail")
    assert result.summary_path.is_file() and result.report_path.is_file()
    assert result.summary().run_id == "api-1"
    assert all(f.code and f.severity and f.message for f in result.findings)

    predictions = pd.read_parquet(result.run_dir / "predictions" / "predictions.parquet")
    analysis = stethoscope.analyze(predictions, tmp_path / "runs" / "api-2",
                                   config={"num_bootstrap": 100, "num_permutations": 100})
    assert analysis.run_id == "api-2" and analysis.report_path.is_file()
    assert analysis.summary().predictions.tasks  # the table was analysed, not just accepted


@pytest.mark.slow
def test_analyze_from_the_command_line_takes_strata_and_a_config(
        tmp_path: Path, prefect_server, capsys: pytest.CaptureFixture[str]):
    from tests.unit.test_analyze_any_table import minimal_table

    frame, _ = minimal_table(num_users=120, seed=2)
    frame["site"] = np.where(frame["user_id"].str[1:].astype(int) % 2 == 0, "A", "B")
    frame["batch"] = "x" + (frame["user_id"].str[1:].astype(int) % 3).astype(str)
    table = tmp_path / "predictions.parquet"
    frame.to_parquet(table, index=False)
    config = tmp_path / "config.yaml"
    config.write_text("analyze: {num_bootstrap: 100, num_permutations: 100}\n")
    out = tmp_path / "runs" / "cli-analysis"
    code = main(["analyze", "--predictions", str(table), "--out", str(out), "--strata", "site",
                 "--config", str(config)])
    assert code in (0, 3), capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert {s["column"] for s in summary["predictions"]["strata"]} == {"site"}
    assert summary["config"]["analyze"]["num_bootstrap"] == 100

    assert main(["analyze", "--predictions", str(table), "--out", str(tmp_path / "runs" / "bad"),
                 "--strata", "site,nope"]) == EXIT_USAGE
    assert "nope" in capsys.readouterr().err


def test_prefect_state_goes_beside_the_runs_unless_prefect_home_is_set(tmp_path: Path):
    code = ("import os, sys\nfrom stethoscope.flows import cli, environment\n"
            "args = cli.build_parser().parse_args(sys.argv[1:])\n"
            "environment.set_defaults(cli._runs_dir(args))\nprint(os.environ['PREFECT_HOME'])\n")
    argv = ["run", "--data", "d", "--out", str(tmp_path / "runs" / "r1")]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"}
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.strip() == str((tmp_path / "runs" / ".prefect").resolve()), done.stderr
    mine = subprocess.run([sys.executable, "-c", code, *argv],
                          env={**env, "PREFECT_HOME": str(tmp_path / "mine")},
                          capture_output=True, text=True, timeout=60)
    assert mine.stdout.strip() == str(tmp_path / "mine")


@pytest.mark.slow
def test_audit_model_output_layer_flag_reaches_the_audit(
        tmp_path: Path, prefect_server, capsys: pytest.CaptureFixture[str]):
    import keras

    inputs = keras.Input((64, 3), name="sequence")
    steps = keras.layers.Conv1D(4, 3, padding="same", name="conv")(inputs)
    keras.Model(inputs, keras.layers.Dense(1, name="scores")(steps)).save(tmp_path / "m.keras")
    cohort = tmp_path / "cohort"
    simulate_cohort(SimulateConfig(users=4, weeks=1, seed=1), cohort)
    code = main(["audit-model", "--model", str(tmp_path / "m.keras"), "--data", str(cohort),
                 "--out", str(tmp_path / "runs" / "a"), "--output-layer", "no_such_layer"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no_such_layer" in err and "conv" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_flow_run_without_its_cohort_names_it_and_how_to_make_it(tmp_path: Path, prefect_server):
    """What a deployment's defaults (audit-on-demand: cohorts/demo) get after a plain
    `prefect deploy --all` when the cohort was never made: the message, not a traceback."""
    from stethoscope.flows.nightly_audit import nightly_audit
    from stethoscope.flows.parameters import AuditParameters

    params = AuditParameters(data_dir=str(tmp_path / "cohorts" / "demo"),
                             runs_dir=str(tmp_path / "runs"), run_id="r")
    with pytest.raises(UsageError, match=r"cohorts/demo does not exist.*stethoscope simulate"):
        nightly_audit(params)
    assert not (tmp_path / "runs" / "r").exists()


@pytest.mark.slow
def test_the_python_api_audits_a_keras_model_in_memory(tmp_path: Path, prefect_server):
    import keras

    inputs = keras.Input((64, 3), name="sequence")
    steps = keras.layers.Conv1D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="scores")(steps))
    cohort = tmp_path / "cohort"
    simulate_cohort(SimulateConfig(users=8, weeks=1, seed=2), cohort)
    result = stethoscope.audit_model(model, cohort, tmp_path / "runs" / "m1",
                                     config={"sequences": {"min_coverage": 0.3}})
    assert (result.run_dir / "input" / "model.keras").is_file()
    summary = result.summary()
    assert {"conv", "scores"} <= {layer.name for layer in summary.activations.layers}
    assert summary.gradients.output_layer == "scores"


def test_the_demo_command_simulates_as_many_users_as_the_demo_flow() -> None:
    from stethoscope.flows.demo import DEMO_USERS, demo_flow

    args = build_parser().parse_args(["demo"])
    assert args.users == DEMO_USERS == demo_flow.parameters.properties["users"]["default"]
