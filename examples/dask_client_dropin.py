"""The drop-in Dask client: Client(..., ps_store=store, ps_threshold=nbytes).

Run: python examples/dask_client_dropin.py [--mb 20]
"""

from __future__ import annotations

import argparse

import numpy as np
from distributed import LocalCluster, as_completed

from pxexec import Store, is_proxy
from pxexec.connectors import connector_from_url
from pxexec.engines.dask_client import Client


def column_sums(matrix: np.ndarray) -> np.ndarray:
    return matrix.sum(axis=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=float, default=20)
    args = parser.parse_args()
    rows = int(args.mb * 1e6 / 8 / 1000)
    matrices = [np.random.default_rng(i).random((rows, 1000)) for i in range(4)]
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Store("dropin-example", connector_from_url("shm")) as store, \
            Client(cluster, ps_store=store, ps_threshold=1_000_000) as client:
        futures = client.map(column_sums, matrices)  # each matrix goes by proxy
        for future in as_completed(futures):
            sums = future.result()
            print(f"{future.key[:24]}...: {sums.shape[0]} column sums, proxy={is_proxy(sums)}")
        again = client.submit(column_sums, matrices[0])  # pure: the same key, nothing stored
        print(f"same key as before: {again.key == futures[0].key}")


if __name__ == "__main__":
    main()
