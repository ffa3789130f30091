"""The one way a stage publishes a table to the Prefect UI: a table artifact of the running task
run, keyed so that runs of the same flow line up. Outside a Prefect run (tests, notebooks, the
Python API without a flow) nothing is published."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:
        return
    create_table_artifact(key=key, table=[dict(row) for row in rows], description=description)
