"""The `stethoscope` command line (docs/architecture.md §1.3, §5.4).

The parser, and `main`, which turns what a command raises into an exit status: 0 ran (pass or
warn), 3 ran and the status is fail, 2 bad usage or unusable input (a clear message, nothing
half-written), 1 unexpected crash. What each command does is in flows/commands.py.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stethoscope.flows import commands, environment
from stethoscope.flows.commands import EXIT_CRASH, EXIT_FAIL, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = ["EXIT_CRASH", "EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def _add_execution_flags(p: argparse.ArgumentParser, executor_help: str) -> None:
    """--executor, --workers, --dask-address: the `execution` section (flows/execution.py)."""
    p.add_argument("--executor", choices=["local", "dask"], default=None, help=executor_help)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the local Dask cluster (default 2; implies "
                   "--executor dask)")
    p.add_argument("--dask-address", default=None, metavar="tcp://HOST:PORT",
                   help="run on an existing Dask scheduler instead of a local cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stethoscope",
        description="Nightly audits of deep networks trained on wearable heart-rate and step data.",
    )
    parser.add_argument("--version", action="version", version=f"stethoscope {_version()}")
    _add_verbosity(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # -q / -v after the command too: `stethoscope run -q ...`
    common = argparse.ArgumentParser(add_help=False)
    _add_verbosity(common, defaults=False)

    p = sub.add_parser("simulate", parents=[common], help="write a synthetic cohort", description=(
        "Write a realistic synthetic cohort (sensor_logs/, users.parquet, labels.parquet) with "
        "planted condition and device effects. Deterministic for a seed."))
    p.add_argument("--users", type=int, default=50, help="number of users (default 50)")
    p.add_argument("--weeks", type=int, default=2, help="weeks per user (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", required=True, help="cohort directory to create")
    p.set_defaults(func=commands.simulate)

    p = sub.add_parser("import-csv", parents=[common], help="vendor CSV exports -> cohort", description=(
        "Turn vendor CSV exports (one heart-rate and one steps file per user, naive local "
        "times, zipped or not) into a cohort directory."))
    p.add_argument("--source", required=True, help="folder of <USER>_hr.csv[.zip] and <USER>_steps.csv[.zip]")
    p.add_argument("--out", required=True, help="cohort directory to create")
    p.add_argument("--timezone", default=None, help="IANA timezone of the wall-clock times (default: from --users-csv, else UTC)")
    p.add_argument("--device", default=None, help="device catalog key (default: from --users-csv, else fitbit_charge_4)")
    p.add_argument("--age", type=float, default=None, help="age in years for every user (default: from --users-csv, else unknown)")
    p.add_argument("--sex", choices=["F", "M", "U"], default=None, help="sex for every user (default: from --users-csv, else U)")
    p.add_argument("--users-csv", default=None, help="CSV with user_id and any of timezone, device, age, sex")
    p.set_defaults(func=commands.import_csv)

    p = sub.add_parser("validate", parents=[common], help="validate a cohort's sensor logs", description=(
        "Check a cohort against its data contract: clean rows, quarantined rows with the rule "
        "they broke, files set aside whole, report.json and great-expectations Data Docs."))
    p.add_argument("--data", required=True, help="cohort directory")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--max-quarantine-share", type=float, default=0.05,
                   help="fail (exit 2) when more than this share of rows is quarantined (default 0.05)")
    p.add_argument("--no-great-expectations", action="store_true",
                   help="skip the great-expectations suite and Data Docs (row gate only)")
    p.set_defaults(func=commands.validate)

    p = sub.add_parser("run", parents=[common], help="the whole nightly audit", description=(
        "Validate, derive synthetic labels and sequences, train, audit activations and "
        "gradients, analyse predictions, and write summary.json + report.html. Runs as a "
        "Prefect flow (an embedded server when PREFECT_API_URL is unset). Exit 3 when the "
        "run's status is fail."))
    p.add_argument("--data", required=True, help="cohort directory")
    p.add_argument("--out", required=True, help="run directory to write (its name is the run id)")
    p.add_argument("--config", default=None, help="YAML/JSON file with stage sections "
                   "(validation, labels, sequences, model, train, activations, gradients, analyze, gate, "
                   "execution)")
    _add_execution_flags(p, "where the tasks run: local (default: this process) or dask (a Dask cluster: the data stages' partitions and the audits on its workers)")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="the run to compare with (default: the blessed run, else the last run "
                   "of the same kind in the runs directory that did not fail)")
    p.set_defaults(func=commands.run)

    p = sub.add_parser("audit-model", parents=[common], help="audits of an existing model", description=(
        "Run the activation and gradient audits on a saved Keras model (safe mode) against a "
        "cohort: validate, labels and sequences of the cohort, then the audits and the report."))
    p.add_argument("--model", required=True, help="a .keras file (e.g. <run>/model/model.keras)")
    p.add_argument("--output-layer", default=None, metavar="NAME",
                   help="the per-step layer the gradient audit differentiates (default: found: "
                   "raw_output, else the last layer whose output keeps a time axis; nested: "
                   "outer/inner)")
    p.add_argument("--output-index", type=int, default=None, metavar="K",
                   help="which unit of that layer's output (default 0)")
    p.add_argument("--data", required=True, help="cohort directory")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--config", default=None, help="YAML/JSON file with stage sections")
    _add_execution_flags(p, "where the tasks run: local (default) or dask")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="the run to compare with (default: the blessed run, else the last run "
                   "of the same kind in the runs directory that did not fail)")
    p.set_defaults(func=commands.audit_model)

    p = sub.add_parser("analyze", parents=[common], help="prediction analysis alone", description=(
        "Analyse a predictions table from any model: user_id, task, y_true (0/1), y_score "
        "(probability); optional week_start, split, device, device_generation, age, sex and any "
        "other column (docs/architecture.md §4.7). Strata: --strata, else every extra text or "
        "integer column with 2-20 values, device_generation (from device), sex and an age band."))
    p.add_argument("--predictions", required=True, help="predictions Parquet file")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--strata", default=None, metavar="COL[,COL...]",
                   help="the columns to stratify by (default: chosen from the table; '' = none)")
    p.add_argument("--config", default=None, help="YAML/JSON file with `analyze` and `gate` sections")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR",
                   help="the run to compare with (default: the blessed run, else the last run "
                   "of the same kind in the runs directory that did not fail)")
    p.add_argument("--data", default=None, metavar="COHORT",
                   help="cohort directory to draw the weeks of the top wins and losses from")
    p.set_defaults(func=commands.analyze)

    p = sub.add_parser("compare", parents=[common], help="variants of an architecture side by side",
                       description="Run the data stages once, then train and audit every "
                       "variant of --variants (YAML: `base:` config sections, `variants:` name -> "
                       "the sections it overrides) with the same data, budget and seed; write "
                       "comparison.json and comparison.html in --out, each variant's run "
                       "directory beside them.")
    p.add_argument("--data", required=True, help="cohort directory")
    p.add_argument("--variants", required=True, metavar="FILE", help="YAML/JSON variants file")
    p.add_argument("--out", required=True, help="comparison directory to write")
    p.add_argument("--seeds", type=int, default=1, help="runs per variant (default 1; 2 or "
                   "more tell every measure's noise)")
    _add_execution_flags(p, "local (default: variants one after another) or dask (in parallel)")
    p.set_defaults(func=commands.compare)

    p = sub.add_parser("bless", parents=[common], help="make a run the reference of later runs",
                       description="Mark a finished run as the reference that later runs of the "
                       "same flow in its runs directory compare with (instead of the last good "
                       "run), until another is blessed. Refuses a failed run.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run directory to bless")
    p.set_defaults(func=commands.bless)

    p = sub.add_parser("demo", parents=[common], help="simulate a small cohort and run the nightly audit on it",
                       description="Simulate a small cohort and run the whole audit on it with "
                       "small, fast settings; prints where the report is.")
    p.add_argument("--dir", default="demo", help="where the cohort and the runs go (default ./demo)")
    p.add_argument("--users", type=int, default=300,  # flows/demo.py DEMO_USERS (not imported:
                   help="simulated users (default 300)")  # it imports Prefect)
    p.add_argument("--weeks", type=int, default=2, help="weeks per user (default 2)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.set_defaults(func=commands.demo)

    p = sub.add_parser("serve", parents=[common], help="local Prefect server, pool, deployments, worker", description=(
        "Start a Prefect server on 127.0.0.1, create the process work pool, deploy prefect.yaml, "
        "simulate the demo cohort if missing, start a worker and print the UI address. "
        "Ctrl-C stops everything it started."))
    p.add_argument("--port", type=int, default=4200, help="server port (default 4200)")
    p.add_argument("--no-demo-cohort", action="store_true",
                   help="do not simulate cohorts/demo (the default data of audit-on-demand)")
    p.add_argument("--alert-webhook", default=None, metavar="URL",
                   help="install automations/audit-failed.yaml, notifying this webhook")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="the server's database, e.g. postgresql+asyncpg://user:password@host:5432/"
                   "prefect (default: PREFECT_SERVER_DATABASE_CONNECTION_URL if set, else SQLite "
                   "in PREFECT_HOME); prefer that variable to keep the password out of the "
                   "process list; printed with the password masked")
    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS",
                   help="the server's bind address (default 127.0.0.1); 0.0.0.0 lets workers and "
                   "browsers on other machines in: the API and UI have no authentication")
    p.add_argument("--no-worker", action="store_true",
                   help="start no worker here: runs wait for workers on other machines")
    p.set_defaults(func=commands.serve)
    return parser


def _explain(exc: ValidationError, config: str | None) -> str:
    """Every bad setting on a line of its own: where (section.key), what is wrong, what was given."""
    source = f"--config {config}" if config else "the settings"
    lines = [f"{source} has {exc.error_count()} bad setting(s):"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        given = "" if error["type"] == "missing" else f" (given: {error.get('input')!r:.80})"
        lines.append(f"  {where}: {error['msg']}{given}")
    lines.append("Each section takes the fields of its stage's config (docs/architecture.md §1.3).")
    return "\n".join(lines)


def _runs_dir(args: argparse.Namespace) -> Path | None:
    """Where a command's runs go: Prefect's state is kept beside them (environment.py)."""
    if getattr(args, "out", None) and args.command in ("run", "audit-model", "analyze", "compare"):
        return Path(args.out).parent
    if args.command == "demo":
        return Path(args.dir) / "runs"
    return None


def _add_verbosity(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # Only the top-level parser sets defaults: a subparser's default would overwrite `-q run`.
    unset: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true", **unset,
                       help="warnings, errors and the result only")
    group.add_argument("-v", "--verbose", action="store_true", **unset,
                       help="debug logging of stethoscope's own loggers")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stethoscope")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    environment.set_defaults(_runs_dir(args))
    environment.configure_logging(
        "quiet" if args.quiet else "verbose" if args.verbose else "normal")
    from pydantic import ValidationError

    from stethoscope.schemas.errors import StethoscopeError, permanent_filesystem_error

    try:
        return args.func(args)
    except ValidationError as exc:
        print(f"stethoscope {args.command}: {_explain(exc, getattr(args, 'config', None))}",
              file=sys.stderr)
        return EXIT_USAGE
    except StethoscopeError as exc:
        print(f"stethoscope {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the last resort: say it is a bug, keep the traceback
        if (problem := permanent_filesystem_error(exc)) is not None:
            # a disk or a path that no retry mends is unusable input, not a bug
            print(f"stethoscope {args.command}: {problem}", file=sys.stderr)
            return EXIT_USAGE
        traceback.print_exc()
        print(f"stethoscope {args.command}: unexpected error (a bug; please report it)", file=sys.stderr)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
