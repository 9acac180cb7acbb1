"""The cost of owner records on shm stores (the default that lets a SIGKILLed client's
objects be reaped): StoreExecutor tasks with proxied inputs, tracking on vs off.

Run: ``python benchmarks/owner_tracking.py [--engine thread|dask] [--tasks 2000]
[--blocks 6]`` (under ``flock /tmp/pxexec-bench.lock``). A 2-thread pool, or a Dask
LocalCluster of 2 single-threaded worker processes; inputs of 100 kB go by proxy; arms
take turns in blocks. Prints tasks/s per arm (median of blocks) and the ratio.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from pxexec import Store, StoreExecutor
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.policies import SizeAtLeast


def total(x: np.ndarray) -> float:
    return float(x[0])


@contextlib.contextmanager
def _engine(name: str) -> Iterator[Any]:
    if name == "thread":
        with cf.ThreadPoolExecutor(2) as pool:
            yield pool
        return
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--engine", choices=["thread", "dask"], default="thread")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="pxexec-owners-", dir="/dev/shm")
    try:
        stores = {
            "tracked (default)": Store("tracked", SharedMemoryConnector(directory, namespace="on")),
            "untracked": Store("untracked", SharedMemoryConnector(
                directory, namespace="off", track_owners=False)),
        }
        data = np.ones(12_500)  # 100 kB
        rates: dict[str, list[float]] = {name: [] for name in stores}
        with _engine(args.engine) as pool:
            for block in range(args.blocks + 1):
                names = list(stores) if block % 2 else list(reversed(stores))
                for name in names:
                    ex = StoreExecutor(pool, stores[name], should_proxy=SizeAtLeast(50_000),
                                       close_engine=False)
                    start = time.perf_counter()
                    futures = [ex.submit(total, data) for _ in range(args.tasks)]
                    for future in futures:
                        future.result()
                    ex.shutdown()
                    if block:  # the first block warms up
                        rates[name].append(args.tasks / (time.perf_counter() - start))
        base = statistics.median(rates["untracked"])
        for name, values in rates.items():
            rate = statistics.median(values)
            print(f"{name:<18} {rate:8.0f} tasks/s  (x{rate / base:.3f} of untracked)")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
