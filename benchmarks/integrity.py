"""What the XXH3 check of large frames costs: put + get of a numpy array on shm.

Run: python benchmarks/integrity.py [--mb 100] [--reps 7]

Arms, interleaved in one run: ``unchecked`` (no digest written or verified, as without
the integrity extra) and ``xxh3`` (digest on put, verified on get). ``get`` alone maps
the stored pages; ``get + sum`` also reads every byte, as a task would.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time

import numpy as np

from pxexec import Store
from pxexec.codec import integrity
from pxexec.connectors.shm import SharedMemoryConnector


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    array = np.random.default_rng(0).random(args.mb * 125_000)
    directory = tempfile.mkdtemp(prefix="pxexec-bench-integrity-", dir="/dev/shm")
    times: dict[tuple[str, str], list[float]] = {}
    try:
        _run(array, directory, args.reps, times)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"## put + get of a {args.mb} MB numpy array on shm, median of {args.reps}")
    for label in ("put + get", "put + get + sum"):
        plain = statistics.median(times[(label, "unchecked")]) * 1e3
        checked = statistics.median(times[(label, "xxh3")]) * 1e3
        print(f"{label:16s} unchecked {plain:7.1f} ms   xxh3 {checked:7.1f} ms   "
              f"ratio {checked / plain:.2f}")


def _run(array: np.ndarray, directory: str, reps: int,
         times: dict[tuple[str, str], list[float]]) -> None:
    with Store("integrity-bench", SharedMemoryConnector(directory), cache_size=0) as store:
        for rep in range(reps + 1):
            for arm in (("unchecked", "xxh3") if rep % 2 else ("xxh3", "unchecked")):
                integrity.HAVE_XXHASH = arm == "xxh3"
                for touch in (False, True):
                    start = time.perf_counter()
                    key = store.put(array)
                    got = store.get(key)
                    if touch:
                        float(got.sum())
                    elapsed = time.perf_counter() - start
                    del got
                    store.evict(key)
                    if rep:  # the first round warms up
                        label = "put + get + sum" if touch else "put + get"
                        times.setdefault((label, arm), []).append(elapsed)


if __name__ == "__main__":
    main()
