from __future__ import annotations

import concurrent.futures as cf
import os
import time
import uuid
from typing import Any

import numpy as np
import pytest

from pxexec import Proxy, Store, StoreConnectionError, is_resolved
from pxexec.connectors.redis import RedisConnector
from pxexec.errors import PolicyError
from pxexec.executor.facade import StoreExecutor, StoreFuture, proxy_key
from pxexec.policies import Always, Never, SizeAtLeast
from tests import workers
from tests.counting import CountingConnector

N = 200_000  # 1.6 MB arrays: above the 1 MB default threshold


@pytest.fixture
def store(shm_dir: str) -> Any:
    connector = CountingConnector(shm_dir, namespace=f"ex{uuid.uuid4().hex[:6]}")
    with Store(f"ex-{uuid.uuid4().hex[:6]}", connector) as s:
        yield s


def make(engine: tuple[Any, bool], store: Store, **options: Any) -> StoreExecutor:
    executor, close = engine
    return StoreExecutor(executor, store, close_engine=close, **options)


def test_round_trip_fresh_result(engine: Any, store: Store) -> None:
    arr = np.arange(N, dtype=np.float64)
    with make(engine, store) as ex:
        future = ex.submit(workers.double, arr)
        result = future.result(timeout=60)
        assert isinstance(result, Proxy) and not is_resolved(result)
        assert isinstance(result, np.ndarray)  # answered without resolving
        assert np.array_equal(result, arr * 2)
        # the input is freed once the future completes; only the result remains
        assert ex.flush(timeout=10)
        assert store.connector.keys() == [proxy_key(result)]
        ex.free(result)
        assert store.connector.keys() == []


def test_each_input_fetched_once_on_the_worker_never_on_the_client(
    engine: Any, store: Store
) -> None:
    arr = np.ones(N)
    with make(engine, store, should_proxy=SizeAtLeast(100_000)) as ex:
        futures = [ex.submit(workers.total, arr) for _ in range(3)]
        assert [f.result(timeout=60) for f in futures] == [float(N)] * 3
    gets = store.connector.gets()
    assert len(gets) == 3 and len({key for _, key in gets}) == 3
    assert all(pid != os.getpid() for pid, _ in gets) or engine[0].__class__.__name__ in (
        "ThreadPoolExecutor", "OwnedParslPool"
    )


def test_returning_the_input_unchanged(engine: Any, store: Store) -> None:
    arr = np.arange(N, dtype=np.float64)
    with make(engine, store) as ex:
        result = ex.submit(workers.identity, arr).result(timeout=60)
        assert isinstance(result, Proxy)
        assert np.array_equal(result, arr)
        assert ex.flush(timeout=10)
        assert store.connector.keys() == [proxy_key(result)]  # kept: the task returned it
        ex.free(result)
    assert store.connector.keys() == []


def test_task_exception_reaches_caller_and_frees_inputs(engine: Any, store: Store) -> None:
    with make(engine, store) as ex:
        future = ex.submit(workers.fail, np.ones(N))
        with pytest.raises(ValueError, match="failed on purpose with ndarray"):
            future.result(timeout=60)
    assert store.connector.keys() == []


def test_futures_as_dependencies(engine: Any, store: Store) -> None:
    with make(engine, store) as ex:
        first = ex.submit(workers.make_array, N, 2.0)
        second = ex.submit(workers.total, first)
        assert second.result(timeout=60) == 2.0 * N
        third = ex.submit(workers.add, first, 1.0)
        assert float(third.result(timeout=60)[0]) == 3.0
        ex.free(first.result())
        ex.free(third.result())
    assert store.connector.keys() == []


def test_map_in_order_with_chunks(engine: Any, store: Store) -> None:
    arrays = [np.full(N, i, dtype=np.float64) for i in range(5)]
    with make(engine, store) as ex:
        assert list(ex.map(workers.total, arrays, timeout=120)) == [float(i * N) for i in range(5)]
        assert list(ex.map(workers.add, range(5), range(5), chunksize=2)) == [0, 2, 4, 6, 8]
    assert store.connector.keys() == []


def test_small_arguments_are_not_proxied(engine: Any, store: Store) -> None:
    with make(engine, store) as ex:
        kinds = ex.submit(workers.kinds, 1, b"x" * 10, big=np.ones(N)).result(timeout=60)
    assert kinds == ["int", "bytes", "ndarray*"]


def test_submit_after_shutdown(store: Store) -> None:
    ex = StoreExecutor(cf.ThreadPoolExecutor(1), store)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(workers.identity, 1)


def test_non_callable_policy(store: Store) -> None:
    with pytest.raises(TypeError, match="should_proxy must be a callable"):
        StoreExecutor(cf.ThreadPoolExecutor(1), store, should_proxy=5)  # type: ignore[arg-type]


def test_raising_policy_names_policy_and_type(store: Store) -> None:
    def picky(obj: Any) -> bool:
        raise RuntimeError("no opinion")

    with StoreExecutor(cf.ThreadPoolExecutor(1), store, should_proxy=picky) as ex:
        with pytest.raises(PolicyError) as info:
            ex.submit(workers.identity, {"a": 1})
    message = str(info.value)
    assert "picky" in message and "builtins.dict" in message and "no opinion" in message


def test_unreachable_store_on_worker_fails_with_address(dask_cluster: Any) -> None:
    import socket

    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Store("down", RedisConnector(f"redis://127.0.0.1:{port}/0", connect_timeout=1))
    proxy = down.proxy_from_key("pxexec:" + "0" * 32)
    with StoreExecutor(Client(dask_cluster), down, should_proxy=Never()) as ex:
        start = time.monotonic()
        with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}"):
            ex.submit(workers.total, proxy).result(timeout=60)
        assert time.monotonic() - start < 30


def test_map_abandoned_iterator_frees_everything(store: Store) -> None:
    arrays = [np.full(N, i, dtype=np.float64) for i in range(8)]
    with StoreExecutor(cf.ThreadPoolExecutor(2), store, should_proxy=Always()) as ex:
        it = ex.map(workers.sleepy, arrays, buffersize=3)
        first = next(it)
        assert float(first[0]) == 0.0
        it.close()
        ex.free(first)
        ex.shutdown(wait=True)
    assert store.connector.keys() == []


def test_map_timeout_frees_everything(store: Store) -> None:
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, should_proxy=SizeAtLeast(50)) as ex:
        it = ex.map(workers.sleepy, [np.ones(10)] * 3, [0.5] * 3, timeout=0.1)
        with pytest.raises(cf.TimeoutError):
            list(it)
    assert store.connector.keys() == []


def test_shutdown_cancel_futures_frees_inputs(store: Store) -> None:
    ex = StoreExecutor(cf.ThreadPoolExecutor(1), store, should_proxy=SizeAtLeast(50))
    futures = [ex.submit(workers.sleepy, np.ones(10), 0.3) for _ in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert any(f.cancelled() for f in futures)
    for f in futures:
        if not f.cancelled():
            ex.free(f.result())
    assert store.connector.keys() == []


def test_cancel_pending_future(store: Store) -> None:
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, should_proxy=SizeAtLeast(50)) as ex:
        blocker = ex.submit(workers.sleepy, 1, 0.3)
        pending = ex.submit(workers.sleepy, np.ones(10), 0.1)
        assert pending.cancel() and pending.cancelled()
        done, _ = cf.wait([pending], timeout=5)
        assert pending in done
        ex.free(blocker.result())
    assert store.connector.keys() == []


def test_stdlib_wait_and_as_completed(store: Store) -> None:
    with StoreExecutor(cf.ThreadPoolExecutor(2), store) as ex:
        futures = [ex.submit(workers.add, i, 1) for i in range(5)]
        assert isinstance(futures[0], StoreFuture) and isinstance(futures[0], cf.Future)
        assert sorted(f.result() for f in cf.as_completed(futures, timeout=10)) == [1, 2, 3, 4, 5]


def test_proxy_containers(store: Store) -> None:
    big = np.ones(N)
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, proxy_containers=True) as ex:
        kinds = ex.submit(workers.kinds, [big, 1], {"k": big}).result()
        assert kinds == ["list", "dict"]
        sizes = ex.submit(workers.sizes, [big, big]).result()
        assert sizes == [N * 8, N * 8]
    assert store.connector.keys() == []


def test_kwargs_named_like_dask_options(dask_cluster: Any, store: Store) -> None:
    from distributed import Client

    def call(key: int, workers: int) -> int:
        return key + workers

    with StoreExecutor(Client(dask_cluster), store) as ex:
        assert ex.submit(call, key=1, workers=2).result(timeout=30) == 3


def test_dask_futures_are_let_go_after_the_next_submit_or_soon(
    dask_cluster: Any, store: Store, monkeypatch: Any,
) -> None:
    import gc
    import time

    from distributed import Client

    from pxexec.engines.dask import _Releaser

    def held(client: Any, key: Any, wait: float = 0.0) -> bool:
        deadline = time.monotonic() + wait  # Dask drops its count from its event loop
        while client.refcount.get(key, 0) > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        return client.refcount.get(key, 0) > 0

    with Client(dask_cluster) as client, StoreExecutor(client, store) as ex:
        monkeypatch.setattr(_Releaser, "DELAY", 600.0)  # no timer in this part
        first = ex.submit(abs, -1)
        assert first.result(timeout=30) == 1
        key = first.engine_future.key
        del first
        gc.collect()
        assert held(client, key, wait=0.5)  # kept until the next submission...
        second = ex.submit(abs, -2)
        assert not held(client, key, wait=5)  # ...which lets go of it
        assert second.result(timeout=30) == 2
        monkeypatch.setattr(_Releaser, "DELAY", 0.05)
        key = second.engine_future.key
        del second
        gc.collect()
        assert not held(client, key, wait=5)  # no further submit: let go after a delay


def test_from_config(tmp_path: Any, shm_dir: str) -> None:
    path = tmp_path / "px.toml"
    path.write_text(
        f'[store]\nname = "cfg"\nconnector = "shm://{shm_dir}"\n'
        '[policy]\ntype = "size_at_least"\nnbytes = 1000\n'
        '[executor]\nproxy_containers = true\n'
    )
    with StoreExecutor.from_config(cf.ThreadPoolExecutor(1), str(path)) as ex:
        assert isinstance(ex.should_proxy, SizeAtLeast) and ex.proxy_containers
        assert ex.submit(workers.kinds, np.ones(200)).result() == ["ndarray*"]
        ex.store.close()


def test_worker_traceback_reaches_the_caller(engine: Any, store: Store) -> None:
    import traceback

    with make(engine, store) as ex:
        error = ex.submit(workers.fail, 1).exception(timeout=60)
    assert isinstance(error, ValueError)
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert "in fail" in text  # the frame of the task that raised, on the worker


def test_unreferenced_upstream_result_outlives_its_reader(engine: Any, store: Store) -> None:
    import gc

    with make(engine, store) as ex:
        # nobody keeps the inner future: its owned result must live until the reader ran
        outer = ex.submit(workers.total, ex.submit(workers.make_array, N, 3.0))
        gc.collect()
        assert outer.result(timeout=60) == 3.0 * N
        del outer
    gc.collect()  # the inner future (and its owned result) is garbage now
    assert store.connector.keys() == []


class _KeepingPool(cf.ThreadPoolExecutor):
    """An engine that keeps every task's arguments (as Parsl keeps task records)."""

    def __init__(self) -> None:
        super().__init__(2)
        self.kept: list[Any] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.kept.append(args)
        return super().submit(fn, *args, **kwargs)


def test_an_engine_keeping_arguments_does_not_keep_upstream_results(store: Store) -> None:
    import gc

    pool = _KeepingPool()
    with StoreExecutor(pool, store, proxy_containers=True) as ex:
        inner = ex.submit(workers.make_array, N, 3.0)
        outer = ex.submit(workers.total, inner)
        pair = ex.submit(workers.make_pair, N)  # a list result: a list of owners
        listed = ex.submit(workers.sizes, pair)
        assert outer.result(timeout=60) == 3.0 * N
        assert listed.result(timeout=60) == [N * 8, N * 8]
        del inner, outer, pair, listed
        gc.collect()
        assert ex.flush(10)
        assert pool.kept  # the engine still holds every task's arguments ...
        assert store.connector.keys() == []  # ... but no owner: the results are freed
