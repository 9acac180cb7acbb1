"""MultiConnector figures: a mixed workload on Dask, and the routing cost per put.

Run: ``python benchmarks/routing.py [--tasks 1000] [--rounds 3]``
(starts a private redis-server and a 2-worker Dask LocalCluster).

The workload: ``--tasks`` tasks whose inputs alternate between a small dict (~1 kB)
and a 10 MB array; every input goes by proxy. Arms: Redis only, shm only, and a
MultiConnector routing objects under 1 MB to Redis and larger ones to shm.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

import numpy as np

from pxexec import Store
from pxexec.bench.private_redis import private_redis
from pxexec.codec.serialize import serialize
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import Always


def touch(data: Any) -> int:
    """Read the input (every byte of an array, every item of a dict)."""
    if isinstance(data, dict):
        return len(data)
    return int(data[::4096].sum())


def mixed_inputs(tasks: int) -> list[Any]:
    small = {f"k{i}": i for i in range(60)}  # ~1 kB pickled
    big = np.random.default_rng(0).integers(0, 255, 10_000_000, dtype=np.uint8)
    return [small if i % 2 == 0 else big for i in range(tasks)]


def makespan(redis_url: str, tasks: int, rounds: int) -> None:
    from distributed import Client, LocalCluster

    shm_dir = tempfile.mkdtemp(prefix="pxexec-route-", dir="/dev/shm")
    arms = {
        "redis only": lambda: RedisConnector(redis_url, prefix="route-r"),
        "shm only": lambda: SharedMemoryConnector(shm_dir, namespace="only"),
        "multi (<1MB redis, else shm)": lambda: MultiConnector([
            Route("small", RedisConnector(redis_url, prefix="route-m"), max_size=1_000_000),
            Route("large", SharedMemoryConnector(shm_dir, namespace="multi")),
        ]),
    }
    inputs = mixed_inputs(tasks)
    times: dict[str, list[float]] = {name: [] for name in arms}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        for _ in range(rounds):
            for name, make in arms.items():
                store = Store(f"route-{len(name)}", make())
                with StoreExecutor(client, store, Always(), close_engine=False) as ex:
                    list(ex.map(touch, inputs[:20], buffersize=8))  # warm-up
                    start = time.perf_counter()
                    results = list(ex.map(touch, inputs, buffersize=8))
                    times[name].append(time.perf_counter() - start)
                assert results[0] == 60
                store.close()
    print(f"\n## Mixed workload: {tasks} tasks, half 1 kB dicts and half 10 MB arrays "
          f"(Dask, 2 workers; median of {rounds})")
    base = statistics.median(times["redis only"])
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:30} {med:7.2f} s   {base / med:5.2f}x vs redis only")


def routing_cost(repeat: int = 20_000) -> None:
    frames = serialize({"k": 1})
    plain = LocalConnector()
    multi = MultiConnector([
        Route("a", LocalConnector(), max_size=10),
        Route("b", LocalConnector(), types=("numpy:ndarray",)),
        Route("c", plain, max_size=1_000_000),
    ])

    def loop(fn: Any) -> float:
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) / repeat

    direct = statistics.median(loop(lambda: plain.put(frames)) for _ in range(5))
    routed = statistics.median(
        loop(lambda: multi.put(frames, obj_type=dict, tags=())) for _ in range(5)
    )
    print(f"\n## Routing cost per put (3 routes, the third matches; median of 5 x {repeat})")
    print(f"direct put   {direct * 1e6:7.2f} us")
    print(f"routed put   {routed * 1e6:7.2f} us")
    print(f"routing      {(routed - direct) * 1e6:7.2f} us per put")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    routing_cost()
    with private_redis() as redis:
        makespan(redis.url, args.tasks, args.rounds)


if __name__ == "__main__":
    main()
