"""Data Docs page views that compile their Jinja templates once per machine, not once per page.

great-expectations makes a new Jinja environment for every page it renders, so each build
parses and compiles the same templates again: about a third of a second per run, more than
validating the sample. These views are GX's own, plus Jinja's file-system bytecode cache (in
Jinja's per-user temporary directory), plugged in through the site's documented `view` option
(tasks/validate/gx.py). The output is the same HTML.
"""

from __future__ import annotations

import functools
import logging

import jinja2
from great_expectations.render.view import DefaultJinjaIndexPageView, DefaultJinjaPageView

log = logging.getLogger("stethoscope.validate")


@functools.cache
def _bytecode_cache() -> jinja2.BytecodeCache | None:
    try:
        return jinja2.FileSystemBytecodeCache()  # checks the directory is this user's alone
    except (OSError, RuntimeError) as exc:
        log.debug("no Jinja bytecode cache (%s): Data Docs templates compile every run", exc)
        return None


class CachedPageView(DefaultJinjaPageView):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = _bytecode_cache()


class CachedIndexPageView(DefaultJinjaIndexPageView):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.env.bytecode_cache = _bytecode_cache()
