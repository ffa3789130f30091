"""A run's configuration file (YAML or JSON: stage sections such as `train:` or `analyze:`),
read the same way by the command line and the Python API. Light: yaml only, so a broken file
is reported before anything heavy is imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stethoscope.schemas.errors import UsageError


def read_config(path: str | Path, cli_keys: tuple[str, ...] = (), label: str = "--config"
                ) -> dict[str, Any]:
    """The file's mapping of stage sections. A key the caller sets itself (`cli_keys`, e.g.
    data_dir) is an error rather than silently overridden; `label` names the file's origin in
    messages (`--config` on the command line, `config` in the API)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{label} {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{label} {path}: not readable as YAML or JSON ({exc}). Fix the file; "
                         "its top level maps stage names (labels, train, ...) to settings") from None
    if not isinstance(data, dict):
        raise UsageError(f"{label} {path}: expected a mapping of stage sections, found "
                         f"{type(data).__name__}")
    clashes = sorted(set(data) & set(cli_keys))
    if clashes:
        raise UsageError(f"{label} {path}: {', '.join(clashes)} come from the command line "
                         "(--data, --out); remove them from the file")
    return data
