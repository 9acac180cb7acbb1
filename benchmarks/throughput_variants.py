"""Throughput of 1 MB tasks through StoreExecutor as the policy changes what goes by proxy.

Run: ``python benchmarks/throughput_variants.py [--tasks 300]``
(a 2-worker Dask LocalCluster and the shm connector; one task in flight per worker).
"""

from __future__ import annotations

import argparse
import queue
import statistics
import time
from typing import Any

import numpy as np

from pxexec import Store
from pxexec.connectors import connector_from_url
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import Never, SizeAtLeast, TypeIn


def task(data: Any, nbytes: int, as_bytes: bool) -> tuple[Any, float]:
    from pxexec.proxy import extract

    start = time.time()
    value = extract(data)
    arr = np.frombuffer(value, np.uint8) if isinstance(value, bytes) else value
    out = np.full(nbytes, int(arr.sum()) % 251, np.uint8)
    return (out.tobytes() if as_bytes else out), start


def run(ex: StoreExecutor, payload: Any, nbytes: int, as_bytes: bool, tasks: int,
        workers: int = 2) -> tuple[float, float]:
    done: queue.Queue[tuple[Any, float]] = queue.Queue()

    def launch() -> None:
        submitted = time.time()
        future = ex.submit(task, payload, nbytes, as_bytes)

        def finished(f: Any, t: float = submitted) -> None:
            done.put((f, t))

        future.add_done_callback(finished)

    for _ in range(workers):
        launch()
    launched, waits = workers, []
    begin = time.time()
    for _ in range(tasks):
        future, submitted = done.get()
        out, start = future.result()
        waits.append(start - submitted)
        if launched < tasks:
            launch()
            launched += 1
        ex.free(out)
    return tasks / (time.time() - begin), statistics.median(waits) * 1e3


def main() -> None:
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    arr = np.ones(1_000_000, np.uint8)
    variants = {
        "1 kB, nothing proxied": (SizeAtLeast(10**6), np.ones(1000, np.uint8), 1000, False),
        "1 MB, in and out proxied": (SizeAtLeast(10**6), arr, 10**6, False),
        "1 MB, input proxied only": (TypeIn(np.ndarray), arr, 10**6, True),
        "1 MB, output proxied only": (TypeIn(np.ndarray), arr.tobytes(), 10**6, False),
        "1 MB, nothing proxied": (Never(), arr, 10**6, False),
    }
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        store = Store("variants", connector_from_url("shm"))
        for warm in (True, False):
            for name, (policy, payload, nbytes, as_bytes) in variants.items():
                ex = StoreExecutor(client, store, policy, close_engine=False)
                rate, wait = run(ex, payload, nbytes, as_bytes, 50 if warm else args.tasks)
                ex.shutdown()
                if not warm:
                    print(f"{name:28} {rate:6.1f} tasks/s   submit->start {wait:5.1f} ms")
        store.close()


if __name__ == "__main__":
    main()
