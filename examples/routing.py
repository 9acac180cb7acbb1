"""A MultiConnector: small objects to Redis, large arrays to shared memory.

Run: python examples/routing.py [--redis-url redis://host:port/0]
(without --redis-url a private redis-server is started, if one is installed)
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pxexec import Store, StoreExecutor
from pxexec.bench.private_redis import redis_url
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.policies import SizeAtLeast


def describe(obj: object) -> str:
    return f"{obj.__class__.__name__} of {getattr(obj, 'nbytes', len(str(obj)))} bytes"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    with redis_url(args.redis_url) as url:
        multi = MultiConnector([
            Route("small", RedisConnector(url, prefix="routing-example"), max_size=1_000_000),
            Route("arrays", SharedMemoryConnector(namespace="routing"), types=("numpy:ndarray",)),
        ])
        with Store("routing-example", multi) as store, \
                StoreExecutor(ThreadPoolExecutor(2), store, SizeAtLeast(10_000)) as ex:
            for obj in ({f"k{i}": i for i in range(2000)}, np.ones(2_000_000)):
                key = store.put(obj)
                print(f"{describe(obj):30} -> backend {key.split(':')[0]!r}")
                store.evict(key)
            print(ex.submit(describe, np.ones(500_000)).result())


if __name__ == "__main__":
    main()
