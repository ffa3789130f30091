"""The `stethoscope` command line (docs/architecture.md §1.3, §5.4).

Exit status: 0 ran (pass or warn), 3 ran and the status is fail, 2 bad usage or unusable input
(a clear message, nothing half-written), 1 unexpected crash. Heavy imports happen inside each
command so that `--help` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_FAIL = 0, 1, 2, 3


def _simulate(args: argparse.Namespace) -> int:
    from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
    from stethoscope.tasks.cohorts.simulate.config import SimulateConfig

    config = SimulateConfig(users=args.users, weeks=args.weeks, seed=args.seed)
    result = simulate_cohort(config, Path(args.out))
    print(f"cohort written to {args.out}: {result.num_users} users, {result.num_rows:,} rows")
    return EXIT_OK


def _import_csv(args: argparse.Namespace) -> int:
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


def _validate(args: argparse.Namespace) -> int:
    from stethoscope.schemas.layout import CohortPaths, RunPaths
    from stethoscope.tasks.validate.config import ValidateConfig
    from stethoscope.tasks.validate.gate import validate_cohort

    config = ValidateConfig(
        max_quarantine_share=args.max_quarantine_share,
        great_expectations=not args.no_great_expectations,
    )
    result = validate_cohort(CohortPaths(Path(args.data)), RunPaths(Path(args.out)), config)
    print(result.describe())
    return EXIT_OK


class _ThreadTimeoutNotice(logging.Filter):
    """Prefect warns, for every task with a timeout run in a worker thread, that the timeout
    cannot interrupt blocking calls. Known and accepted (the timeout still fails the task once
    the call returns): say it once in the docs, not once per task per night."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread" not in record.getMessage()


def _load_config(path: str | None) -> dict:
    """A run config file (YAML or JSON) with any of AuditParameters' stage sections."""
    if not path:
        return {}
    import yaml

    from stethoscope.schemas.errors import UsageError

    file = Path(path)
    if not file.exists():
        raise UsageError(f"--config {path}: no such file")
    data = yaml.safe_load(file.read_text()) or {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of stage sections, found {type(data).__name__}")
    return data


def _finish(outcome) -> int:
    """Say where the run's report and summary are; exit 3 when its status is fail."""
    print(f"\nstatus: {outcome.status}\nreport:  {outcome.report.resolve()}\n"
          f"summary: {outcome.summary.resolve()}")
    return EXIT_FAIL if outcome.status == "fail" else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from stethoscope.flows.nightly_audit import AuditParameters, nightly_audit

    out = Path(args.out)
    params = AuditParameters.model_validate(
        {**_load_config(args.config), "data_dir": str(args.data), "runs_dir": str(out.parent),
         "run_id": out.name})
    return _finish(nightly_audit(params))


def _demo(args: argparse.Namespace) -> int:
    from stethoscope.flows.demo import run_demo

    return _finish(run_demo(Path(args.dir), users=args.users, weeks=args.weeks, seed=args.seed))


def _analyze(args: argparse.Namespace) -> int:
    from stethoscope.flows.analyze_predictions import analyze_flow

    return _finish(analyze_flow(Path(args.predictions), Path(args.out)))


def _audit_model(args: argparse.Namespace) -> int:
    from stethoscope.flows.audit_model import AuditModelParameters, audit_model_flow

    out = Path(args.out)
    params = AuditModelParameters.model_validate(
        {**_load_config(args.config), "model_file": str(args.model), "data_dir": str(args.data),
         "runs_dir": str(out.parent), "run_id": out.name})
    return _finish(audit_model_flow(params))


def _serve(args: argparse.Namespace) -> int:
    from stethoscope.flows.serve import ServeOptions, serve

    return serve(ServeOptions(port=args.port, demo_cohort=not args.no_demo_cohort,
                              alert_webhook=args.alert_webhook))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stethoscope",
        description="Nightly audits of deep networks trained on wearable heart-rate and step data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("simulate", help="write a synthetic cohort", description=(
        "Write a realistic synthetic cohort (sensor_logs/, users.parquet, labels.parquet) with "
        "planted condition and device effects. Deterministic for a seed."))
    p.add_argument("--users", type=int, default=50, help="number of users (default 50)")
    p.add_argument("--weeks", type=int, default=2, help="weeks per user (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="cohort directory to create")
    p.set_defaults(func=_simulate)

    p = sub.add_parser("import-csv", help="vendor CSV exports -> cohort", description=(
        "Turn vendor CSV exports (one heart-rate and one steps file per user, naive local "
        "times, zipped or not) into a cohort directory."))
    p.add_argument("--source", required=True, help="folder of <USER>_hr.csv[.zip] and <USER>_steps.csv[.zip]")
    p.add_argument("--out", required=True, help="cohort directory to create")
    p.add_argument("--timezone", default=None, help="IANA timezone of the wall-clock times (default: from --users-csv, else UTC)")
    p.add_argument("--device", default=None, help="device catalog key (default: from --users-csv, else fitbit_charge_4)")
    p.add_argument("--age", type=float, default=None, help="age in years for every user (default: from --users-csv, else unknown)")
    p.add_argument("--sex", choices=["F", "M", "U"], default=None, help="sex for every user (default: from --users-csv, else U)")
    p.add_argument("--users-csv", default=None, help="CSV with user_id and any of timezone, device, age, sex")
    p.set_defaults(func=_import_csv)

    p = sub.add_parser("validate", help="validate a cohort's sensor logs", description=(
        "Check a cohort against its data contract: clean rows, quarantined rows with the rule "
        "they broke, files set aside whole, report.json and great-expectations Data Docs."))
    p.add_argument("--data", required=True, help="cohort directory")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--max-quarantine-share", type=float, default=0.05,
                   help="fail (exit 2) when more than this share of rows is quarantined (default 0.05)")
    p.add_argument("--no-great-expectations", action="store_true",
                   help="skip the great-expectations suite and Data Docs (row gate only)")
    p.set_defaults(func=_validate)

    p = sub.add_parser("run", help="the whole nightly audit", description=(
        "Validate, derive synthetic labels and sequences, train, audit activations and "
        "gradients, analyse predictions, and write summary.json + report.html. Runs as a "
        "Prefect flow (an embedded server when PREFECT_API_URL is unset). Exit 3 when the "
        "run's status is fail."))
    p.add_argument("--data", required=True, help="cohort directory")
    p.add_argument("--out", required=True, help="run directory to write (its name is the run id)")
    p.add_argument("--config", default=None, help="YAML/JSON file with stage sections "
                   "(validation, labels, sequences, model, train, activations, gradients, analyze)")
    p.set_defaults(func=_run)

    p = sub.add_parser("audit-model", help="audits of an existing model", description=(
        "Run the activation and gradient audits on a saved Keras model (safe mode) against a "
        "cohort: validate, labels and sequences of the cohort, then the audits and the report."))
    p.add_argument("--model", required=True, help="a .keras file (e.g. <run>/model/model.keras)")
    p.add_argument("--data", required=True, help="cohort directory")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--config", default=None, help="YAML/JSON file with stage sections")
    p.set_defaults(func=_audit_model)

    p = sub.add_parser("analyze", help="prediction analysis alone", description=(
        "Analyse a predictions.parquet (columns, docs/architecture.md §4.7: user_id, week_start, task, split, "
        "y_true, y_score, device, device_generation, age, sex, extra metadata) from any model."))
    p.add_argument("--predictions", required=True, help="predictions Parquet file")
    p.add_argument("--out", required=True, help="run directory to write")
    p.set_defaults(func=_analyze)

    p = sub.add_parser("demo", help="simulate a small cohort and run the nightly audit on it",
                       description="Simulate a small cohort and run the whole audit on it with "
                       "small, fast settings; prints where the report is.")
    p.add_argument("--dir", default="demo", help="where the cohort and the runs go (default ./demo)")
    p.add_argument("--users", type=int, default=200, help="simulated users (default 200)")
    p.add_argument("--weeks", type=int, default=2, help="weeks per user (default 2)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.set_defaults(func=_demo)

    p = sub.add_parser("serve", help="local Prefect server, pool, deployments, worker", description=(
        "Start a Prefect server on 127.0.0.1, create the process work pool, deploy prefect.yaml, "
        "simulate the demo cohort if missing, start a worker and print the UI address. "
        "Ctrl-C stops everything it started."))
    p.add_argument("--port", type=int, default=4200, help="server port (default 4200)")
    p.add_argument("--no-demo-cohort", action="store_true",
                   help="do not simulate cohorts/demo (the default data of audit-on-demand)")
    p.add_argument("--alert-webhook", default=None, metavar="URL",
                   help="install automations/audit-failed.yaml, notifying this webhook")
    p.set_defaults(func=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_API_HOST", "127.0.0.1")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpcore"):  # one line per API call to the embedded server
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())
    from pydantic import ValidationError

    from stethoscope.schemas.errors import DataContractError, UsageError

    try:
        return args.func(args)
    except (DataContractError, UsageError, ValidationError) as exc:
        print(f"stethoscope {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # the last resort: say it is a bug, keep the traceback
        traceback.print_exc()
        print(f"stethoscope {args.command}: unexpected error (a bug; please report it)", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
