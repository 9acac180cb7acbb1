from __future__ import annotations

import os
import time
import uuid
from typing import Any

import numpy as np
import pytest
from distributed import as_completed

from pxexec import Proxy, Store, is_resolved
from pxexec.engines.dask_client import Client
from pxexec.executor.facade import StoreExecutor, proxy_key
from pxexec.policies import SizeAtLeast
from tests import workers
from tests.counting import CountingConnector

N = 50_000


@pytest.fixture
def store(shm_dir: str) -> Any:
    with Store(f"dc-{uuid.uuid4().hex[:6]}", CountingConnector(shm_dir)) as s:
        yield s


@pytest.fixture
def client(dask_cluster: Any, store: Store) -> Any:
    with Client(dask_cluster, ps_store=store, ps_threshold=100_000) as c:
        yield c


def test_submit_proxies_large_arguments_and_results(client: Client, store: Store) -> None:
    future = client.submit(workers.double, np.ones(N))
    result = future.result()
    assert isinstance(result, Proxy) and not is_resolved(result)
    assert float(result.sum()) == 2.0 * N
    gets = store.connector.gets()
    input_gets = [g for g in gets if g[1] != proxy_key(result)]
    assert len(input_gets) == 1 and input_gets[0][0] != os.getpid()
    client.gather([future])  # gather works on the same futures
    assert store.connector.keys() == [proxy_key(result)]  # input freed on completion


def test_pure_calls_share_a_key_and_store_once(client: Client, store: Store) -> None:
    arr = np.ones(N)
    first = client.submit(workers.total, arr)
    second = client.submit(workers.total, arr)
    assert first.key == second.key
    assert first.result() == second.result() == float(N)
    impure = client.submit(workers.total, arr, pure=False)
    assert impure.key != first.key and impure.result() == float(N)
    assert store.metrics.puts == 2  # the pure duplicate stored nothing


def test_futures_gather_as_completed_and_map(client: Client) -> None:
    made = client.submit(workers.make_array, N, 3.0)
    summed = client.submit(workers.total, made)
    assert summed.result() == 3.0 * N
    futures = client.map(workers.total, [np.full(N, i, dtype=float) for i in range(4)])
    assert sorted(f.result() for f in as_completed(futures)) == [i * float(N) for i in range(4)]
    assert client.gather(futures) == [i * float(N) for i in range(4)]
    with_key = client.submit(workers.total, np.ones(N), key="my-key")
    assert with_key.key == "my-key" and with_key.result() == float(N)


def test_without_store_is_plain_dask(dask_cluster: Any) -> None:
    with Client(dask_cluster) as c:
        result = c.submit(workers.double, np.ones(N)).result()
        assert type(result) is np.ndarray


def test_proxied_dict_is_not_walked_by_dask(dask_cluster: Any, store: Store) -> None:
    from distributed import Client as DaskClient

    big = {f"k{i}": np.ones(1000) for i in range(20)}  # a dict Dask would recurse into
    with StoreExecutor(DaskClient(dask_cluster), store, should_proxy=SizeAtLeast(100_000)) as ex:
        assert ex.submit(len, big).result() == 20
    gets = store.connector.gets()
    assert len(gets) == 1 and gets[0][0] != os.getpid()


def test_owners_move_into_client_tasks_and_borrows_end_with_them(client: Client,
                                                                 store: Store) -> None:
    from pxexec.store.leases import keeper
    from pxexec.store.ownership import OwnershipError, borrow

    owner = store.owned_proxy(np.ones(N))
    key = proxy_key(owner)
    assert client.submit(workers.total, owner).result() == float(N)
    with pytest.raises(OwnershipError, match="moved"):
        len(owner)  # moved into the task, as with StoreExecutor
    kept = store.owned_proxy(np.ones(N))
    future = client.submit(workers.total, borrow(kept), pure=False)
    assert future.result() == float(N)
    deadline = time.monotonic() + 10
    while store.exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not store.exists(key)  # the moved input was freed when its task ended
    while True:  # the borrow ends with its task (a done callback): then the owner frees
        try:
            kept.free()
            break
        except OwnershipError:
            assert time.monotonic() < deadline, "the borrow outlived its task"
            time.sleep(0.05)
    assert store.connector.keys() == [] and keeper().held(store) == set()
