"""What each command of the command line does (flows/cli.py parses, then calls one of these).

Each command checks its arguments, paths and the whole `--config` first (flows/parameters.py
is light), and imports Prefect and TensorFlow only after that: a usage error answers before
anything heavy is loaded. A command returns its exit status (docs/architecture.md §5.4); bad
input raises a StethoscopeError, which `cli.main` turns into exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from stethoscope.flows import environment

if TYPE_CHECKING:
    from stethoscope.flows.parameters import RunOutcome

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_FAIL = 0, 1, 2, 3


def simulate(args: argparse.Namespace) -> int:
    from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig

    config = SimulateConfig(users=args.users, weeks=args.weeks, seed=args.seed)
    result = simulate_cohort(config, Path(args.out))
    print(f"cohort written to {args.out}: {result.num_users} users, {result.num_rows:,} rows")
    return EXIT_OK


def import_csv(args: argparse.Namespace) -> int:
    from stethoscope.tasks.cohorts.import_csv.config import ImportConfig
    from stethoscope.tasks.cohorts.import_csv.importer import import_csv_exports

    config = ImportConfig(
        timezone=args.timezone,
        device=args.device,
        age=args.age,
        sex=args.sex,
        users_csv=Path(args.users_csv) if args.users_csv else None,
    )
    result = import_csv_exports(Path(args.source), Path(args.out), config)
    print(result.describe())
    return EXIT_OK


def validate(args: argparse.Namespace) -> int:
    from stethoscope.schemas.layout import CohortPaths, RunPaths
    from stethoscope.tasks.validate.config import ValidateConfig
    from stethoscope.tasks.validate.gate import validate_cohort

    data = _cohort(args.data)
    out = _run_dir(args.out, data)
    config = ValidateConfig(
        max_quarantine_share=args.max_quarantine_share,
        great_expectations=not args.no_great_expectations,
    )
    from stethoscope.flows.run_lock import hold_run

    with hold_run(out):  # one writer per run directory, as for the flows
        result = validate_cohort(CohortPaths(data), RunPaths(out), config)
    print(result.describe())
    return EXIT_OK


def _load_config(path: str | None, cli_keys: tuple[str, ...] = ()) -> dict:
    """A run config file (YAML or JSON) with stage sections; {} without one."""
    from stethoscope.flows.config_file import read_config

    return read_config(path, cli_keys) if path else {}


def _cohort(path: str) -> Path:
    from stethoscope.flows.roots import check_cohort

    return check_cohort(path)


def _existing_file(path: str, flag: str, what: str) -> Path:
    from stethoscope.schemas.errors import UsageError

    file = Path(path)
    if not file.is_file():
        state = "is a directory" if file.is_dir() else "does not exist"
        raise UsageError(f"{flag} {path}: the {what} {state}")
    return file


def _run_dir(path: str, cohort: Path | None = None) -> Path:
    """--out: a run directory; its parent is the runs directory, its name the run id. Never
    inside `cohort` (--data): the run's clean logs would be read back as cohort data."""
    from stethoscope.schemas.errors import UsageError

    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {path}: is a file; give a directory for the run")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise UsageError(f"--out {path}: {blocked} is a file, so no directory can be made under it")
    if cohort is not None and out.resolve().is_relative_to(cohort.resolve()):
        raise UsageError(f"--out {path}: is inside the cohort directory {cohort} (--data), where "
                         "the run's output would be read back as cohort data; give a run "
                         "directory outside the cohort, e.g. runs/<run id>")
    return out


def _finish(outcome: RunOutcome) -> int:
    """Say where the run's report and summary are; exit 3 when its status is fail."""
    print(f"\nstatus: {outcome.status}\nreport:  {outcome.report.resolve()}\n"
          f"summary: {outcome.summary.resolve()}")
    return EXIT_FAIL if outcome.status == "fail" else EXIT_OK


def run(args: argparse.Namespace) -> int:
    data = _cohort(args.data)
    out = _run_dir(args.out, data)
    config = _load_config(args.config, ("data_dir", "runs_dir", "run_id", *_baseline_key(args),
                                        *_execution_key(args)))
    from stethoscope.flows.parameters import AuditParameters

    params = AuditParameters.model_validate(
        {**config, "data_dir": str(data), "runs_dir": str(out.parent), "run_id": out.name,
         **_baseline(args, out), **_execution(args)})
    environment.make_prefect_home()
    from stethoscope.flows.nightly_audit import nightly_audit

    return _finish(nightly_audit(params))


def demo(args: argparse.Namespace) -> int:
    environment.make_prefect_home()
    from stethoscope.flows.demo import run_demo

    return _finish(run_demo(Path(args.dir), users=args.users, weeks=args.weeks, seed=args.seed))


def _predictions_table(path: str) -> Path:
    """--predictions: a readable Parquet file with rows (checked from its footer only)."""
    file = _existing_file(path, "--predictions", "predictions table")
    from stethoscope.tasks.analyze.inputs import check_predictions_file

    check_predictions_file(file, label=f"--predictions {path}")
    return file


def analyze(args: argparse.Namespace) -> int:
    predictions = _predictions_table(args.predictions)
    out = _run_dir(args.out)
    data = _cohort(args.data) if args.data else None
    settings = _load_config(args.config, _baseline_key(args))
    strata = [c.strip() for c in args.strata.split(",")] if args.strata is not None else None
    from stethoscope.tasks.analyze.config import AnalyzeConfig
    from stethoscope.tasks.gate.config import GateConfig

    config = AnalyzeConfig.model_validate(settings.get("analyze", {}))
    gate = GateConfig.model_validate(settings.get("gate", {}))
    baseline = _baseline(args, out).get("baseline") or settings.get("baseline")
    if strata is not None:
        config = config.with_strata([c for c in strata if c])
    environment.make_prefect_home()
    from stethoscope.flows.analyze_predictions import analyze_flow

    return _finish(analyze_flow(predictions, out, config, data_dir=data, gate=gate,
                                baseline=Path(baseline) if baseline else None))


def _execution_key(args: argparse.Namespace) -> tuple[str, ...]:
    """`execution` is a key --config may not set when --executor / --workers / --dask-address do."""
    return ("execution",) if _execution_flags(args) else ()


def _execution_flags(args: argparse.Namespace) -> dict[str, object]:
    flags = {"executor": getattr(args, "executor", None), "workers": getattr(args, "workers", None),
             "dask_address": getattr(args, "dask_address", None)}
    return {key: value for key, value in flags.items() if value is not None}


def _execution(args: argparse.Namespace) -> dict[str, object]:
    """--executor dask [--workers N] [--dask-address tcp://HOST:PORT] as the `execution` section
    (an address alone means dask)."""
    flags = _execution_flags(args)
    if not flags:
        return {}
    if "dask_address" in flags or "workers" in flags:
        flags.setdefault("executor", "dask")
    return {"execution": flags}


def _baseline_key(args: argparse.Namespace) -> tuple[str, ...]:
    """`baseline` is a key --config may not set when --baseline does."""
    return ("baseline",) if getattr(args, "baseline", None) else ()


def _baseline(args: argparse.Namespace, out: Path) -> dict[str, str]:
    """--baseline RUN_DIR: a finished run (its summary.json) other than the run being written."""
    from stethoscope.schemas.errors import UsageError

    if not getattr(args, "baseline", None):
        return {}
    baseline = Path(args.baseline)
    if not (baseline / "summary.json").is_file():
        raise UsageError(f"--baseline {args.baseline}: no summary.json there; give the "
                         "directory of a finished stethoscope run")
    if baseline.resolve() == out.resolve():
        raise UsageError(f"--baseline {args.baseline}: is the run being written (--out); give "
                         "an earlier run")
    return {"baseline": str(baseline)}


def compare(args: argparse.Namespace) -> int:
    data = _cohort(args.data)
    out = _run_dir(args.out, data)
    spec = _load_config(args.variants)
    from stethoscope.flows.parameters import CompareParameters
    from stethoscope.schemas.errors import UsageError

    unknown = sorted(set(spec) - {"base", "variants", "comparison", "execution"})
    variants = spec.get("variants")
    if unknown or not isinstance(variants, dict):
        raise UsageError(f"--variants {args.variants}: expected `base:` (config sections), "
                         "`variants:` (a mapping of name to the sections it overrides) and "
                         f"optionally `comparison:`{'; unknown: ' + ', '.join(unknown) if unknown else ''}")
    params = CompareParameters.model_validate({
        "data_dir": str(data), "out_dir": str(out), "base": spec.get("base") or {},
        "variants": [{"name": str(name), "overrides": overrides or {}}
                     for name, overrides in variants.items()],
        "seeds": args.seeds, "comparison": spec.get("comparison") or {},
        "execution": spec.get("execution") or {}, **_execution(args)})
    environment.make_prefect_home()
    from stethoscope.flows.compare_architectures import compare_architectures

    outcome = compare_architectures(params)
    print(f"\ncomparison: {outcome.comparison_html.resolve()}\n"
          f"json:       {outcome.comparison_json.resolve()}")
    for run_id, status in outcome.statuses.items():
        print(f"  {run_id}: {status}")
    return EXIT_OK


def bless(args: argparse.Namespace) -> int:
    from stethoscope.tasks.gate.reference import bless

    summary, path = bless(Path(args.run_dir))
    print(f"blessed {summary.run_id} ({summary.flow}, {summary.status}) as the reference of "
          f"{summary.flow} runs in {Path(args.run_dir).parent} (recorded in {path})")
    return EXIT_OK


def audit_model(args: argparse.Namespace) -> int:
    model = _existing_file(args.model, "--model", "model file")
    data = _cohort(args.data)
    out = _run_dir(args.out, data)
    config = _load_config(args.config, ("model_file", "data_dir", "runs_dir", "run_id",
                                        *_baseline_key(args), *_execution_key(args)))
    overrides = {key: value for key, value in (("output_layer", args.output_layer),
                                               ("task_index", args.output_index))
                 if value is not None}
    if overrides:
        config["gradients"] = {**config.get("gradients", {}), **overrides}
    from stethoscope.flows.parameters import AuditModelParameters

    params = AuditModelParameters.model_validate(
        {**config, "model_file": str(model), "data_dir": str(data), "runs_dir": str(out.parent),
         "run_id": out.name, **_baseline(args, out), **_execution(args)})
    environment.make_prefect_home()
    from stethoscope.flows.audit_model import audit_model_flow

    return _finish(audit_model_flow(params))


def serve(args: argparse.Namespace) -> int:
    from stethoscope.flows.serve import ServeOptions, serve

    return serve(ServeOptions(port=args.port, demo_cohort=not args.no_demo_cohort,
                              alert_webhook=args.alert_webhook, host=args.host,
                              database_url=args.database_url, worker=not args.no_worker))
