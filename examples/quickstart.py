"""Proxy a large array through a process pool on the shared-memory connector.

Run: python examples/quickstart.py [--mb 200]
The worker receives a ~400-byte proxy instead of the array, and maps the array
from /dev/shm without a copy when it first touches it.
"""

from __future__ import annotations

import argparse
import pickle
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from pxexec import Store
from pxexec.connectors import connector_from_url


def column_means(data: np.ndarray) -> np.ndarray:
    return data.mean(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=200)
    args = parser.parse_args()
    rows = int(args.mb * 1e6 / 8 / 100)
    data = np.random.default_rng(0).random((rows, 100))

    with Store("quickstart", connector_from_url("shm")) as store, ProcessPoolExecutor(2) as pool:
        pool.submit(int, 0).result()  # start the workers before timing
        start = time.perf_counter()
        plain = pool.submit(column_means, data).result()
        t_plain = time.perf_counter() - start

        start = time.perf_counter()
        proxy = store.proxy(data)
        proxied = pool.submit(column_means, proxy).result()
        t_proxy = time.perf_counter() - start
        store.evict(proxy.__px_factory__.key)

    assert np.allclose(plain, proxied)
    print(f"{data.nbytes / 1e6:.0f} MB array, one task in a process pool:")
    size = len(pickle.dumps(proxy))
    print(f"  by value: {t_plain * 1e3:8.1f} ms   (pickled arg {data.nbytes / 1e6:.0f} MB)")
    print(f"  by proxy: {t_proxy * 1e3:8.1f} ms   (pickled arg {size} B)")
    print(f"  speed-up: {t_plain / t_proxy:.1f}x")


if __name__ == "__main__":
    main()
