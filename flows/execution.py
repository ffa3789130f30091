"""Where a flow's tasks run: the `execution` section of the flow parameters.

`executor: local` (the default) is the embedded, single-process path: tasks on threads of the
flow's process. `executor: dask` runs the flow on prefect-dask's `DaskTaskRunner`: a local
cluster of `workers` worker processes, or the existing cluster at `dask_address`. There the
submitted tasks (the audits, the prediction analysis, the variants' audits) run in parallel on
the workers, and the data stages, which the flow runs itself, send their partitions to the
same cluster (tasks/shared/executor.py). Data and runs must be on storage every worker sees.

Light on purpose (pydantic only at import): the command line checks a configuration before
Prefect or Dask is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

R = TypeVar("R")


class ExecutionConfig(BaseModel):
    """Where the tasks run (default: this process)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    executor: Literal["local", "dask"] = Field(
        "local", description="local: threads of this process; dask: a Dask cluster")
    workers: int = Field(2, ge=1, le=256, description="worker processes of the local Dask cluster")
    threads_per_worker: int = Field(1, ge=1, le=64, description="threads of each worker process")
    dask_address: str | None = Field(
        None, pattern=r"^(tcp|tls|ucx|inproc)://\S+$",
        description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (then `workers` is "
        "the cluster's business)")

    @model_validator(mode="after")
    def _address_means_dask(self) -> ExecutionConfig:
        if self.dask_address and self.executor != "dask":
            raise ValueError("dask_address is set but executor is local; set executor: dask")
        return self


def task_runner(config: ExecutionConfig) -> TaskRunner | None:
    """The task runner for `config`; None for the default (the flow's own)."""
    if config.executor == "local":
        return None
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs={
        "n_workers": config.workers, "threads_per_worker": config.threads_per_worker,
        "processes": True, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})


def on_dask() -> bool:
    """Whether the running flow's task runner is a Dask one."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    return type(runner).__name__ == "DaskTaskRunner"


@contextmanager
def stages_on_cluster() -> Iterator[None]:
    """The data stages the flow runs itself send their partitions to the flow's Dask cluster
    (when it runs on one) inside this block."""
    from prefect.context import FlowRunContext

    from stethoscope.tasks.shared.executor import on_cluster

    context = FlowRunContext.get()
    runner: Any = context.task_runner if context else None
    address = None
    if on_dask() and runner is not None:
        address = runner.client.scheduler.address
        _quiet_workers(runner.client)
    with on_cluster(address):
        yield


def _quiet_workers(client: Any) -> None:
    """Every worker, now and later, logs like the command line (flows/environment.py)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietWorker(WorkerPlugin):
        name = "stethoscope-logging"

        def setup(self, worker: Any) -> None:
            from stethoscope.flows.environment import configure_worker_logging

            configure_worker_logging()

    client.register_plugin(QuietWorker())


def run_on(config: ExecutionConfig, flow_fn: Any, body: Callable[..., R], *args: Any) -> R:
    """Run `body(*args)` under the task runner `config` asks for: directly when the flow
    already runs on it, else as the subflow `flow_fn` with that runner."""
    runner = task_runner(config)
    if runner is None or on_dask():
        with stages_on_cluster():
            return body(*args)
    return flow_fn.with_options(task_runner=runner)(*args)
