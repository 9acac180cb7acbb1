"""Ownership figures: makespan overhead, lease renewal cost, time from owner death to empty.

Run: ``python benchmarks/ownership.py [--tasks 1000] [--rounds 3]``
(starts a private redis-server and a 2-worker Dask LocalCluster).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from pxexec import Store
from pxexec.bench.private_redis import private_redis
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import SizeAtLeast
from pxexec.store.leases import keeper, reset_keeper


def checksum(data: Any) -> float:
    return float(data[:16].sum())


def makespan(tasks: int, rounds: int) -> None:
    from distributed import Client, LocalCluster

    payload = np.random.default_rng(0).integers(0, 255, 1_000_000, dtype=np.uint8)
    directory = tempfile.mkdtemp(prefix="pxexec-own-", dir="/dev/shm")
    times: dict[bool, list[float]] = {True: [], False: []}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        store = Store("ownership-bench", SharedMemoryConnector(directory))
        for _ in range(rounds):
            for ownership in (True, False):
                ex = StoreExecutor(client, store, SizeAtLeast(100_000), ownership=ownership,
                                   close_engine=False)
                start = time.perf_counter()
                list(ex.map(checksum, [payload] * tasks, buffersize=16))
                times[ownership].append(time.perf_counter() - start)
                ex.shutdown()
                if not ownership:  # nothing was freed: clean up outside the timing
                    store.evict_batch(store.connector.keys())
                assert store.connector.keys() == []
        store.close()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"\n## Makespan of {tasks} tasks with 1 MB inputs (Dask, 2 workers; median of "
          f"{rounds})")
    print(f"ownership on   {on:7.2f} s")
    print(f"ownership off  {off:7.2f} s")
    print(f"overhead       {(on / off - 1) * 100:+6.1f} %")


def renewal_cost(redis_url: str, objects: int) -> None:
    print(f"\n## Lease renewal for {objects} live owned objects (one interval, median of 5)")
    directory = tempfile.mkdtemp(prefix="pxexec-lease-", dir="/dev/shm")
    for label, connector in (
        ("redis (PEXPIRE pipeline)", RedisConnector(redis_url, prefix="renew", ttl=60)),
        ("shm (heartbeat file)", SharedMemoryConnector(directory, lease=60)),
    ):
        reset_keeper()
        store = Store(f"renew-{label[:4]}", connector)
        owners = [store.owned_proxy(b"x" * 100) for _ in range(objects)]
        samples = []
        for _ in range(5):
            keeper().renew_now()
            samples.append(keeper().last_renewal_seconds)
        print(f"{label:26} {statistics.median(samples) * 1e3:8.2f} ms")
        for owner in owners:
            owner.free()
        store.close()
    reset_keeper()


def death_to_empty(redis_url: str, objects: int, lease: float) -> None:
    print(f"\n## Owner killed with SIGKILL holding {objects} objects, lease {lease:g} s")
    directory = tempfile.mkdtemp(prefix="pxexec-death-", dir="/dev/shm")
    setups = {
        "redis": (f"from pxexec.connectors.redis import RedisConnector as C\n"
                  f"s = Store('d', C({redis_url!r}, prefix='death', ttl={lease}))"),
        "shm": (f"from pxexec.connectors.shm import SharedMemoryConnector as C\n"
                f"s = Store('d', C({directory!r}, namespace='d', lease={lease}))"),
    }
    for kind, setup in setups.items():
        code = (f"import time\nfrom pxexec import Store\n{setup}\n"
                f"o = [s.owned_proxy(b'x' * 1000) for _ in range({objects})]\n"
                "print('ready', flush=True)\ntime.sleep(600)\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        scope: dict[str, Any] = {"Store": Store}
        exec(setup, scope)
        connector = scope["s"].connector
        time.sleep(lease)
        assert len(connector.keys()) == objects
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # a surviving process's keeper reaps file/shm stores every lease period
        while connector.keys():
            if kind == "shm":
                connector.reap()
            time.sleep(0.05)
        print(f"{kind:6} empty {time.monotonic() - killed:6.2f} s after the kill")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--lease", type=float, default=2.0)
    args = parser.parse_args()
    with private_redis() as redis:
        renewal_cost(redis.url, args.objects)
        death_to_empty(redis.url, 1000, args.lease)
        makespan(args.tasks, args.rounds)


if __name__ == "__main__":
    main()
