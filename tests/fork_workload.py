"""A fork process pool used by 8 submitting threads at once (run as a script).

``python -m tests.fork_workload CONFIG_JSON`` builds a store from the connector
config, then each of 8 threads repeatedly makes a fork ProcessPoolExecutor, wraps
it in a StoreExecutor and runs tasks whose inputs and results go through the store,
so that children are forked while other threads (and three that only read a small
object in a loop) hold pxexec's and the backend client's locks. Prints "ok" and
exits 0 when every result is right.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import sys
import threading

import numpy as np

from pxexec import Store, StoreExecutor
from pxexec.connectors import connector_from_config
from pxexec.policies import SizeAtLeast
from tests import workers

THREADS = 8
ROUNDS = 4
HAMMERS = 3


def main() -> int:
    store = Store("fork-workload", connector_from_config(json.loads(sys.argv[1])))
    context = multiprocessing.get_context("fork")
    errors: list[BaseException] = []

    def submitter(index: int) -> None:
        try:
            for round_ in range(ROUNDS):
                value = float(index * ROUNDS + round_)
                pool = cf.ProcessPoolExecutor(1, mp_context=context)
                with StoreExecutor(pool, store, should_proxy=SizeAtLeast(1000)) as ex:
                    futures = [ex.submit(workers.double, np.full(2000, value)) for _ in range(3)]
                    for future in futures:
                        result = future.result(timeout=60)
                        assert float(result.sum()) == 4000 * value, float(result.sum())
                        ex.free(result)
                # objects put while other threads fork
                store.evict(store.put(np.full(5000, value)))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    stop = threading.Event()
    small = store.put(b"small")

    def hammer() -> None:  # keeps the client's and the store's locks busy
        while not stop.is_set():
            store.exists(small)
            store.get(small)

    hammers = [threading.Thread(target=hammer, daemon=True) for _ in range(HAMMERS)]
    threads = [threading.Thread(target=submitter, args=(i,)) for i in range(THREADS)]
    for thread in hammers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    for thread in hammers:
        thread.join()
    store.evict(small)
    if errors:
        print("failed:", repr(errors[0]), flush=True)
        return 1
    print("ok", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
