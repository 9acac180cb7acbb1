"""10,000 tasks with proxied inputs and outputs: nothing left behind, no memory growth."""

from __future__ import annotations

import gc
import uuid
from typing import Any

import psutil
import pytest

from pxexec import Store
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import SizeAtLeast
from tests import workers

TASKS = 10_000
PAYLOAD = b"x" * 10_000


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["process-fork", "dask", "parsl-htex"], indirect=True)
def test_ten_thousand_tasks_leave_nothing(engine: Any, shm_dir: str) -> None:
    store = Store(f"scale-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir))
    executor, close = engine
    process = psutil.Process()
    with StoreExecutor(executor, store, SizeAtLeast(5_000), close_engine=close) as ex:
        rss = []
        for _ in range(5):
            results = ex.map(workers.fresh_bytes, [PAYLOAD] * (TASKS // 5), buffersize=64)
            assert all(len(r) == len(PAYLOAD) for r in results)  # each freed when dropped
            gc.collect()
            assert ex.flush(timeout=60)
            rss.append(process.memory_info().rss)
            assert store.connector.keys() == []
    assert store.metrics.puts >= TASKS  # every input went by proxy
    growth = rss[-1] - rss[1]
    assert growth < 50 * 2**20, f"client memory grew by {growth / 2**20:.1f} MiB"
    store.close()
