"""Engine options through StoreExecutor.options(): they reach the engine, never the function."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

from pxexec import Store, StoreExecutor
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import EngineOptionError
from pxexec.policies import SizeAtLeast


def keywords(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return kwargs


def where() -> str:
    from distributed import get_worker

    return str(get_worker().address)


def flaky(marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise RuntimeError("first attempt fails")
    return "second attempt"


def nap(seconds: float, **kwargs: Any) -> dict[str, Any]:
    time.sleep(seconds)
    return kwargs


def test_pool_refuses_options_before_storing_anything(shm_dir: str) -> None:
    import concurrent.futures as cf

    store = Store("opts-pool", SharedMemoryConnector(shm_dir))
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, SizeAtLeast(1000)) as ex:
        with pytest.raises(EngineOptionError, match=r"concurrent.futures engine.*'workers'"):
            ex.options(workers=["w"]).submit(np.sum, np.ones(10_000))
        assert store.connector.keys() == []
        # keywords the function takes, even named like engine options, reach it
        assert ex.submit(keywords, workers=3, retries=1).result() == {"workers": 3, "retries": 1}


def test_dask_options_reach_the_scheduler_not_the_function(dask_cluster: Any,
                                                           tmp_path: Any, shm_dir: str) -> None:
    from distributed import Client

    client = Client(dask_cluster)
    store = Store("opts-dask", SharedMemoryConnector(shm_dir))
    try:
        with StoreExecutor(client, store, close_engine=False) as ex:
            workers = sorted(client.scheduler_info()["workers"])
            for target in workers:
                ran = ex.options(workers=[target], allow_other_workers=False).submit(where)
                assert ran.result() == target
            marker = str(tmp_path / "flaky")
            assert ex.options(retries=1).submit(flaky, marker).result() == "second attempt"
            future = ex.options(key="px-key-17", priority=5).submit(keywords, a=1)
            assert future.result() == {"a": 1}
            assert future.engine_future.key == "px-key-17"
            # a resource no worker has: the scheduler records it and the task waits
            held = ex.options(resources={"GPU": 1}, key="px-needs-gpu").submit(keywords)

            def restrictions(dask_scheduler: Any) -> Any:
                task = dask_scheduler.tasks.get("px-needs-gpu")
                return None if task is None else dict(task.resource_restrictions or {})

            deadline = time.monotonic() + 10
            while client.run_on_scheduler(restrictions) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.run_on_scheduler(restrictions) == {"GPU": 1}
            assert not held.done()
            held.cancel()
            # the function's own keyword named "workers" still reaches the function
            assert ex.submit(keywords, workers=7).result() == {"workers": 7}
            with pytest.raises(EngineOptionError, match="walltime"):
                ex.options(walltime=3)
    finally:
        client.close()


def test_parsl_options_reach_parsl_not_the_function(parsl_htex: Any, shm_dir: str) -> None:
    store = Store("opts-parsl", SharedMemoryConnector(shm_dir))
    with StoreExecutor(parsl_htex, store, close_engine=False) as ex:
        assert ex.options(priority=1).submit(nap, 0, a=2).result() == {"a": 2}
        assert ex.options(resources={"priority": 3}).submit(nap, 0).result() == {}
        from parsl.app.errors import AppTimeout

        with pytest.raises(AppTimeout):
            ex.options(walltime=0.5).submit(nap, 5).result()
        with pytest.raises(EngineOptionError, match="'workers'"):
            ex.options(workers=["n1"])
        with pytest.raises(EngineOptionError, match="walltime"):
            ex.options(walltime=1).submit(nap, 0, walltime=2)


def test_taskvine_options_become_task_settings(shm_dir: str, tmp_path: Any,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from pxexec.engines.taskvine import executor_from_module
    from tests import taskvine_standin

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CATALOG_HOST", "127.0.0.1")
    monkeypatch.setenv("CATALOG_PORT", "9097")
    vine = executor_from_module(taskvine_standin, port=0, opts={
        "min_workers": 1, "max_workers": 1, "catalog": "127.0.0.1:9097"})
    store = Store("opts-vine", SharedMemoryConnector(shm_dir))
    with StoreExecutor(vine, store) as ex:
        future = ex.options(cores=2, memory=1000, retries=3, priority=7).submit(keywords, b=1)
        assert future.result() == {"b": 1}
        assert vine.tasks[-1].settings == {"cores": 2, "memory": 1000, "retries": 3,
                                           "priority": 7}
        with pytest.raises(EngineOptionError, match="'workers'"):
            ex.options(workers=["n1"])
