from __future__ import annotations

import concurrent.futures as cf
import time
import uuid
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest

from pxexec import Store
from pxexec.bench.redis_server import RedisServer
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import StoreConnectionError
from pxexec.executor import StoreExecutor
from pxexec.policies import SizeAtLeast
from tests import workers


def test_killed_process_pool_worker_reaches_caller_and_frees_inputs(shm_dir: str) -> None:
    store = Store(f"kill-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir))
    with StoreExecutor(cf.ProcessPoolExecutor(2), store, SizeAtLeast(1000)) as ex:
        futures = [ex.submit(workers.die, np.ones(1000)) for _ in range(3)]
        start = time.monotonic()
        for future in futures:
            with pytest.raises(BrokenProcessPool):
                future.result(timeout=60)
        elapsed = time.monotonic() - start
    assert elapsed < 30
    assert store.connector.keys() == []


def test_redis_killed_then_restarted(shm_dir: str) -> None:
    server = RedisServer()
    port = server.port
    store = Store("restart", RedisConnector(server.url, prefix="restart", connect_timeout=1,
                                            timeout=2), cache_size=0)
    try:
        with StoreExecutor(cf.ThreadPoolExecutor(2), store, SizeAtLeast(1000)) as ex:
            assert ex.submit(workers.total, np.ones(1000)).result(timeout=10) == 1000.0
            server.proc.kill()
            server.proc.wait()
            start = time.monotonic()
            with pytest.raises(StoreConnectionError) as info:
                ex.submit(workers.total, np.ones(1000))
            assert time.monotonic() - start < 10
            assert f"127.0.0.1:{port}" in str(info.value)
            server.stop()
            server = RedisServer(port=port)  # back on the same address
            assert ex.submit(workers.total, np.ones(1000)).result(timeout=10) == 1000.0
            ex.flush(timeout=10)
        assert store.connector.keys() == []
    finally:
        server.stop()
