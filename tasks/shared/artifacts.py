"""The one way a stage publishes a table to the Prefect UI: a table artifact of the running task
run, keyed so that runs of the same flow line up. Outside a Prefect run (tests, notebooks, the
Python API without a flow) nothing is published."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_\[\]()#!|~:.])")


def md_text(text: str) -> str:
    """Data text in markdown, shown literally by any renderer: HTML escaped, every markdown
    metacharacter backslash-escaped (also `:` and `.`, so no autolink forms), one line."""
    # every line break markdown knows (\r too: it would end a table row and start a block)
    one_line = " ".join(html.escape(text, quote=False).splitlines())
    return _MD_SPECIAL.sub(r"\\\1", one_line)


def publish_table(key: str, rows: Sequence[Mapping[str, Any]], description: str) -> None:
    from prefect.artifacts import create_table_artifact
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:
        return
    create_table_artifact(key=key, table=[dict(row) for row in rows], description=description)
