"""Owned and borrowed proxies, moves into tasks, and crash-safe leases.

Run: python examples/ownership_and_leases.py
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np

from pxexec import Store, StoreExecutor
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.store.ownership import OwnershipError, borrow, mut_borrow, update


def total(x: np.ndarray) -> float:
    return float(x.sum())


def main() -> None:
    # lease=30: if this process dies, its objects expire 30 s later (pxexec gc, or any
    # live process using the store, removes them)
    store = Store("ownership-example", SharedMemoryConnector(namespace="example", lease=30))
    with StoreExecutor(ProcessPoolExecutor(2), store) as ex:
        weights = store.owned_proxy(np.ones(1_000_000))
        print("sum via a borrow:", ex.submit(total, borrow(weights)).result())
        editable = mut_borrow(weights)  # the task's borrow ended with its future
        editable *= 2
        update(editable)  # write the change back under the same key
        del editable
        print("sum after update:", ex.submit(total, borrow(weights)).result())
        print("sum via a move:", ex.submit(total, weights).result())
        try:
            len(weights)
        except OwnershipError as error:
            print("the moved owner is unusable:", str(error).split(";")[0])
    print("objects left:", len(store.connector.keys()))
    store.close()


if __name__ == "__main__":
    main()
