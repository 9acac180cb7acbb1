"""Store put + get of a large numpy array on the node store, against one hot memcpy.

Prints medians and ratios; arms interleaved in one run. Run under the bench lock:

    flock /tmp/pxexec-bench.lock python benchmarks/node_store.py --size 100MB --reps 15
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np

from pxexec import Store
from pxexec.bench.common import parse_size
from pxexec.connectors.node import NodeConnector
from pxexec.connectors.shm import SharedMemoryConnector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=parse_size, default=100_000_000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="pxexec-node-bench-", dir="/dev/shm")
    try:
        run(args.size, args.reps, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(nbytes: int, reps: int, directory: str) -> None:
    source = np.random.default_rng(0).random(nbytes // 8)
    target = np.empty_like(source)
    node = Store("node-bench", NodeConnector(directory, namespace="node"))
    files = Store("shm-bench", SharedMemoryConnector(directory, namespace="files"))

    def memcpy() -> None:
        np.copyto(target, source)

    def put_get(store: Store) -> Callable[[], None]:
        def trip() -> None:
            key = store.put(source)
            out = store.get(key)
            assert out.shape == source.shape and out[-1] == source[-1]
            del out
            store.evict(key)
        return trip

    def empty_seal() -> None:  # build the array in the store, then publish it
        arr = node.empty(source.shape)
        np.copyto(arr, source)
        key = node.seal(arr)
        out = node.get(key)
        assert out[-1] == source[-1]
        del out, arr
        node.evict(key)

    arms = {"hot memcpy": memcpy, "node put+get": put_get(node),
            "node empty+seal+get": empty_seal, "shm (file per object) put+get": put_get(files)}
    times: dict[str, list[float]] = {name: [] for name in arms}
    for rep in range(reps + 2):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            if rep >= 2:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["hot memcpy"])
    print(f"{nbytes / 1e6:.0f} MB float64 array, median of {reps}, arms interleaved")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:32s} {med * 1e3:8.2f} ms   {med / base:5.2f}x memcpy")
    print(f"  node store after the run: {node.connector.stats()}")
    node.close()
    files.close()


if __name__ == "__main__":
    main()
