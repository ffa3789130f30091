"""Where a stage's partitions run: threads of this process, or the workers of a Dask cluster.

The data stages already cut their work into partitions that share no user — validation units
of files, chunks of whole users of the clean logs — and reduce the partitions' results in
order (`map_ordered`). That reduction is the same whichever executor computed them, so a
run on a cluster writes the same clean rows, user-week table and sequence tensors as a run on
one process (tests/flows/test_dask.py compares them).

A flow running on a Dask task runner (flows/execution.py) says so with `on_cluster(address)`
around the stages it calls in its own process; `map_ordered` then submits each partition to
the cluster (`distributed.Client.submit`, at most `2 x workers` in flight, so memory stays
bounded) instead of a thread, and yields the results in order. Partitions read and write
files by path: on a real cluster, data and runs must be on storage every worker sees.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import distributed

In = TypeVar("In")
Out = TypeVar("Out")

_ADDRESS: ContextVar[str | None] = ContextVar("stethoscope_dask_address", default=None)
_DONE = object()


@contextmanager
def on_cluster(address: str | None) -> Iterator[None]:
    """Partitions mapped inside this block go to the Dask scheduler at `address` (None: to
    threads, as outside any block). The client made for it is closed at the end."""
    token = _ADDRESS.set(address)
    try:
        yield
    finally:
        _ADDRESS.reset(token)
        client = _CLIENTS.pop(address, None) if address else None
        if client is not None:
            client.close()


def cluster_address() -> str | None:
    return _ADDRESS.get()


def map_ordered(fn: Callable[[In], Out], items: Iterable[In], workers: int) -> Iterator[Out]:
    """`map(fn, items)` in order: on the Dask cluster of `on_cluster`, else on `workers`
    threads (`items` drawn on a reader thread of its own, at most `workers` items ahead:
    reading — pyarrow releases the GIL — overlaps the computing)."""
    address = cluster_address()
    if address is not None:
        yield from _map_on_cluster(fn, items, _client(address))
        return
    if workers <= 1:
        yield from map(fn, items)
        return
    ahead: queue.Queue = queue.Queue(maxsize=workers)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="stethoscope") as pool:

        def feed() -> None:
            try:
                for item in items:
                    ahead.put(pool.submit(fn, item))
                    if stop.is_set():
                        return
                ahead.put(_DONE)
            except BaseException as exc:  # handed to the consumer, raised there
                ahead.put(exc)

        reader = threading.Thread(target=feed, name="stethoscope-reader", daemon=True)
        reader.start()
        try:
            while (got := ahead.get()) is not _DONE:
                if isinstance(got, BaseException):
                    raise got
                yield got.result()
        finally:
            stop.set()
            while reader.is_alive():  # unblock a reader waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    ahead.get(timeout=0.05)


def _map_on_cluster(fn: Callable[[In], Out], items: Iterable[In],
                    client: distributed.Client) -> Iterator[Out]:
    """Submit `fn(item)` to the cluster, at most two per worker in flight; results in order.
    A partition that raises raises here, with its own exception (a data-contract error stays
    one), and the partitions still in flight are cancelled."""
    in_flight: list[Any] = []
    limit = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    try:
        for item in items:
            in_flight.append(client.submit(fn, item, pure=False))
            if len(in_flight) >= limit:
                yield in_flight.pop(0).result()
        while in_flight:
            yield in_flight.pop(0).result()
    finally:
        if in_flight:
            client.cancel(in_flight)


_CLIENTS: dict[str, distributed.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(address: str) -> distributed.Client:
    """One client per scheduler address while its `on_cluster` block lasts (a client costs a
    connection and a few threads; the stages of a run share it)."""
    import distributed

    with _CLIENTS_LOCK:
        if address not in _CLIENTS:
            _CLIENTS[address] = distributed.Client(address, set_as_default=False)
        return _CLIENTS[address]
