"""Objects do not outlive their owner: SIGKILL, SIGINT and exit of a client with tasks in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from pxexec.connectors.shm import SharedMemoryConnector

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASKS = 20

CLIENT = """
import sys, time
import numpy as np
from pxexec import Store, StoreExecutor
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.policies import SizeAtLeast
from tests import workers
directory, engine, gate = sys.argv[1:4]
if engine == "dask":
    from distributed import Client
    pool = Client(sys.argv[4])
else:
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(2)
store = Store("crash", SharedMemoryConnector(directory, namespace="crash"))
ex = StoreExecutor(pool, store, should_proxy=SizeAtLeast(1000))
futures = [ex.submit(workers.total_when, np.ones(100_000) * i, gate) for i in range(TASKS)]
print("ready", flush=True)
if sys.argv[-1] == "exit":
    sys.exit(0)
[f.result() for f in futures]
""".replace("TASKS", str(TASKS))


def _objects(shm_dir: str) -> list[str]:
    path = os.path.join(shm_dir, "crash")
    return [n for n in os.listdir(path) if len(n) == 32]


def _client(shm_dir: str, tmp_path: Any, engine: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, shm_dir, engine, str(tmp_path / "gate"), *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"the client did not start: {line}{proc.communicate()[1]}")
    return proc


def _opened(path: str) -> bool:
    """On a worker: whether this process opened the store in ``path`` (and reaped it)."""
    from pxexec.store.registry import registered_stores

    return any(getattr(s.connector, "path", None) == path for s in registered_stores())


def _wait_until_every_worker_opened(scheduler: str, path: str, timeout: float = 60.0) -> None:
    from distributed import Client

    deadline = time.monotonic() + timeout
    with Client(scheduler) as client:
        while not all(client.run(_opened, path).values()):
            assert time.monotonic() < deadline, "the workers did not start their tasks"
            time.sleep(0.05)


def _next_process_reaps(shm_dir: str) -> int:
    code = ("import sys\nfrom pxexec.connectors.shm import SharedMemoryConnector\n"
            "print(SharedMemoryConnector(sys.argv[1], namespace='crash').reaped_on_start)\n")
    out = subprocess.run([sys.executable, "-c", code, shm_dir], capture_output=True, text=True,
                         check=True, timeout=60)
    return int(out.stdout)


@pytest.mark.parametrize("engine", ["thread", "dask"])
def test_sigkilled_clients_objects_are_reaped_by_the_next_process(
        engine: str, shm_dir: str, tmp_path: Any, request: Any) -> None:
    extra = [request.getfixturevalue("dask_cluster").scheduler_address] if engine == "dask" else []
    proc = _client(shm_dir, tmp_path, engine, *extra)
    try:
        assert len(_objects(shm_dir)) == TASKS
        if engine == "dask":  # a worker opening the store after the kill would reap first
            _wait_until_every_worker_opened(extra[0], os.path.join(shm_dir, "crash"))
        proc.kill()
        _, err = proc.communicate(timeout=60)
        assert len(_objects(shm_dir)) == TASKS, err  # a SIGKILL frees nothing by itself
        assert _next_process_reaps(shm_dir) == TASKS
        assert _objects(shm_dir) == []
    finally:
        (tmp_path / "gate").touch()  # lets the workers' tasks end


@pytest.mark.parametrize("how", ["sigint", "exit"])
def test_interrupted_or_exiting_client_frees_its_inputs(how: str, shm_dir: str,
                                                        tmp_path: Any, dask_cluster: Any) -> None:
    proc = _client(shm_dir, tmp_path, "dask", dask_cluster.scheduler_address, how)
    try:
        if how == "sigint":
            assert len(_objects(shm_dir)) == TASKS
            proc.send_signal(signal.SIGINT)  # Ctrl-C while it waits for results
        _, err = proc.communicate(timeout=60)
        assert _objects(shm_dir) == [], err
    finally:
        (tmp_path / "gate").touch()
        if proc.poll() is None:
            proc.kill()


def test_objects_nobody_holds_are_never_reaped(shm_dir: str) -> None:
    from pxexec import Store

    plain = Store("plain", SharedMemoryConnector(shm_dir, namespace="crash"))
    key = plain.put(b"a workflow that uses no lease")
    time.sleep(0.1)
    again = SharedMemoryConnector(shm_dir, namespace="crash", lease=0.01)
    assert again.reap() == 0 and again.exists(key)


def _mapped_and_open(directory: str) -> tuple[int, int]:
    """Run on a worker: its mappings of files in ``directory`` and its open descriptors."""
    with open("/proc/self/maps") as f:
        mapped = sum(directory in line for line in f)
    return mapped, len(os.listdir("/proc/self/fd"))


def test_workers_do_not_keep_freed_inputs_mapped_while_futures_are_held(
        shm_dir: str, dask_cluster: Any) -> None:
    import numpy as np
    from distributed import Client

    from pxexec import Store, StoreExecutor
    from pxexec.policies import SizeAtLeast
    from tests import workers

    store = Store("held", SharedMemoryConnector(shm_dir, namespace="held"))
    with Client(dask_cluster) as client:
        before = client.run(_mapped_and_open, shm_dir)
        ex = StoreExecutor(client, store, should_proxy=SizeAtLeast(1000), close_engine=False)
        futures = [ex.submit(workers.total, np.full(20_000, float(i))) for i in range(200)]
        assert [f.result() for f in futures] == [20_000.0 * i for i in range(200)]
        ex.flush()
        after = client.run(_mapped_and_open, shm_dir)  # every future still held
        assert store.connector.keys() == []  # the inputs were freed ...
        for worker, (mapped, fds) in after.items():  # ... and nothing pins them
            assert mapped == 0, f"{worker} still maps {mapped} freed input(s)"
            assert fds - before[worker][1] < 20, f"{worker} holds {fds} descriptors"
        ex.shutdown()
        del futures


def test_executor_lets_go_of_callables(shm_dir: str) -> None:
    import concurrent.futures as cf
    import gc
    import weakref

    from pxexec import Store, StoreExecutor

    store = Store("callables", SharedMemoryConnector(shm_dir, namespace="callables"))
    ex = StoreExecutor(cf.ThreadPoolExecutor(2), store)
    refs = []
    for i in range(200):
        blob = bytes(100_000)

        def task(i: int = i, blob: bytes = blob) -> int:
            return i + len(blob)

        refs.append(weakref.ref(task))
        assert ex.submit(task).result() == i + 100_000
        del task
    gc.collect()
    assert sum(r() is not None for r in refs) <= 32  # a few recent wrappers, bounded
    ex.shutdown()
    gc.collect()
    assert all(r() is None for r in refs)


def test_a_reaper_finds_nothing_to_reap_in_a_store_directory_removed_meanwhile(
        shm_dir: str, caplog: Any) -> None:
    # a test bed (or a user) removes a store's directory while a keeper still reaps it
    import logging
    import shutil

    from pxexec import Store
    from pxexec.connectors.file import FileConnector
    from pxexec.store.leases import keeper, reset_keeper

    for connector in (SharedMemoryConnector(shm_dir, namespace="gone", lease=5.0),
                      FileConnector(os.path.join(shm_dir, "gone-files"), lease=5.0)):
        key = connector.put([b"held"])
        keeper().hold(Store("gone", connector), [key])  # renewed and reaped by the keeper
        shutil.rmtree(connector.path)
        with caplog.at_level(logging.WARNING, logger="pxexec"):
            assert connector.reap() == 0
            assert connector.reap_report().objects == []
            connector.renew(keeper().owner, [key], 5.0)
            keeper().renew_now()
            keeper()._reap()
    reset_keeper()
    assert not caplog.records
