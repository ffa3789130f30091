"""Paths that come from a deployment's run form are confined to configured roots.

Anyone who can open the Prefect UI can start a deployed run, and the worker then reads and
writes the directories named in the form. So for runs launched by a Prefect worker (the
process carries `PREFECT__FLOW_RUN_ID`), every path parameter must resolve — symlinks
followed — inside one of the roots, and may not contain a `..` segment. The roots are
`STETHOSCOPE_DATA_ROOTS` (directories separated by `os.pathsep`), by default the working
directory, which for a deployment is the project directory (prefect.yaml adds no `pull` step,
so Prefect sets the working directory to the project root): `cohorts/`, `demo/` and `runs/`
live there.

In a deployed run a relative path is also made absolute against the working directory, so that
every stage, log line and artifact names the same place. The command line is not confined:
whoever types `stethoscope run --out /tmp/x` already owns those paths. The `..` rule is also
in the JSON schema of each field (`FORM_PATH_PATTERN`), so the UI form and the API reject `..`
with a field-level message before a run is created.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath
from typing import Annotated

from pydantic import AfterValidator, Field

ROOTS_ENV = "STETHOSCOPE_DATA_ROOTS"
WORKER_RUN_ENV = "PREFECT__FLOW_RUN_ID"  # set by Prefect workers for the flow runs they launch

# No `..` path segment, anywhere. JSON-schema only: enforced by the Prefect API and UI for
# deployment parameters, while pydantic leaves command-line paths such as `../runs` alone.
FORM_PATH_PATTERN = r"^(?!(.*/)?\.\.(/.*)?$).+$"


def allowed_roots() -> list[Path]:
    """The configured roots, resolved; the working directory when none are configured."""
    configured = [p for p in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    return [Path(p).expanduser().resolve() for p in configured] or [Path.cwd().resolve()]


def confinement_in_force() -> bool:
    """True in a flow run launched by a Prefect worker, i.e. with parameters from a form/API."""
    return bool(os.environ.get(WORKER_RUN_ENV))


def confine(value: str, roots: list[Path] | None = None) -> str:
    """Return `value` unchanged if it names a path inside one of `roots`, else raise ValueError
    saying which roots are allowed and how to add one."""
    if ".." in PurePath(value).parts:
        raise ValueError(f"{value!r} contains '..'; give a path inside the allowed roots instead")
    roots = allowed_roots() if roots is None else roots
    resolved = Path(value).expanduser().resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        listed = ", ".join(str(r) for r in roots)
        raise ValueError(f"{value!r} resolves to {resolved}, outside the allowed roots ({listed}); "
                         f"use a path under one of them, or add a root to {ROOTS_ENV} "
                         "in the worker's environment")
    return value


def _confine_form_value(value: str) -> str:
    """In a deployed run: confined, and absolute (relative to the working directory)."""
    return os.path.abspath(confine(value)) if confinement_in_force() else value


FormPath = Annotated[
    str,
    AfterValidator(_confine_form_value),
    Field(min_length=1, json_schema_extra={"pattern": FORM_PATH_PATTERN}),
]
"""A path parameter of a deployed flow: relative to the project directory or inside a root."""


def check_cohort(data_dir: str | Path) -> Path:
    """`data_dir` as a path, or a UsageError saying what is missing and how to make it: the first
    thing every flow and entry point checks, so a missing cohort never surfaces as a traceback
    from deep inside a stage."""
    from stethoscope.schemas.errors import UsageError
    from stethoscope.schemas.layout import CohortPaths

    cohort = CohortPaths(Path(data_dir))
    if not cohort.root.is_dir():
        state = "is a file" if cohort.root.exists() else "does not exist"
        raise UsageError(
            f"the cohort directory {cohort.root} {state}. A cohort directory holds sensor_logs/ "
            f"and users.parquet: make a simulated one with `stethoscope simulate --out "
            f"{cohort.root}`, or point data_dir (--data) at your cohort")
    return cohort.root


def check_run_dir(run_dir: str | Path) -> Path:
    """In a deployed run, the run directory itself — `runs_dir/run_id`, a symlink followed —
    must stay inside the roots too: `runs_dir` passing is not enough when `run_id` names a
    link to elsewhere. A UsageError (exit 2) otherwise; the command line is not confined."""
    from stethoscope.schemas.errors import UsageError

    if confinement_in_force():
        try:
            confine(str(run_dir))
        except ValueError as exc:
            raise UsageError(f"run directory {run_dir}: {exc}") from None
    return Path(run_dir)
