"""Map-a-stored-object cost: Python's mmap (keeps a duplicate fd) vs pxexec's fd-free map.

Run: ``python benchmarks/map_private.py [--reps 200]`` (under ``flock
/tmp/pxexec-bench.lock``). Each sample opens a /dev/shm file, maps it
copy-on-write, closes the fd, reads one byte per page and drops the mapping;
arms alternate. Prints the median per arm and the ratio.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import tempfile
import time

from pxexec.connectors.file import map_private


def python_mmap(fd: int, size: int) -> memoryview:
    return memoryview(mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE,
                                prot=mmap.PROT_READ | mmap.PROT_WRITE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="pxexec-map-", dir="/dev/shm")
    try:
        for size in (100_000, 10_000_000):
            path = os.path.join(directory, "obj")
            with open(path, "wb") as f:
                f.write(os.urandom(size))
            samples: dict[str, list[float]] = {"python mmap": [], "pxexec map_private": []}
            arms = {"python mmap": python_mmap, "pxexec map_private": map_private}
            for rep in range(args.reps):
                for name in (list(arms) if rep % 2 else list(reversed(arms))):
                    start = time.perf_counter()
                    fd = os.open(path, os.O_RDONLY)
                    view = arms[name](fd, size)
                    os.close(fd)
                    sum(view[::4096])
                    view.release()
                    samples[name].append(time.perf_counter() - start)
            medians = {n: statistics.median(s) for n, s in samples.items()}
            base = medians["python mmap"]
            print(f"## {size / 1e6:g} MB, median of {args.reps}")
            for name, value in medians.items():
                print(f"{name:<20} {value * 1e6:9.1f} us  (x{value / base:.2f})")
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


if __name__ == "__main__":
    main()
