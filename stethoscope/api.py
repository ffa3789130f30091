"""The Python API: the three audits a script or a notebook runs, with the same flows, checks and
outputs as the command line.

    import stethoscope
    result = stethoscope.run("cohorts/demo", "runs/try-1")
    result.status          # "pass" | "warn" | "fail"
    [f.code for f in result.findings]
    result.report_path     # report.html

Each call runs a Prefect flow (on Prefect's embedded server when PREFECT_API_URL is unset, with
telemetry off and bound to 127.0.0.1) and returns an `AuditResult`. Bad input raises the
project's typed errors (stethoscope.schemas.errors: UsageError, DataContractError), before
anything heavy starts wherever the problem is knowable up front.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stethoscope.flows import environment

if TYPE_CHECKING:
    import keras
    import pandas as pd

    from stethoscope.flows.parameters import RunOutcome
    from stethoscope.schemas.summary import Finding, Summary

ConfigLike = Mapping[str, Any] | str | Path | None


@dataclass(frozen=True)
class AuditResult:
    """What a run found, and where its files are."""

    run_id: str
    status: Literal["pass", "warn", "fail"]
    findings: tuple[Finding, ...]  # each with .code, .severity, .message, .recommendation
    summary_path: Path
    report_path: Path

    @property
    def run_dir(self) -> Path:
        return self.summary_path.parent

    def summary(self) -> Summary:
        """The whole summary.json, as its pydantic model."""
        from stethoscope.schemas.summary import Summary

        return Summary.model_validate_json(self.summary_path.read_text())


def run(data_dir: str | Path, out_dir: str | Path, config: ConfigLike = None) -> AuditResult:
    """The whole nightly audit of the cohort in `data_dir`, into the run directory `out_dir`
    (its name is the run id). `config`: stage sections as a mapping, or a YAML/JSON file."""
    from stethoscope.flows.parameters import AuditParameters

    data, out = _cohort(data_dir), _run_dir(out_dir)
    params = AuditParameters.model_validate({**_config(config), "data_dir": str(data),
                                             "runs_dir": str(out.parent), "run_id": out.name})
    _prepare(out)
    from stethoscope.flows.nightly_audit import nightly_audit

    return _result(nightly_audit(params))


def audit_model(model: keras.Model | str | Path, data_dir: str | Path, out_dir: str | Path,
                config: ConfigLike = None) -> AuditResult:
    """The activation and gradient audits of an existing model (a .keras file, or a Keras model
    in memory, which is saved into the run directory first) on the cohort in `data_dir`."""
    data, out = _cohort(data_dir), _run_dir(out_dir)
    settings = _config(config)
    _prepare(out)
    from stethoscope.flows.audit_model import audit_model_flow
    from stethoscope.flows.parameters import AuditModelParameters

    model_file = _model_file(model, out)
    params = AuditModelParameters.model_validate(
        {**settings, "model_file": str(model_file), "data_dir": str(data),
         "runs_dir": str(out.parent), "run_id": out.name})
    return _result(audit_model_flow(params))


def analyze(predictions: pd.DataFrame | str | Path, out_dir: str | Path,
            strata: list[str] | None = None, config: ConfigLike = None,
            data_dir: str | Path | None = None,
            baseline: str | Path | None = None) -> AuditResult:
    """The prediction analysis of a table with at least user_id, task, y_true, y_score (a
    DataFrame, saved into the run directory first, or a Parquet file). `strata`: the columns to
    stratify by (default: chosen from the table). `config`: the `analyze` section, as a mapping
    or a YAML/JSON file with an `analyze:` key (and optionally `gate:`). `data_dir`: a cohort to
    draw the weeks of the top wins and losses from. `baseline`: the run directory to compare
    with (default: the blessed run, else the last good analyze run beside `out_dir`)."""
    out = _run_dir(out_dir)
    data = _cohort(data_dir) if data_dir is not None else None
    settings = _config(config)
    from stethoscope.tasks.analyze.config import AnalyzeConfig
    from stethoscope.tasks.gate.config import GateConfig

    sectioned = "analyze" in settings or "gate" in settings
    analyze_config = AnalyzeConfig.model_validate(settings.get("analyze", {}) if sectioned
                                                  else settings)
    gate = GateConfig.model_validate(settings.get("gate", {}) if sectioned else {})
    _prepare(out)
    from stethoscope.flows.analyze_predictions import analyze_flow

    return _result(analyze_flow(_predictions_file(predictions, out), out, analyze_config,
                                strata=strata, data_dir=data, gate=gate,
                                baseline=Path(baseline) if baseline is not None else None))


# --- private helpers ---------------------------------------------------------------------


def _prepare(out: Path) -> None:
    """Telemetry off, servers on loopback, our loggers to the UI, Prefect's state beside the
    runs (unless PREFECT_HOME is set); the embedded server quiet."""
    environment.set_defaults(out.parent)
    environment.make_prefect_home()
    logging.getLogger("prefect.server").setLevel(logging.WARNING)


def _cohort(path: str | Path) -> Path:
    from stethoscope.flows.roots import check_cohort

    return check_cohort(path)


def _run_dir(path: str | Path) -> Path:
    from stethoscope.schemas.errors import UsageError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"out_dir {out}: is a file; give a directory for the run")
    if not out.name or out.name in (".", ".."):
        raise UsageError(f"out_dir {out}: name the run directory itself (its name is the run id)")
    return out


def _config(config: ConfigLike) -> dict[str, Any]:
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    from stethoscope.flows.config_file import read_config

    return read_config(config, label="config")


def _model_file(model: keras.Model | str | Path, out: Path) -> Path:
    from stethoscope.schemas.errors import UsageError

    if isinstance(model, str | Path):
        if not Path(model).is_file():
            raise UsageError(f"model {model}: no such file (a .keras file saved by Keras 3)")
        return Path(model)
    path = out / "input" / "model.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def _predictions_file(predictions: pd.DataFrame | str | Path, out: Path) -> Path:
    from stethoscope.schemas.errors import UsageError

    if isinstance(predictions, str | Path):
        if not Path(predictions).is_file():
            raise UsageError(f"predictions {predictions}: no such file (a Parquet table)")
        return Path(predictions)
    import pyarrow as pa

    from stethoscope.schemas.atomic import write_parquet_atomic

    return write_parquet_atomic(pa.Table.from_pandas(predictions, preserve_index=False),
                                out / "input" / "predictions.parquet")


def _result(outcome: RunOutcome) -> AuditResult:
    from stethoscope.schemas.summary import Summary

    summary = Summary.model_validate_json(Path(outcome.summary).read_text())
    return AuditResult(run_id=outcome.run_id, status=summary.status,
                       findings=tuple(summary.findings), summary_path=Path(outcome.summary),
                       report_path=Path(outcome.report))
