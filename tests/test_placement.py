"""Consumers of a proxied result on Dask run where there is room, not where the proxy is.

Dask sends a task to the only worker that holds its dependency (``decide_worker``);
for a proxied result, which every worker on the node reads as cheaply, StoreExecutor
hands consumers the proxy instead (``pxexec.executor.placement``). Work stealing is off
in these clusters, so the placement the tests see is the scheduler's first choice.
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.node import NodeConnector
from pxexec.engines.base import Engine
from pxexec.engines.dask import DaskEngine
from pxexec.executor.facade import StoreExecutor
from pxexec.executor.placement import Placement
from pxexec.policies import SizeAtLeast

distributed = pytest.importorskip("distributed")

MB = 1 << 20


def make(n: int, seed: int = 0) -> Any:
    return np.full(n, float(seed))


def small(seed: int) -> int:
    return seed * 10


def where(data: Any, pause: float = 0.3) -> tuple[str, float]:
    """The worker this ran on (and the sum of ``data``), after ``pause`` seconds."""
    time.sleep(pause)
    total = float(np.asarray(data).sum()) if not isinstance(data, int) else float(data)
    return distributed.get_worker().address, total


def fails(n: int) -> Any:
    raise ValueError(f"no array of {n} today")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    import dask

    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        with cluster, distributed.Client(cluster) as c:
            yield c


@pytest.fixture
def node(shm_dir: str) -> Iterator[NodeConnector]:
    connector = NodeConnector(shm_dir, namespace=uuid.uuid4().hex[:8], chunk=64 * MB)
    yield connector
    gc.collect()


@pytest.fixture
def ex(client: Any, node: NodeConnector) -> Iterator[StoreExecutor]:
    """A StoreExecutor on the Dask cluster and a node store that must end up empty."""
    with Store(f"place-{uuid.uuid4().hex[:6]}", node) as store, \
            StoreExecutor(client, store, SizeAtLeast(MB), close_engine=False) as executor:
        yield executor
        executor.flush()
    assert _left(node) == 0


def _left(connector: NodeConnector) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gc.collect()
        if connector.stats()["objects"] == 0:
            return 0
        time.sleep(0.05)
    return int(connector.stats()["objects"])


def _assert_spread(ex: StoreExecutor, made: Any, seed: int) -> None:
    """Four consumers of ``made`` read it whole and run on both workers."""
    placed = [f.result() for f in [ex.submit(where, made) for _ in range(4)]]
    assert {total for _, total in placed} == {seed * MB}
    assert len({worker for worker, _ in placed}) == 2, placed


def test_consumers_of_a_done_proxied_result_spread_over_the_workers(ex: StoreExecutor) -> None:
    made = ex.submit(make, MB, 2)
    made.result()  # done before the consumers are submitted
    _assert_spread(ex, made, 2)
    del made


def test_consumers_submitted_before_the_result_is_there_spread_too(ex: StoreExecutor) -> None:
    ex.submit(make, MB, 0).result()  # the executor learns: make returns a proxy
    for seed in (3, 4):
        made = ex.submit(make, MB, seed)  # not done yet: the consumers wait for it here
        _assert_spread(ex, made, seed)
        del made


def scaled(data: Any, factor: float) -> Any:
    return np.asarray(data) * factor


def test_a_warm_up_on_small_inputs_does_not_hold_back_a_run_on_large_ones(
        ex: StoreExecutor) -> None:
    # the warm-up teaches: scaled on inputs that are not stored returns no proxy,
    # whether they come by value or as a small result of another task
    ex.submit(scaled, np.ones(10), 2.0).result()
    ex.submit(scaled, ex.submit(make, 10, 1), 2.0).result()
    big = ex.submit(make, MB, 1)
    big.result()  # stored: scaled below reads a stored object
    for seed in (2, 3):
        made = ex.submit(scaled, big, float(seed))  # not done when its consumers come
        _assert_spread(ex, made, seed)
        del made
    del big


def test_a_result_that_is_not_a_proxy_still_reaches_its_consumers(ex: StoreExecutor) -> None:
    ex.submit(make, MB, 1).result()  # learned: a proxy
    # the same function now returns a small array, which is not proxied
    tiny = ex.submit(make, 10, 5)
    assert ex.submit(where, tiny, 0.0).result()[1] == 50.0
    assert ex.submit(where, ex.submit(small, 7), 0.0).result()[1] == 70.0
    del tiny


def test_a_failed_upstream_fails_its_waiting_consumers(ex: StoreExecutor) -> None:
    ex.submit(make, MB).result()
    consumer = ex.submit(where, ex.submit(fails, MB), 0.0)
    with pytest.raises(ValueError, match="no array"):
        consumer.result(timeout=30)


def test_a_pipeline_leaves_nothing_stored_with_the_scheduler_in_this_process(
        ex: StoreExecutor, node: NodeConnector) -> None:
    # A LocalCluster's scheduler runs here and keeps recent messages; a proxy it
    # unpickled beside its owner would keep that owner (and the object) alive.
    for seed in range(3):
        made = ex.submit(make, MB, seed)
        parts = [ex.submit(where, made, 0.0) for _ in range(4)]
        assert [p.result()[1] for p in parts] == [seed * MB] * 4
        del made, parts
    ex.flush()
    assert _left(node) == 0  # while the scheduler that saw the proxies still runs


def test_placement_is_off_where_reads_on_another_node_move_the_data(shm_dir: str) -> None:
    located = NodeConnector(shm_dir, namespace="located", transfer=True)
    local = NodeConnector(shm_dir, namespace="one-node")
    dask_like = DaskEngine.__new__(DaskEngine)  # only its class flags are read
    assert Placement(dask_like, local).active
    assert not Placement(dask_like, located).active  # running beside the data saves a pull
    assert not Placement(Engine(None), LocalConnector()).active  # engines that place freely


def test_a_borrowed_argument_is_freed_when_its_owner_goes_with_the_scheduler_here(
        ex: StoreExecutor, node: NodeConnector) -> None:
    from pxexec.store.ownership import borrow

    owner = ex.store.owned_proxy(np.ones(MB))
    assert ex.submit(where, borrow(owner), 0.0).result()[1] == MB
    ex.flush()
    del owner  # the scheduler (in this process) saw only sealed bytes: nothing keeps it
    assert _left(node) == 0


def slow_make(n: int, seed: int = 0) -> Any:
    time.sleep(0.5)
    return np.full(n, float(seed))


def test_a_waiting_consumer_cancelled_before_its_upstream_is_done_never_runs(
        ex: StoreExecutor) -> None:
    ex.submit(slow_make, MB).result()  # learned: slow_make returns a proxy
    made = ex.submit(slow_make, MB, 1)
    consumer = ex.submit(where, made, 0.0)  # waits on the client for made
    assert consumer.engine_future is None and consumer.cancel()
    assert made.result() is not None
    assert consumer.cancelled() and consumer.engine_future is None  # never submitted
    other = ex.submit(where, made, 0.0)  # made is done now: the proxy goes at once
    assert other.result()[1] == MB
    del made
