"""Foundation figures: serializer vs pickle vs one memory copy; connector put/get; proxies.

Run: ``python benchmarks/foundation.py [--size-mb 100] [--redis-url URL] [--repeat 5]``
(without ``--redis-url`` a private redis-server is started on a free port).
Prints medians of ``--repeat`` runs and ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pxexec import Store
from pxexec.bench.private_redis import redis_url
from pxexec.codec.serialize import deserialize, serialize
from pxexec.connectors import connector_from_url
from pxexec.proxy import resolve


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def objects(nbytes: int) -> dict[str, Any]:
    import pandas as pd
    import polars as pl

    rng = np.random.default_rng(0)
    n = nbytes // 8
    arr = rng.random(n)
    cols = 10
    rows = n // cols
    data = {f"c{i}": rng.random(rows) for i in range(cols)}
    return {"numpy": arr, "pandas": pd.DataFrame(data), "polars": pl.DataFrame(data)}


def serializer_table(nbytes: int, repeat: int) -> None:
    print(f"\n## serialize + deserialize, {nbytes / 1e6:.0f} MB (median of {repeat})")
    print(f"{'object':8} {'pxexec':>10} {'pickle':>10} {'memcpy':>10} {'vs pickle':>10} "
          f"{'vs memcpy':>10}")
    for name, obj in objects(nbytes).items():
        raw = np.empty(nbytes, dtype=np.uint8)
        src = np.frombuffer(obj.tobytes() if name == "numpy" else bytes(nbytes), np.uint8)

        def ours(obj: Any = obj) -> None:
            deserialize(serialize(obj))

        def pickled(obj: Any = obj) -> None:
            pickle.loads(pickle.dumps(obj))

        def memcpy(src: Any = src, raw: Any = raw) -> None:
            np.copyto(raw, src)

        t_ours, t_pickle, t_copy = (best_of(f, repeat) for f in (ours, pickled, memcpy))
        print(f"{name:8} {t_ours * 1e3:9.2f}ms {t_pickle * 1e3:9.2f}ms {t_copy * 1e3:9.2f}ms "
              f"{t_pickle / t_ours:9.1f}x {t_ours / t_copy:9.2f}x")


def connector_table(nbytes: int, repeat: int, urls: dict[str, str]) -> None:
    arr = np.random.default_rng(1).random(nbytes // 8)
    raw = np.empty_like(arr)
    t_copy = best_of(lambda: np.copyto(raw, arr), repeat)
    print(f"\n## put + get of a {nbytes / 1e6:.0f} MB array (median of {repeat}); "
          f"one memory copy = {t_copy * 1e3:.2f} ms")
    print(f"{'connector':9} {'put':>10} {'get':>10} {'get+sum':>10} {'put+get/memcpy':>15}")
    for name, url in urls.items():
        store = Store(f"bench-{name}", connector_from_url(url), cache_size=0)
        keys: list[str] = []

        def put(store: Store = store, keys: list[str] = keys) -> None:
            if keys:  # steady state: the previous object is freed first (not timed)
                store.evict(keys.pop())
            keys.append(store.put(arr))

        put()  # warm-up: first touch of fresh memory is slow on VMs
        t_put = best_of(put, repeat)
        key = keys[-1]
        t_get = best_of(lambda store=store, key=key: store.get(key), repeat)
        t_use = best_of(lambda store=store, key=key: store.get(key).sum(), repeat)
        t_sum = best_of(lambda: arr.sum(), repeat)
        store.evict_batch(keys)
        store.close()
        print(f"{name:9} {t_put * 1e3:9.2f}ms {t_get * 1e3:9.2f}ms "
              f"{(t_use - t_sum) * 1e3:9.2f}ms {(t_put + t_get) / t_copy:14.2f}x")
    print("(get+sum: get, then touch every byte, minus the time of the sum alone)")


def proxy_table(repeat: int, urls: dict[str, str]) -> None:
    print(f"\n## proxy creation and first resolution (median of {repeat})")
    print(f"{'connector':9} {'size':>7} {'create':>10} {'resolve':>10} {'pickled':>8}")
    for name, url in urls.items():
        store = Store(f"proxy-{name}", connector_from_url(url), cache_size=0)
        for label, nbytes in (("1kB", 1000), ("1MB", 10**6), ("100MB", 10**8)):
            obj = np.random.default_rng(2).random(nbytes // 8)
            creates, resolves = [], []
            size = 0
            for _ in range(repeat + 1):  # the first round is a warm-up
                gc.collect()
                start = time.perf_counter()
                proxy = store.proxy(obj)
                creates.append(time.perf_counter() - start)
                data = pickle.dumps(proxy)
                size = len(data)
                remote = pickle.loads(data)  # as a worker receives it: unresolved
                start = time.perf_counter()
                resolve(remote)
                resolves.append(time.perf_counter() - start)
                store.evict(proxy.__px_factory__.key)
                del proxy, remote
            t_create = statistics.median(creates[1:])
            t_resolve = statistics.median(resolves[1:])
            print(f"{name:9} {label:>7} {t_create * 1e3:9.3f}ms "
                  f"{t_resolve * 1e3:9.3f}ms {size:7d}B")
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    nbytes = int(args.size_mb * 1e6)
    tmp = tempfile.mkdtemp(prefix="pxexec-bench-")
    with redis_url(args.redis_url) as url:
        urls = {"shm": "shm", "file": f"file://{tmp}", "redis": url}
        serializer_table(nbytes, args.repeat)
        connector_table(nbytes, args.repeat, urls)
        proxy_table(args.repeat, urls)


if __name__ == "__main__":
    main()
