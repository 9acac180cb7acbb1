"""Fault figures: for each fault, how long until the error (or the recovery) surfaced,
and how many objects remained in the store afterwards (target: zero).

Run: ``python benchmarks/faults.py`` (starts private redis-servers and a 2-worker Dask
LocalCluster; mounting a 1 MB tmpfs for the device-full case needs root).
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import numpy as np

from pxexec import Store
from pxexec.bench.private_redis import private_redis
from pxexec.connectors.file import FileConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import SizeAtLeast

# The tasks (defined in this script: Dask pickles them by value, forked pool workers
# have them already).

def total(data: Any) -> float:
    return float(data.sum())


def die(data: Any) -> None:
    os._exit(3)  # the worker process dies mid-task


def die_once(data: Any, marker: str) -> float:
    """Kill the worker process the first time (while ``marker`` does not exist)."""
    if os.path.exists(marker):
        return total(data)
    open(marker, "w").close()
    os._exit(3)


def total_when(data: Any, gate: str) -> float:
    """Sum ``data`` once the file ``gate`` exists (waiting 60 s at the most)."""
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up and not os.path.exists(gate):
        time.sleep(0.01)
    return total(data)


def record(fault: str, outcome: str, seconds: float, left: int) -> None:
    print(f"{fault:<44} {outcome:<44} {seconds * 1e3:9.0f} ms   {left} left", flush=True)


def timed(call: Callable[[], Any]) -> tuple[str, float]:
    start = time.monotonic()
    try:
        call()
        outcome = "succeeded"
    except BaseException as exc:
        outcome = type(exc).__name__
    return outcome, time.monotonic() - start


def pool_worker_killed(directory: str) -> None:
    store = Store("f-pool", SharedMemoryConnector(directory, namespace="pool"))
    with StoreExecutor(cf.ProcessPoolExecutor(2), store, SizeAtLeast(1000)) as ex:
        future = ex.submit(die, np.ones(100_000))
        outcome, seconds = timed(lambda: future.result(timeout=60))
    record("process-pool worker killed mid-task", outcome, seconds, len(store.connector.keys()))


def dask_worker_killed(directory: str) -> None:
    from distributed import Client, LocalCluster

    store = Store("f-dask", SharedMemoryConnector(directory, namespace="dask"))
    marker = os.path.join(directory, "died")
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            StoreExecutor(Client(cluster), store, SizeAtLeast(1000)) as ex:
        future = ex.submit(die_once, np.ones(100_000), marker)
        outcome, seconds = timed(lambda: future.result(timeout=120))
        ex.flush(10)
    record("Dask worker killed mid-task (rerun)", f"result {outcome}", seconds,
           len(store.connector.keys()))


def redis_killed() -> None:
    with ExitStack() as servers:
        first = servers.enter_context(private_redis())
        store = Store("f-redis", RedisConnector(first.url, prefix="faults", connect_timeout=1,
                                                timeout=2), cache_size=0)
        with StoreExecutor(cf.ThreadPoolExecutor(2), store, SizeAtLeast(1000)) as ex:
            ex.submit(total, np.ones(100_000)).result(timeout=10)
            first.process.kill()
            first.process.wait()
            outcome, seconds = timed(lambda: ex.submit(total, np.ones(100_000)))
            record("Redis killed (connect_timeout=1 s)", outcome, seconds, 0)
            servers.enter_context(private_redis(port=first.port))  # back on the same address
            outcome, seconds = timed(
                lambda: ex.submit(total, np.ones(100_000)).result(timeout=10))
            ex.flush(10)
        record("  ... Redis restarted, next task", outcome, seconds,
               len(store.connector.keys()))


def redis_frozen() -> None:
    # A server that stops answering (SIGSTOP): calls give up after the socket timeout.
    with private_redis() as redis:
        store = Store("f-frozen", RedisConnector(redis.url, prefix="frozen", connect_timeout=1,
                                                 timeout=1), cache_size=0)
        with StoreExecutor(cf.ThreadPoolExecutor(1), store, SizeAtLeast(1000)) as ex:
            ex.submit(total, np.ones(100_000)).result(timeout=10)
            os.kill(redis.process.pid, signal.SIGSTOP)
            outcome, seconds = timed(lambda: ex.submit(total, np.ones(100_000)))
            os.kill(redis.process.pid, signal.SIGCONT)
            record("Redis frozen (SIGSTOP, timeout=1 s)", outcome, seconds, 0)
            outcome, seconds = timed(
                lambda: ex.submit(total, np.ones(100_000)).result(timeout=10))
            ex.flush(10)
        record("  ... Redis resumed, next task", outcome, seconds, len(store.connector.keys()))


def redis_unreachable_from_worker() -> None:
    # A store whose address is wrong where the task runs: the task fails, naming it.
    store = Store("f-unreachable", RedisConnector("redis://127.0.0.1:9/0", connect_timeout=1))
    proxy_input = SizeAtLeast(1000)
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, proxy_input) as ex:
        outcome, seconds = timed(lambda: ex.submit(total, np.ones(100_000)).result(timeout=30))
    record("store unreachable (refused port)", outcome, seconds, 0)


def directory_removed(directory: str) -> None:
    connector = FileConnector(os.path.join(directory, "objects"))
    store = Store("f-removed", connector)
    gate = os.path.join(directory, "gate")
    with StoreExecutor(cf.ProcessPoolExecutor(2), store, SizeAtLeast(1000)) as ex:
        future = ex.submit(total_when, np.ones(100_000), gate)
        shutil.rmtree(connector.path)
        open(gate, "w").close()
        outcome, seconds = timed(lambda: future.result(timeout=60))
        ex.flush(10)
    record("store directory removed during a task", outcome, seconds, len(connector.keys()))


def device_full(directory: str) -> None:
    mount = os.path.join(directory, "tiny")
    os.makedirs(mount)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount],
                      capture_output=True).returncode != 0:
        print("device full: skipped (mounting a tmpfs needs root)")
        return
    try:
        store = Store("f-full", FileConnector(mount))
        with StoreExecutor(cf.ThreadPoolExecutor(1), store, SizeAtLeast(1000)) as ex:
            outcome, seconds = timed(lambda: ex.submit(total, np.ones(1_000_000)))
        partial = [n for n in os.listdir(store.connector.path) if n.startswith(".")]
        record("device full (1 MB tmpfs, 8 MB object)", outcome, seconds,
               len(store.connector.keys()) + len(partial))
    finally:
        subprocess.run(["umount", mount], check=False)


def client_killed_with_leases(directory: str) -> None:
    code = (
        "import sys, time\n"
        "from pxexec import Store\n"
        "from pxexec.connectors.shm import SharedMemoryConnector\n"
        f"store = Store('f-lease', SharedMemoryConnector({directory!r}, namespace='lease', "
        "lease=2))\n"
        "owners = [store.owned_proxy(bytes(100_000)) for _ in range(10)]\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    connector = SharedMemoryConnector(directory, namespace="lease", lease=2)
    held = len(connector.keys())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    start = time.monotonic()
    while connector.keys() and time.monotonic() - start < 30:
        connector.reap()
        time.sleep(0.1)
    record(f"client killed holding {held} objects (lease 2 s)", "objects reaped",
           time.monotonic() - start, len(connector.keys()))


def main() -> None:
    directory = tempfile.mkdtemp(prefix="pxexec-faults-", dir="/dev/shm")
    print(f"{'fault':<44} {'what surfaced':<44} {'after':>12}   store afterwards")
    try:
        pool_worker_killed(directory)
        dask_worker_killed(directory)
        redis_killed()
        redis_frozen()
        redis_unreachable_from_worker()
        directory_removed(directory)
        device_full(directory)
        client_killed_with_leases(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
