"""Per-task cost of StoreExecutor for below-threshold arguments, and the Redis floor.

Run: ``python benchmarks/overhead.py [--tasks 20000] [--redis-url URL] [--mb 100]``

1. Client-side cost per task of the policy check and wrapping, for small arguments
   that are not proxied: StoreExecutor.submit on an engine whose submit runs the
   function inline, minus the same engine's submit alone (median of 5 batches).
2. What Redis itself needs to move N bytes (SET then GET, with redis-py and with
   pxexec's connector on raw bytes), against a pxexec round trip through Redis
   (put + get each way) of a numpy array of the same size.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pxexec import Store
from pxexec.bench.private_redis import redis_url
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import SizeAtLeast


class Inline(cf.Executor):
    """An engine that runs each task at once in the caller (no scheduling cost)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def task(a: Any, b: Any, c: Any) -> int:
    return 1


def per_task_overhead(tasks: int) -> None:
    engine = Inline()
    store = Store("overhead", LocalConnector())
    ex = StoreExecutor(engine, store, SizeAtLeast(100_000), close_engine=False)
    args = (np.ones(100), "label", {"k": 1})

    def plain() -> None:
        for _ in range(tasks):
            engine.submit(task, *args).result()

    def wrapped() -> None:
        for _ in range(tasks):
            ex.submit(task, *args).result()

    def batch(fn: Callable[[], None]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) / tasks

    plain_t = statistics.median(batch(plain) for _ in range(5))
    wrapped_t = statistics.median(batch(wrapped) for _ in range(5))
    policy = SizeAtLeast(100_000)
    check_t = statistics.median(
        _loop(lambda: [policy(a) for a in args], tasks) for _ in range(5)
    )
    print("\n## StoreExecutor cost per task, 3 small arguments (not proxied)")
    print(f"engine submit alone         {plain_t * 1e6:8.2f} us")
    print(f"StoreExecutor submit        {wrapped_t * 1e6:8.2f} us")
    print(f"added per task              {(wrapped_t - plain_t) * 1e6:8.2f} us")
    print(f"  of which policy checks    {check_t * 1e6:8.2f} us")


def _loop(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def redis_floor(url: str, nbytes: int, repeat: int = 5) -> None:
    import redis

    client = redis.Redis.from_url(url)
    raw = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
    data = raw.tobytes()
    connector = RedisConnector(url, prefix="floor")
    store = Store("floor", RedisConnector(url, prefix="floor-store"), cache_size=0)

    def redis_py() -> None:
        client.set("pxexec-floor", data)
        client.get("pxexec-floor")

    def connector_raw() -> None:
        key = connector.put([data])
        connector.get(key)
        connector.evict(key)

    def pxexec_trip() -> None:
        key = store.put(raw)
        store.get(key)
        store.evict(key)

    times = {}
    for name, fn in (("redis-py SET+GET", redis_py), ("connector SET+GET", connector_raw),
                     ("pxexec put+get", pxexec_trip)):
        fn()
        times[name] = statistics.median(_loop(fn, 1) for _ in range(repeat))
    client.delete("pxexec-floor")
    print(f"\n## Redis: moving {nbytes / 1e6:g} MB one way (SET then GET), median of {repeat}")
    for name, t in times.items():
        print(f"{name:22} {t * 1e3:8.1f} ms")
    floor = min(times["redis-py SET+GET"], times["connector SET+GET"])
    print(f"pxexec / fastest floor  {times['pxexec put+get'] / floor:8.2f}x")


def signing_cost(repeat: int = 7) -> None:
    import os
    import tempfile

    from pxexec.connectors.shm import SharedMemoryConnector

    os.environ.setdefault("PXEXEC_BENCH_SECRET", "benchmark-secret")
    directory = tempfile.mkdtemp(prefix="pxexec-sign-", dir="/dev/shm")
    plain = Store("sign-off", SharedMemoryConnector(directory, namespace="off"))
    signed = Store("sign-on", SharedMemoryConnector(directory, namespace="on"),
                   secret_env="PXEXEC_BENCH_SECRET")
    print(f"\n## Signing (HMAC-SHA256): put + get + touch on shm, median of {repeat}")
    for nbytes in (1_000_000, 100_000_000):
        arr = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        times = {}
        for name, store in (("unsigned", plain), ("signed", signed)):
            def trip(store: Store = store, arr: Any = arr) -> None:
                key = store.put(arr)
                int(store.get(key)[-1])
                store.evict(key)

            trip()
            times[name] = statistics.median(_loop(trip, 1) for _ in range(repeat))
        added = times["signed"] - times["unsigned"]
        print(f"{nbytes / 1e6:5g} MB  unsigned {times['unsigned'] * 1e3:8.2f} ms  signed "
              f"{times['signed'] * 1e3:8.2f} ms  (+{added * 1e3:.2f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--mb", type=float, default=100)
    args = parser.parse_args()
    per_task_overhead(args.tasks)
    signing_cost()
    with redis_url(args.redis_url) as url:
        for mb in sorted({1.0, 10.0, args.mb}):
            redis_floor(url, int(mb * 1e6))


if __name__ == "__main__":
    main()
