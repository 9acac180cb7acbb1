from __future__ import annotations

import concurrent.futures as cf
import time
import uuid
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.connectors.file import FileConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import StoreConnectionError
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import SizeAtLeast
from tests import workers
from tests.redis_server import RedisServer


def test_killed_process_pool_worker_reaches_caller_and_frees_inputs(shm_dir: str) -> None:
    store = Store(f"kill-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir))
    with StoreExecutor(cf.ProcessPoolExecutor(2), store, SizeAtLeast(1000)) as ex:
        futures, refused = [], 0
        start = time.monotonic()
        for _ in range(3):  # once the first task killed the pool, submit itself may fail
            try:
                futures.append(ex.submit(workers.die, np.ones(1000)))
            except BrokenProcessPool:
                refused += 1
        assert futures and len(futures) + refused == 3
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


def test_dask_worker_killed_mid_task_is_rerun(dask_cluster: Any, shm_dir: str,
                                              tmp_path: Any) -> None:
    from distributed import Client

    store = Store(f"dkill-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir))
    marker = str(tmp_path / "died")
    with StoreExecutor(Client(dask_cluster), store, SizeAtLeast(1000)) as ex:
        start = time.monotonic()
        result = ex.submit(workers.die_once, np.ones(1000), marker).result(timeout=120)
        elapsed = time.monotonic() - start
    assert result == 1000.0 and elapsed < 120
    assert store.connector.keys() == []  # the input survived the rerun, then was freed
    dask_cluster.wait_for_workers(2, timeout=60)


@pytest.mark.slow
def test_values_over_redis_limit_and_2gb_files(redis_url: str, shm_dir: str,
                                               tmp_path: Any) -> None:
    big = np.frombuffer(np.random.default_rng(0).bytes(600_000_000), dtype=np.uint8)
    redis_store = Store("big-redis", RedisConnector(redis_url, prefix="big"), cache_size=0)
    key = redis_store.put(big)
    assert key.endswith(":p2")  # split under Redis' 512 MB limit
    assert np.array_equal(redis_store.get(key), big)
    redis_store.evict(key)
    huge = np.zeros(2_200_000_000, dtype=np.uint8)
    huge[::1_000_000] = 7
    for connector in (SharedMemoryConnector(shm_dir), FileConnector(str(tmp_path))):
        store = Store(f"big-{connector.type_name}", connector)
        key = store.put(huge)
        out = store.get(key)
        assert out.nbytes == huge.nbytes and np.array_equal(out[::1_000_000], huge[::1_000_000])
        del out
        store.evict(key)


def test_device_full_is_clear_and_leaves_no_partial_object(tmp_path: Any) -> None:
    import os
    import subprocess

    from pxexec.errors import StoreIOError

    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a 1 MB tmpfs here (needs root)")
    try:
        connector = FileConnector(str(mount))
        store = Store("full", connector)
        kept = store.put(b"x" * 1000)
        with pytest.raises(StoreIOError, match="free space"):
            store.put(np.zeros(2_000_000, dtype=np.uint8))
        assert os.listdir(connector.path) == [kept]  # no partial or temporary file
        assert store.get(kept) == b"x" * 1000
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("size", [100, 300_000])  # a redis-py command, the raw frame path
def test_transient_connection_errors_are_retried_with_backoff(size: int) -> None:
    import threading

    from pxexec.codec.serialize import serialize
    from tests.redis_server import free_port

    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    payload = serialize(np.arange(size // 8, dtype=np.float64))
    no_retry = RedisConnector(url, prefix="retry", connect_timeout=0.5, timeout=2, retries=0)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError):
        no_retry.put(payload)
    assert time.monotonic() - start < 2  # off: fails at once
    started: list[RedisServer] = []
    later = threading.Timer(0.6, lambda: started.append(RedisServer(port=port)))
    later.start()
    try:
        patient = RedisConnector(url, prefix="retry", connect_timeout=0.5, timeout=2, retries=6)
        start = time.monotonic()
        key = patient.put(payload)  # the server comes up while this retries
        waited = time.monotonic() - start
        assert 0.5 < waited < 20
        assert bytes(patient.get(key)) == b"".join(bytes(f) for f in payload)
    finally:
        later.join()
        for server in started:
            server.stop()


def test_store_directory_removed_during_a_run(tmp_path: Any) -> None:
    import shutil

    from pxexec.errors import StoreIOError

    connector = FileConnector(str(tmp_path / "objects"))
    store = Store(f"removed-{uuid.uuid4().hex[:6]}", connector)
    gate = str(tmp_path / "gate")
    with StoreExecutor(cf.ProcessPoolExecutor(2), store, SizeAtLeast(1000)) as ex:
        waiting = ex.submit(workers.total_when, np.ones(1000), gate)
        shutil.rmtree(connector.path)  # the store's directory vanishes while the task waits
        start = time.monotonic()
        open(gate, "w").close()
        with pytest.raises(StoreIOError, match="does not exist") as info:
            waiting.result(timeout=60)
        assert time.monotonic() - start < 30
        assert connector.path in str(info.value)
        # the store keeps working: the next object recreates the directory
        assert ex.submit(workers.total, np.ones(1000)).result(timeout=60) == 1000.0
        assert ex.flush(10)
    assert connector.keys() == []


def test_errors_cross_process_boundaries_intact() -> None:
    import pickle

    from pxexec import errors

    samples = [errors.MissingKeyError("k", "s", "detail"),
               errors.MissingDependencyError("redis", "redis", "The Redis connector"),
               errors.StoreIOError("disk full"), errors.SignatureError("bad signature"),
               errors.ConfigError("bad key"), errors.PolicyError("policy raised")]
    for error in samples:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
    assert pickle.loads(pickle.dumps(samples[0])).key == "k"


def test_frozen_redis_fails_within_the_timeout() -> None:
    import os
    import signal

    server = RedisServer()
    store = Store("frozen", RedisConnector(server.url, prefix="frozen", connect_timeout=1,
                                           timeout=1), cache_size=0)
    try:
        key = store.put(np.ones(100_000))
        os.kill(server.proc.pid, signal.SIGSTOP)  # the server stops answering
        start = time.monotonic()
        with pytest.raises(StoreConnectionError, match=str(server.port)):
            store.put(np.ones(100_000))  # a write given up on: the server may apply it later
        with pytest.raises(StoreConnectionError, match=str(server.port)):
            store.get(key)
        assert time.monotonic() - start < 8  # bounded by the socket timeouts, not a hang
        os.kill(server.proc.pid, signal.SIGCONT)
        assert float(store.get(key).sum()) == 100_000.0  # answers again once it is back
        later = store.put(b"after")  # the next write first deletes the doubtful one
        assert sorted(store.connector.keys()) == sorted([key, later])
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()
