"""The `stethoscope` command line (DESIGN section 6).

Exit status: 0 ran (pass or warn), 3 ran and the status is fail, 2 bad usage or unusable input
(a clear message, nothing half-written), 1 unexpected crash. Heavy imports happen inside each
command so that `--help` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

EXIT_OK, EXIT_CRASH, EXIT_USAGE, EXIT_FAIL = 0, 1, 2, 3


def _simulate(args: argparse.Namespace) -> int:
    from tasks.simulate import SimulateConfig, simulate_cohort

    config = SimulateConfig(users=args.users, weeks=args.weeks, seed=args.seed)
    result = simulate_cohort(config, Path(args.out))
    print(f"cohort written to {args.out}: {result.num_users} users, {result.num_rows:,} rows")
    return EXIT_OK


def _import_csv(args: argparse.Namespace) -> int:
    from tasks.import_csv import ImportConfig, import_csv_exports

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
    from schemas.layout import CohortPaths, RunPaths
    from tasks.validate import ValidateConfig, validate_cohort

    config = ValidateConfig(
        max_quarantine_share=args.max_quarantine_share,
        great_expectations=not args.no_great_expectations,
    )
    result = validate_cohort(CohortPaths(Path(args.data)), RunPaths(Path(args.out)), config)
    print(result.describe())
    return EXIT_OK


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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from pydantic import ValidationError

    from schemas.errors import DataContractError, UsageError

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
