"""Nothing freed too early, nothing leaked: after each pattern the store is empty."""

from __future__ import annotations

import gc
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from typing import Any

import pytest

from pxexec import Store, StoreExecutor
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.policies import Always, SizeAtLeast
from pxexec.proxy import Proxy
from tests import freeing_workers as fw

BIG = b"x" * 20_000


@pytest.fixture
def store(shm_dir: str) -> Any:
    with Store(f"free-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir)) as s:
        yield s


def _empty(store: Store, ex: StoreExecutor | None = None, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        if ex is not None:
            ex.flush(timeout)
        if not store.connector.keys():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def _input(result: Any) -> Any:
    if isinstance(result, dict):
        inner = result["a"]
        while not isinstance(inner, Proxy) and not isinstance(inner, bytes):
            inner = inner[0]["b"][0] if isinstance(inner, list) else inner
        return inner
    if isinstance(result, tuple):
        return result[0]
    return result.item


PATTERNS = [fw.in_dict, fw.in_tuple, fw.in_dataclass, fw.nested, fw.in_big_dict]


@pytest.mark.parametrize("pool", ["thread", "process"])
@pytest.mark.parametrize("fn", PATTERNS, ids=lambda f: f.__name__)
def test_inputs_returned_anywhere_in_the_result_stay_alive(
        store: Store, pool: str, fn: Any) -> None:
    engine = ThreadPoolExecutor(2) if pool == "thread" else ProcessPoolExecutor(1)
    with StoreExecutor(engine, store, should_proxy=SizeAtLeast(10_000)) as ex:
        result = ex.submit(fn, BIG).result()
        ex.flush()
        gc.collect()
        assert bytes(_input(result)) == BIG  # still readable: not evicted
        del result
        assert _empty(store, ex)


def test_a_moved_owner_returned_deep_inside_stays_alive(store: Store) -> None:
    with StoreExecutor(ProcessPoolExecutor(1), store, should_proxy=SizeAtLeast(10_000)) as ex:
        owner = store.owned_proxy(BIG)
        result = ex.submit(fn_nested := fw.nested, owner).result()
        ex.flush()
        assert bytes(result["a"][0]["b"][0]) == BIG
        inner = result["a"][0]["b"][0]
        del result
        gc.collect()
        assert bytes(inner) == BIG  # a piece of the result keeps its object alive
        del inner, fn_nested
        assert _empty(store, ex)


def test_small_immutable_results_are_never_proxied(store: Store) -> None:
    with StoreExecutor(ThreadPoolExecutor(1), store, should_proxy=Always()) as ex:
        assert ex.submit(fw.nothing).result() is None
        assert ex.submit(fw.constant, 1, True).result() is True
        assert ex.submit(fw.constant, 1, 7).result() == 7
        assert type(ex.submit(fw.constant, 1, 7).result()) is int
        assert ex.submit(fw.constant, None, ()).result() == ()
        assert ex.submit(fw.ident, None).result() is None  # an argument too
    assert _empty(store)


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_abandoned_map_frees_everything(store: Store, pool: str) -> None:
    engine = ThreadPoolExecutor(2) if pool == "thread" else ProcessPoolExecutor(2)
    with StoreExecutor(engine, store, should_proxy=SizeAtLeast(10_000)) as ex:
        results = ex.map(fw.slow_bytes, [0.05] * 8, [20_000] * 8)
        next(results)
        del results
        gc.collect()
        ex.shutdown(wait=True)
        assert _empty(store, ex)


def test_failed_eviction_is_counted_logged_and_retried(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import redis

    from pxexec.connectors.redis import RedisConnector

    admin = redis.Redis.from_url(redis_url)
    user = f"px13-{uuid.uuid4().hex[:6]}"
    # a real refusal by the server: this user may write but not delete, for a while
    admin.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-del",
                          "-unlink")
    host_port = redis_url.split("//", 1)[1]
    url = f"redis://{user}:pw@{host_port}"
    store = Store(f"evict-{uuid.uuid4().hex[:6]}", RedisConnector(url))
    try:
        owner = store.owned_proxy(BIG)
        key = owner.__px_factory__.key
        with caplog.at_level("WARNING", logger="pxexec"):
            del owner
            gc.collect()
        assert store.exists(key)
        assert store.metrics.failed_evictions == 1 and store.metrics.deferred_evictions == 1
        assert "could not evict" in caplog.text
        admin.execute_command("ACL", "SETUSER", user, "+del", "+unlink")
        assert store.retry_evictions()
        assert not store.exists(key) and store.metrics.deferred_evictions == 0
    finally:
        store.close()
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_update_is_never_served_stale_from_a_workers_cache(redis_url: str) -> None:
    import numpy as np

    from pxexec.connectors.redis import RedisConnector
    from pxexec.store.ownership import borrow, update

    store = Store(f"upd-{uuid.uuid4().hex[:6]}", RedisConnector(redis_url), cache_size=16)
    try:
        with StoreExecutor(ProcessPoolExecutor(1), store, should_proxy=SizeAtLeast(10)) as ex:
            owner = store.owned_proxy(np.zeros(100))
            v1 = owner.__px_factory__.key
            assert ex.submit(fw.first_value, borrow(owner)).result() == 0.0  # worker caches v1
            owner[0] = 42.0
            update(owner)
            v2 = owner.__px_factory__.key
            assert ex.submit(fw.first_value, borrow(owner)).result() == 42.0
            assert store.get(v2)[0] == 42.0 and not store.exists(v1)
            owner.free()
            ex.flush()
            assert not store.exists(v1) and not store.exists(v2)
    finally:
        store.close()


# -- Dask ------------------------------------------------------------------------------


@pytest.fixture
def dask_store(shm_dir: str) -> Any:
    with Store(f"free-dask-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir)) as s:
        yield s


def test_dropin_client_results_and_returned_inputs(dask_cluster: Any, dask_store: Store) -> None:
    from pxexec.engines.dask_client import Client

    with Client(dask_cluster, ps_store=dask_store, ps_threshold=10_000) as client:
        futures = [client.submit(fw.slow_bytes, 0.0, 20_000 + i) for i in range(5)]
        assert [len(f.result()) for f in futures] == [20_000 + i for i in range(5)]
        echoed = client.submit(fw.ident, BIG)  # a task returning its (proxied) input
        boxed = client.submit(fw.nested, BIG)
        assert bytes(echoed.result()) == BIG
        assert bytes(boxed.result()["a"][0]["b"][0]) == BIG
        kept = echoed.result()
        del futures, echoed, boxed
        assert not _empty(dask_store, timeout=1.0)  # `kept` still references its object
        assert bytes(kept) == BIG
        del kept
        assert _empty(dask_store)
        cancelled = client.submit(fw.slow_bytes, 0.5, 20_000, pure=False)
        time.sleep(0.2)
        cancelled.cancel()
        del cancelled
        time.sleep(0.6)
        assert _empty(dask_store)


def test_dropin_client_holds_leases_of_queued_inputs(dask_cluster: Any, shm_dir: str) -> None:
    from pxexec.engines.dask_client import Client
    from pxexec.store.leases import keeper, reset_keeper

    reset_keeper()
    store = Store(f"lease-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir, lease=0.5))

    with Client(dask_cluster, ps_store=store, ps_threshold=10_000) as client:
        future = client.submit(fw.size, BIG, pure=False)
        key = next(iter(keeper().held(store)))
        assert store.exists(key)
        assert future.result() == len(BIG)
        del future
    assert _empty(store)
    store.close()
    reset_keeper()  # its heartbeat lives in shm_dir, removed after the test


def test_store_executor_on_dask_cancel_and_shutdown_free_everything(
        dask_cluster: Any, dask_store: Store) -> None:
    from distributed import Client as DaskClient

    ex = StoreExecutor(DaskClient(dask_cluster), dask_store, should_proxy=SizeAtLeast(10_000))
    running = [ex.submit(fw.slow_bytes, 0.4, 20_000) for _ in range(2)]
    time.sleep(0.2)
    for f in running:
        f.cancel()
    results = ex.map(fw.slow_bytes, [0.05] * 6, [20_000] * 6)
    next(results)
    del results
    pending = [ex.submit(fw.size, BIG) for _ in range(3)]
    ex.shutdown(wait=False)
    del pending, running
    time.sleep(0.6)  # the cancelled tasks end on their workers
    assert _empty(dask_store)


def _wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.01)


def _given_up(future: Any) -> bool:
    return bool(future.cancelled() or future._finishing)


@pytest.mark.parametrize("how", ["cancel", "shutdown_cancel_futures", "shutdown_nowait"])
def test_a_cancel_that_reaches_the_worker_after_the_task_ended_frees_its_result(
        dask_cluster: Any, dask_store: Store, tmp_path: Any, how: str) -> None:
    # The bad ordering, forced: the task stored its result and ended on its worker,
    # which is held before it tells the scheduler; the client gives the future up then
    # (still pending there), and the release reaches the worker with the key in memory.
    import threading

    from distributed import Client as DaskClient

    from tests.dask_hold import HoldAtMemory

    reached, go = tmp_path / "reached", tmp_path / "go"
    with DaskClient(dask_cluster) as admin:
        admin.register_plugin(HoldAtMemory(str(reached), str(go)))
        ex = StoreExecutor(DaskClient(dask_cluster), dask_store,
                           should_proxy=SizeAtLeast(10_000))
        try:
            future = ex.submit(fw.held_result, 20_000)
            _wait_for(reached.exists, "the task's end")
            assert len(dask_store.connector.keys()) == 1  # stored; its worker is held
            assert not future.engine_future.done()
            if how == "cancel":
                act = future.cancel
            elif how == "shutdown_cancel_futures":
                def act() -> None:
                    ex.shutdown(wait=False, cancel_futures=True)
            else:
                def act() -> None:
                    ex.shutdown(wait=False)
            # a shutdown waits for the held worker (its notices): let the worker go
            # once the future is given up, no sooner
            giving_up = threading.Thread(target=act)
            giving_up.start()
            _wait_for(partial(_given_up, future), "the give-up")
            go.touch()
            giving_up.join(60)
            assert future.cancelled()
            del future
            assert _empty(dask_store), dask_store.connector.keys()
        finally:
            go.touch()
            ex.shutdown(wait=False)
            admin.unregister_worker_plugin(HoldAtMemory.name)


def test_a_received_result_survives_a_late_cancel_and_the_release(
        dask_cluster: Any, dask_store: Store) -> None:
    # What the client received stays, whatever the worker then sees: a cancel of a
    # finished future (no notice), a release from memory, the grace period.
    from distributed import Client as DaskClient

    with StoreExecutor(DaskClient(dask_cluster), dask_store,
                       should_proxy=SizeAtLeast(10_000)) as ex:
        kept = ex.submit(fw.held_result, 20_000)
        result = kept.result()
        assert not kept.cancel()
        del kept
        gc.collect()
        time.sleep(0.5)
        assert bytes(result) == b"h" * 20_000
        del result
        assert _empty(dask_store)


@pytest.mark.parametrize("make", ["writable_memoryview", "readonly_memoryview",
                                  "recursive_list", "recursive_dict"])
def test_awkward_objects_proxy_or_fail_before_storing(store: Store, make: str) -> None:
    obj: Any
    if make == "writable_memoryview":
        obj = memoryview(bytearray(b"abcdef")).cast("B", (2, 3))
    elif make == "readonly_memoryview":
        obj = memoryview(b"abcdef")
    elif make == "recursive_list":
        obj = [1]
        obj.append(obj)
    else:
        obj = {"a": 1}
        obj["self"] = obj
    p = store.proxy(obj)
    got = store.get(p.__px_factory__.key)
    if isinstance(obj, memoryview):
        assert isinstance(got, memoryview) and got.tolist() == obj.tolist()
        assert got.readonly == obj.readonly and got.format == obj.format
    elif isinstance(obj, list):
        assert got[0] == 1 and got[1] is got
    else:
        assert got["a"] == 1 and got["self"] is got
    owner = store.owned_proxy(obj)
    del p, owner
    gc.collect()
    store.evict_batch(store.connector.keys())
    assert _empty(store)


def test_a_proxy_that_cannot_be_made_leaves_nothing_stored(store: Store) -> None:
    class Unhashable:
        def __hash__(self) -> int:
            raise RuntimeError("no hash for you")

    with pytest.raises(RuntimeError):
        store.proxy(Unhashable())
    with pytest.raises(RuntimeError):
        store.owned_proxy(Unhashable())
    assert _empty(store)


def test_shutdown_without_waiting_on_a_process_pool_frees_everything(store: Store) -> None:
    ex = StoreExecutor(ProcessPoolExecutor(1), store, should_proxy=SizeAtLeast(10_000))
    futures = [ex.submit(fw.size, BIG) for _ in range(4)]
    ex.shutdown(wait=False)
    del futures
    assert _empty(store, ex)


def test_a_proxy_of_an_atomic_value_in_a_flat_result_is_found() -> None:
    # a proxy of bytes/str/a number says isinstance(p, bytes): it must still count as a
    # reference, or the task's input it returns in a tuple is freed under the caller
    from pxexec.connectors.local import LocalConnector
    from pxexec.store.reachable import proxies_in

    store = Store("atomic-refs", LocalConnector())
    for value in (bytes(2_000_000), "x" * 2_000_000, 10**100):
        proxy = store.proxy(value)
        assert proxies_in((proxy, 1.0, 2.0)) == [proxy]
        assert proxies_in([1, proxy]) == [proxy]
        assert proxies_in({"a": proxy}) == [proxy]
        assert proxies_in({proxy: 1}) == [proxy]
        store.evict(proxy.__px_factory__.key)
