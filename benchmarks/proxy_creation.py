"""Cost of making a proxy, of unpickling one, and of a small task with a proxied input.

Run under the benchmark lock, and against another checkout with PYTHONPATH to compare:
    flock /tmp/pxexec-bench.lock .venv/bin/python benchmarks/proxy_creation.py
"""

from __future__ import annotations

import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pxexec import Store, StoreExecutor
from pxexec.connectors.local import LocalConnector
from pxexec.policies import SizeAtLeast
from pxexec.proxy import Proxy, ProxyInfo


def _best(fn: Any, n: int, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - start) / n)
    return min(times)


def _rows(x: Any) -> Any:
    return {"n": 1, "rows": [{"i": i} for i in range(100)]}


def main() -> None:
    arr = np.zeros(10)
    info = ProxyInfo.of(arr, token="k")
    store = Store("bench-proxy-creation", LocalConnector())
    data = pickle.dumps(store.proxy(arr))
    made = _best(lambda: Proxy(lambda: arr, info=info), 200_000)
    loaded = _best(lambda: pickle.loads(data), 100_000)
    big = np.zeros(200_000)
    with StoreExecutor(ThreadPoolExecutor(1), store, should_proxy=SizeAtLeast(1_000_000)) as ex:
        for _ in range(50):
            ex.submit(_rows, big).result()
        task = _best(lambda: ex.submit(_rows, big).result(), 300)
    print(f"Proxy(): {made * 1e9:.0f} ns; unpickle a store proxy: {loaded * 1e9:.0f} ns; "
          f"task with a proxied input returning 100 rows: {task * 1e6:.0f} us")


if __name__ == "__main__":
    main()
