"""StoreFutures with asyncio and Dask's ways of waiting, on a real Dask LocalCluster."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import time
from typing import Any

import numpy as np
import pytest

from pxexec import Store, StoreExecutor
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.store.ownership import OwnedProxy
from tests.conftest import taskvine_executor


def _slow_square(x: float) -> float:
    time.sleep(0.3)
    return x * x


def _big(n: int) -> Any:
    return np.ones(n)


@pytest.fixture
def store(shm_dir: str) -> Any:
    with Store("interop", SharedMemoryConnector(shm_dir, namespace="interop")) as s:
        yield s


@pytest.fixture
def dask_ex(dask_cluster: Any, store: Store) -> Any:
    from distributed import Client

    with StoreExecutor(Client(dask_cluster), store) as ex:
        yield ex


def test_await_gives_the_result_on_dask(dask_ex: StoreExecutor) -> None:
    async def main() -> list[Any]:
        futures = [dask_ex.submit(_slow_square, float(i)) for i in range(4)]
        return list(await asyncio.gather(*futures))

    assert asyncio.run(main()) == [0.0, 1.0, 4.0, 9.0]


def test_await_gives_the_same_owner_as_result(dask_ex: StoreExecutor) -> None:
    future = dask_ex.submit(_big, 500_000)  # 4 MB result: comes back as an owned proxy

    async def main() -> Any:
        return await future

    owner = asyncio.run(main())
    assert isinstance(owner, OwnedProxy) and owner is future.result()
    assert float(owner.sum()) == 500_000.0


def test_await_raises_the_task_error(dask_ex: StoreExecutor) -> None:
    async def main() -> Any:
        return await dask_ex.submit(int, "not a number")

    with pytest.raises(ValueError, match="invalid literal"):
        asyncio.run(main())


def test_await_drives_an_engine_that_needs_a_waiter(store: Store, request: Any) -> None:
    # the TaskVine stand-in (tasks progress only while someone waits), built as users do
    with StoreExecutor(taskvine_executor(request, real=False), store) as ex:
        async def main() -> Any:
            return await ex.submit(sum, [1, 2, 3])

        assert asyncio.run(main()) == 6


def test_concurrent_futures_wait_and_as_completed_work_on_dask(dask_ex: StoreExecutor) -> None:
    futures = [dask_ex.submit(_slow_square, float(i)) for i in range(4)]
    _, not_done = cf.wait(futures)
    assert not not_done and all(f.done() for f in futures)
    more = [dask_ex.submit(_slow_square, float(i)) for i in range(3)]
    assert sorted(f.result() for f in cf.as_completed(more)) == [0.0, 1.0, 4.0]


def test_distributed_wait_refuses_store_futures_with_what_to_use(dask_ex: StoreExecutor) -> None:
    import distributed

    futures = [dask_ex.submit(_slow_square, 2.0)]
    with pytest.raises(TypeError, match=r"concurrent\.futures\.wait\(futures\)"):
        distributed.wait(futures)
    assert futures[0].result() == 4.0


def test_distributed_as_completed_names_the_alternative(dask_ex: StoreExecutor) -> None:
    import distributed

    futures = [dask_ex.submit(_slow_square, 3.0)]
    with pytest.raises(TypeError, match=r"StoreFuture .*concurrent\.futures.*as_completed"):
        distributed.as_completed(futures)
    assert futures[0].result() == 9.0


def test_dask_compute_refuses_store_futures(dask_ex: StoreExecutor) -> None:
    import dask

    future = dask_ex.submit(_slow_square, 1.5)
    with pytest.raises(TypeError, match="StoreFuture"):
        dask.compute(future)
    assert future.result() == 2.25


def test_store_future_repr_says_what_it_is(dask_ex: StoreExecutor) -> None:
    future = dask_ex.submit(_slow_square, 1.0)
    future.result()
    assert repr(future).startswith("<StoreFuture finished on dask")
