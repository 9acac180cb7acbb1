"""StoreExecutor on a Dask LocalCluster: large arrays travel by proxy through shared memory.

Run: python examples/dask_store_executor.py [--mb 50] [--tasks 8]
"""

from __future__ import annotations

import argparse

import numpy as np
from distributed import Client, LocalCluster

from pxexec import Store, StoreExecutor
from pxexec.connectors import connector_from_url
from pxexec.policies import SizeAtLeast


def normalize(block: np.ndarray) -> np.ndarray:
    return (block - block.mean()) / (block.std() + 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--tasks", type=int, default=8)
    args = parser.parse_args()
    n = int(args.mb * 1e6 / 8)
    blocks = [np.random.default_rng(i).random(n) for i in range(args.tasks)]

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client, Store("dask-example", connector_from_url("shm")) as store:
        with StoreExecutor(client, store, should_proxy=SizeAtLeast(1_000_000),
                           close_engine=False) as ex:
            # results are OwnedProxy objects: freed from the store when dropped
            for i, result in enumerate(ex.map(normalize, blocks)):
                print(f"block {i}: mean {float(result.mean()):+.2e}, std {float(result.std()):.3f}")
            total = ex.submit(np.sum, ex.submit(normalize, blocks[0]))  # a future as argument
            print(f"sum of a normalized block: {float(total.result()):+.2e}")
            del total, result  # owners free their objects when dropped
        print(f"objects left in the store: {len(store.connector.keys())}")


if __name__ == "__main__":
    main()
