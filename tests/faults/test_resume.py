"""Runs that can always be resumed (issue #17): one writer per run id, a staging directory per
attempt, and a cached stage trusted only while the files it wrote are intact."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stethoscope.flows.cli import EXIT_USAGE, main
from stethoscope.flows.run_lock import hold_run, lock_file
from stethoscope.schemas import atomic
from stethoscope.schemas.atomic import staging_dir, write_json_atomic
from stethoscope.schemas.errors import UsageError
from stethoscope.schemas.layout import CohortPaths, RunPaths
from stethoscope.tasks.validate import gate
from stethoscope.tasks.validate.gate import validate_cohort

from .conftest import VALIDATE, files_of, front_stages

HOLDER = """
import sys, time
from pathlib import Path
from stethoscope.flows.run_lock import hold_run
with hold_run(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held_elsewhere(tmp_path: Path):
    """Another process holding the lock of `tmp_path/runs/r1`: (run dir, its pid)."""
    run = tmp_path / "runs" / "r1"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    yield run, holder.pid
    holder.kill()
    holder.wait()


# --- one run at a time per run id ------------------------------------------------------------


def test_a_locked_run_directory_names_its_holder(held_elsewhere):
    run, pid = held_elsewhere
    with pytest.raises(UsageError) as refused, hold_run(run):
        pass
    assert str(run) in str(refused.value) and f"pid {pid}" in str(refused.value)


def test_the_lock_of_a_killed_run_is_released_and_the_run_resumes(held_elsewhere):
    run, pid = held_elsewhere
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    with hold_run(run), hold_run(run):  # re-entrant within one process (a flow in a flow)
        assert f"pid {os.getpid()}" in lock_file(run).read_text()
    with hold_run(run):  # and released at the end
        pass


def test_a_second_concurrent_run_on_the_same_run_id_exits_2(held_elsewhere, tiny_cohort, capsys,
                                                             prefect_server):
    run, pid = held_elsewhere
    started = time.monotonic()
    code = main(["run", "--data", str(tiny_cohort), "--out", str(run)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err
    assert f"run directory {run} is being written by another run (pid {pid}" in err
    assert not run.exists()  # nothing written by the refused run
    assert time.monotonic() - started < 60


def test_validate_alone_takes_the_same_lock(held_elsewhere, tiny_cohort, capsys):
    """`stethoscope validate` runs no flow, but writes a run directory all the same."""
    run, pid = held_elsewhere
    code = main(["validate", "--data", str(tiny_cohort), "--out", str(run),
                 "--no-great-expectations"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and f"is being written by another run (pid {pid}" in err
    assert not run.exists()


# --- a staging directory per attempt ----------------------------------------------------------


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_each_attempt_stages_apart_and_stale_staging_is_removed(tmp_path: Path):
    target = tmp_path / "runs" / "r1"
    stale = tmp_path / "runs" / f".r1.validate-partial-{_dead_pid()}-abc"
    live = tmp_path / "runs" / f".r1.validate-partial-{os.getpid()}-old"
    stale.mkdir(parents=True)
    live.mkdir()
    first, second = staging_dir(target, "validate"), staging_dir(target, "validate")
    assert first != second and first.is_dir() and second.is_dir()
    assert not stale.exists()  # its process is gone
    assert live.exists()  # an attempt of a live process (a timed-out thread) is left alone
    assert first.name.startswith(f".r1.validate-partial-{os.getpid()}-")


def test_temporary_files_of_a_killed_writer_go_with_the_next_write(tmp_path: Path):
    """A process killed inside an atomic write leaves its hidden sibling; the next process to
    write into that directory removes it. A live writer's and another host's are left alone."""
    out = tmp_path / "audits" / "synthetic"
    out.mkdir(parents=True)
    host = atomic._HOST
    dead = out / f".learnability.png.~{host}-{_dead_pid()}-k2j4x9_a.tmp"
    live = out / f".learnability.png.~{host}-{os.getpid()}-abcdefgh.tmp"
    elsewhere = out / f".plot.png.~{host}x-{_dead_pid()}-abcdefgh.tmp"
    for path in (dead, live, elsewhere):
        path.write_bytes(b"half a file")
    atomic._SWEPT.discard(os.path.abspath(out))  # as in a new process
    write_json_atomic({"ok": True}, out / "learnability.json")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["learnability.json", live.name, elsewhere.name])


def test_a_failed_validation_attempt_leaves_no_staging(tiny_cohort, tmp_path, monkeypatch):
    def broken_disk(*args, **kwargs):
        raise OSError(5, "Input/output error", "report.json")

    monkeypatch.setattr(gate, "write_json_atomic", broken_disk)
    with pytest.raises(OSError):
        validate_cohort(CohortPaths(tiny_cohort), RunPaths(tmp_path / "runs" / "r1"), VALIDATE)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == []


# --- a cached stage is trusted only while its outputs are intact ------------------------------


def _mtimes(run: Path) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_a_cached_stage_whose_output_was_truncated_recomputes(tiny_cohort, tmp_path, prefect_server):
    run = tmp_path / "runs" / "r1"
    front_stages(tiny_cohort, run)
    store = files_of(run, "sequences")
    before = _mtimes(run)
    front_stages(tiny_cohort, run)  # everything cached: nothing rewritten
    assert _mtimes(run) == before

    shard = sorted((run / "sequences" / "shards").glob("*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    records = front_stages(tiny_cohort, run)
    assert files_of(run, "sequences") == store  # recomputed, whole again
    after = _mtimes(run)
    assert {k: v for k, v in after.items() if not k.startswith("sequences/")} == {
        k: v for k, v in before.items() if not k.startswith("sequences/")}  # the rest cached
    assert records["sequences"].num_included > 0


def test_a_run_directory_deleted_by_hand_is_rebuilt_under_the_same_id(tiny_cohort, tmp_path,
                                                                        prefect_server):
    import shutil

    run = tmp_path / "runs" / "r1"
    first = front_stages(tiny_cohort, run)
    user_weeks = pq.read_table(run / "labels" / "user_weeks.parquet")
    shutil.rmtree(run)
    again = front_stages(tiny_cohort, run)
    assert pq.read_table(run / "labels" / "user_weeks.parquet").equals(user_weeks)
    assert user_weeks.num_rows > 0
    assert again["labels"].num_user_weeks == first["labels"].num_user_weeks
    assert (run / "sequences" / "index.parquet").exists()


def test_a_changed_small_output_file_recomputes_its_stage(tiny_cohort, tmp_path, prefect_server):
    run = tmp_path / "runs" / "r1"
    front_stages(tiny_cohort, run)
    stats = run / "sequences" / "stats.json"
    original = stats.read_bytes()
    stats.write_bytes(original.replace(b"{", b"[", 1))  # same size, other content
    front_stages(tiny_cohort, run)
    assert stats.read_bytes() == original
