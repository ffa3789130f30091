"""The layout the code relies on: one installed namespace, one package per stage with the same
doors, one registry of finding codes, and import contracts that really catch a breach."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from stethoscope.schemas.findings import REGISTRY, FindingCode

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("flows", "tasks", "model", "schemas")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# every stage package, and whether it has a Prefect task (import_csv is a CLI command only)
STAGES = {
    "validate": True, "labels": True, "sequences": True, "train": True, "inspect": True,
    "audits/synthetic": True, "audits/activations": True, "audits/gradients": True,
    "analyze": True, "gate": True, "report": True, "cohorts/simulate": True, "variants": True,
    "cohorts/import_csv": False,
}


def test_every_package_is_listed_for_installation():
    folders = {"stethoscope"} | {
        "stethoscope." + ".".join(init.parent.relative_to(ROOT).parts)
        for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == folders


def test_the_folders_install_under_the_namespace_only(tmp_path: Path):
    code = ("import importlib, stethoscope.tasks.validate.task\n"
            "for bare in ('tasks', 'flows', 'model', 'schemas'):\n"
            "    try:\n"
            "        importlib.import_module(bare)\n"
            "    except ModuleNotFoundError:\n"
            "        continue\n"
            "    raise SystemExit(f'{bare} is importable outside the repository')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_package_data_resolves_outside_the_repository(tmp_path: Path):
    """What the package reads as data (GX suites, report templates, the summary schema, its own
    source for cache keys) is found from the installed namespace, not from the bare folders
    that only resolve when the repository root is on sys.path (as under pytest)."""
    code = ("from stethoscope.tasks.validate.gx import load_suite_json\n"
            "from stethoscope.tasks.shared.policy import code_fingerprint\n"
            "from stethoscope.schemas.summary import SCHEMA_FILE\n"
            "from jinja2 import Environment, PackageLoader\n"
            "assert load_suite_json('users') and load_suite_json('sensor_logs')\n"
            "env = Environment(loader=PackageLoader('stethoscope.tasks.report', 'templates'))\n"
            "assert env.list_templates()\n"
            "assert SCHEMA_FILE.is_file() and len(code_fingerprint()) == 64\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={"PATH": "", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_the_same_doors(stage: str):
    package = ROOT / "tasks" / stage
    assert (package / "__init__.py").read_text().strip(), f"{stage}: say what the stage owns"
    assert (package / "config.py").exists()
    assert (package / "task.py").exists() == STAGES[stage]
    stage_packages = {p.parent.relative_to(ROOT / "tasks").as_posix()
                      for p in (ROOT / "tasks").rglob("config.py")}
    assert stage_packages == set(STAGES), "a new stage: add it here and to the import contracts"


def test_every_finding_code_is_registered_with_its_stage():
    assert set(REGISTRY) == set(FindingCode)
    assert all(info.stage and info.meaning for info in REGISTRY.values())
    assert all(code.value == code.name for code in FindingCode)


# --- the import contracts catch what they promise to catch ----------------------------------

def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run([str(lint_imports), "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"], cwd=tree, env={"PYTHONPATH": str(tree), "PATH": ""},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def link_tree(tmp_path: Path) -> Path:
    """The namespace as one directory of links to the real files (as `make lint` builds it);
    a test replaces one link by an edited copy."""
    (tmp_path / "stethoscope").mkdir()
    shutil.copy(ROOT / "stethoscope" / "__init__.py", tmp_path / "stethoscope")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, tmp_path / "stethoscope" / folder,
                        copy_function=lambda src, dst: Path(dst).symlink_to(src),
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(tree: Path, module: str, line: str) -> None:
    path = tree / "stethoscope" / module
    text = path.read_text()
    path.unlink()
    path.write_text(text + "\n" + line + "\n")


@pytest.mark.slow
def test_the_contracts_hold_and_catch_a_breach(link_tree: Path):
    kept = _lint_imports(link_tree)
    assert kept.returncode == 0, kept.stdout[-3000:]

    _append(link_tree, "tasks/labels/user_weeks.py",
            "from stethoscope.tasks.validate.rules import RULES  # noqa")
    _append(link_tree, "tasks/train/config.py",
            "from stethoscope.tasks.train.loop import TrainRun  # noqa")
    broken = _lint_imports(link_tree)
    assert broken.returncode != 0
    assert "stethoscope.tasks.labels is not allowed to import stethoscope.tasks.validate" \
        in broken.stdout
    assert "Stages are independent of each other; the shared layer is below them BROKEN" \
        in broken.stdout
    assert "A stage's config module imports nothing else of the stages BROKEN" in broken.stdout
    assert "No import cycles between sibling modules or packages, at any depth BROKEN" \
        in broken.stdout
