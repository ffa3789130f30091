"""Dask as the execution engine: the same small cohort through the default executor and through
a local Dask cluster of 2 worker processes writes equal data-stage outputs (clean rows,
user-week table, sequence store); a run against a cluster started separately, by address,
works, and a partition that fails on a worker with a transient error is retried like any other
stage failure."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from stethoscope.flows.cli import main
from stethoscope.schemas.layout import RunPaths
from stethoscope.tasks.cohorts.simulate.cohort import simulate_cohort
from stethoscope.tasks.cohorts.simulate.config import SimulateConfig
from tests.flows.conftest import tiny_settings

pytestmark = pytest.mark.slow

TINY = yaml.safe_dump(tiny_settings(128))
TINY_AUDIT = """
sequences: {min_coverage: 0.3}
activations: {max_user_weeks: 8}
gradients: {max_user_weeks: 8}
"""


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, prefect_server) -> tuple[Path, Path, Path]:
    """(cohort, runs directory, the run on the default executor)."""
    root = tmp_path_factory.mktemp("dask")
    cohort = root / "cohort"
    simulate_cohort(SimulateConfig(users=16, weeks=1, seed=3), cohort)
    (root / "tiny.yaml").write_text(TINY)
    assert main(["run", "--data", str(cohort), "--out", str(root / "runs" / "local"),
                 "--config", str(root / "tiny.yaml")]) in (0, 3)
    return cohort, root / "runs", root / "runs" / "local"


def data_outputs(run_dir: Path) -> dict[str, Any]:
    """What the data stages wrote, in a comparable form."""
    run = RunPaths(run_dir)
    clean = pa.concat_tables(pq.read_table(f) for f in sorted(run.clean.glob("*.parquet")))
    store = run.sequences
    stats = json.loads((store / "stats.json").read_text())
    return {
        "clean files": sorted(f.name for f in run.clean.glob("*.parquet")),
        "clean rows": clean.sort_by([("user_id", "ascending"), ("timestamp", "ascending")]),
        "user weeks": pq.read_table(run.user_weeks),
        "index": pq.read_table(store / "index.parquet"),
        "stats": stats,
        "shards": {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
                   for f in sorted((store / "shards").iterdir())},
    }


def test_a_local_dask_cluster_writes_what_one_process_writes(local_run, prefect_server,
                                                             capsys: pytest.CaptureFixture[str]):
    cohort, runs, local = local_run
    tiny = runs.parent / "tiny.yaml"
    code = main(["run", "--data", str(cohort), "--out", str(runs / "dask"), "--config", str(tiny),
                 "--executor", "dask", "--workers", "2"])
    assert code in (0, 3)
    assert "nightly-model-audit-on-dask" in capsys.readouterr().err
    expected, got = data_outputs(local), data_outputs(runs / "dask")
    for name in expected:
        assert got[name] == expected[name], name
    summary = json.loads((runs / "dask" / "summary.json").read_text())
    assert summary["config"]["execution"]["executor"] == "dask"
    assert summary["activations"]["layers"] and summary["gradients"]["horizon_hours"] is not None


def _fail_first_partition(marker: str) -> Any:
    """A worker plugin: the first validation partition on any worker raises a transient
    OSError (EIO) once — `marker` records that it happened."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class FailOnce(WorkerPlugin):
        name = "fail-first-partition"

        def setup(self, worker: Any) -> None:
            # the partition function is shipped by value and names check_unit by its module
            from stethoscope.tasks.validate import units

            original = units.check_unit

            def flaky(*args: Any, **kwargs: Any) -> Any:
                path = Path(marker)
                try:
                    path.touch(exist_ok=False)
                except FileExistsError:
                    return original(*args, **kwargs)
                raise OSError(errno.EIO, "injected: the disk hiccuped", str(path))

            units.check_unit = flaky

    return FailOnce()


def test_a_cluster_started_apart_retries_a_partition_that_failed(local_run, tmp_path, prefect_server):
    import distributed

    cohort, runs, local = local_run
    marker = tmp_path / "failed-once"
    (tmp_path / "audit.yaml").write_text(TINY_AUDIT)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        client.register_plugin(_fail_first_partition(str(marker)))
        code = main(["audit-model", "--model", str(local / "model" / "model.keras"),
                     "--data", str(cohort), "--out", str(runs / "apart"),
                     "--config", str(tmp_path / "audit.yaml"),
                     "--dask-address", cluster.scheduler_address])
    assert code in (0, 3)
    assert marker.exists()  # the injected failure happened, on a worker, and was retried
    expected, got = data_outputs(local), data_outputs(runs / "apart")
    for name in expected:
        assert got[name] == expected[name], name
