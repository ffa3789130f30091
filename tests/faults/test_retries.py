"""Fault injection (issue #17): a transient OSError in the middle of validate, labels or
sequences is retried to the same outputs as an undisturbed run; a filesystem error no retry mends
(read-only disk, not a directory) is not retried and exits 2 naming the path."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from stethoscope.flows.cli import EXIT_USAGE, main
from stethoscope.tasks.labels import user_weeks
from stethoscope.tasks.sequences import build
from stethoscope.tasks.shared.policy import is_transient
from stethoscope.tasks.validate import gate

from .conftest import FailFirst, front_stages

# Where each stage is hit: after it has started writing (staging, a half-written Parquet file).
INJECTION_POINTS = {
    "validate": (gate, "write_json_atomic"),  # report.json, after clean/ is staged
    "labels": (user_weeks, "user_weeks_of_chunk"),  # inside the atomic Parquet writer
    "sequences": (build, "write_json_atomic"),  # stats.json, after the shards are written
}


def _tables(run: Path) -> dict[str, Any]:
    """Everything the three stages wrote, comparable across run directories."""
    clean = sorted((run / "validation" / "clean").rglob("*.parquet"))
    shards = sorted((run / "sequences" / "shards").glob("*.npy"))
    return {
        "clean": [pq.read_table(p) for p in clean],
        "quarantine": sorted(p.name for p in (run / "validation").rglob("quarantine/*")),
        "user_weeks": pq.read_table(run / "labels" / "user_weeks.parquet"),
        "index": pq.read_table(run / "sequences" / "index.parquet"),
        "shards": {p.name: np.load(p).tobytes() for p in shards},
        "stats": (run / "sequences" / "stats.json").read_text(),
    }


@pytest.fixture(scope="module")
def undisturbed(tiny_cohort, tmp_path_factory, prefect_server) -> dict[str, Any]:
    run = tmp_path_factory.mktemp("undisturbed") / "r"
    front_stages(tiny_cohort, run)
    return _tables(run)


@pytest.mark.parametrize("stage", sorted(INJECTION_POINTS))
def test_a_transient_error_is_retried_to_the_same_outputs(stage, undisturbed, tiny_cohort, tmp_path,
                                                         monkeypatch):
    module, name = INJECTION_POINTS[stage]
    fault = FailFirst(getattr(module, name))
    monkeypatch.setattr(module, name, fault)
    run = tmp_path / "runs" / "r"
    front_stages(tiny_cohort, run)
    assert fault.calls >= 2  # failed once, then succeeded on the retry (labels calls it from its
    # worker threads, outside the task run's context, so FailFirst.retried cannot tell)
    disturbed = _tables(run)
    assert disturbed.keys() == undisturbed.keys()
    for key in disturbed:
        if key in ("clean", "user_weeks", "index"):
            tables = disturbed[key] if isinstance(disturbed[key], list) else [disturbed[key]]
            expected = undisturbed[key] if isinstance(undisturbed[key], list) else [undisturbed[key]]
            assert [t.to_pylist() for t in tables] == [t.to_pylist() for t in expected], key
        else:
            assert disturbed[key] == undisturbed[key], key
    leftovers = [p.name for p in (tmp_path / "runs").iterdir() if p.name != "r"]
    assert leftovers == []  # the failed attempt's staging is gone
    assert not [p for p in run.rglob(".*.tmp")]  # and no half-written file


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOTDIR, errno.ENOSPC, errno.EACCES])
def test_filesystem_errors_no_retry_mends_are_not_retried(code, tiny_cohort, tmp_path, monkeypatch,
                                                         prefect_server):
    assert not is_transient(OSError(code, "x", "p")) and is_transient(OSError(errno.EIO, "x", "p"))
    fault = FailFirst(user_weeks.user_weeks_of_chunk, code=code, times=99)
    monkeypatch.setattr(user_weeks, "user_weeks_of_chunk", fault)
    with pytest.raises(OSError):
        front_stages(tiny_cohort, tmp_path / "runs" / "r")
    assert fault.calls == 1


def test_a_read_only_disk_exits_2_naming_the_path(tiny_cohort, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gate, "write_json_atomic", FailFirst(gate.write_json_atomic, errno.EROFS))
    code = main(["validate", "--data", str(tiny_cohort), "--out", str(tmp_path / "r"),
                 "--no-great-expectations"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "Traceback" not in err
    assert "stethoscope validate: /injected/path: EROFS (injected)" in err
    assert "read-only" in err


def test_a_file_where_the_run_needs_a_directory_exits_2_naming_it(tiny_cohort, tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "validation").write_text("not a directory")
    code = main(["validate", "--data", str(tiny_cohort), "--out", str(run),
                 "--no-great-expectations"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "Traceback" not in err
    assert str(run / "validation") in err and "Fix:" in err


def test_a_flow_run_on_a_read_only_disk_exits_2_without_retrying(tiny_cohort, tmp_path, capsys,
                                                                 monkeypatch, prefect_server):
    fault = FailFirst(gate.write_json_atomic, errno.EROFS, times=99)
    monkeypatch.setattr(gate, "write_json_atomic", fault)
    code = main(["run", "--data", str(tiny_cohort), "--out", str(tmp_path / "runs" / "r")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err and "/injected/path" in err
    assert fault.calls == 1
