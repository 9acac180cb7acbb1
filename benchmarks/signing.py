"""The cost of signed payloads: store level and on a Dask round trip.

Run: ``python benchmarks/signing.py [--reps 7]`` (a 2-worker Dask LocalCluster, shm).
Arms in one run: unsigned, Poly1305 (the default with ``cryptography``), HMAC-SHA256.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

from pxexec import Store
from pxexec.bench import roundtrip
from pxexec.bench.arms import Arm, PxexecArm
from pxexec.bench.engines import session
from pxexec.codec.signing import Signer
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.policies import SizeAtLeast

SECRET = "PXEXEC_BENCH_SECRET"


def stores(directory: str) -> dict[str, Store]:
    os.environ.setdefault(SECRET, "benchmark secret")
    made = {
        "unsigned": Store("sig-off", SharedMemoryConnector(directory, namespace="off")),
        "poly1305": Store("sig-poly", SharedMemoryConnector(directory, namespace="poly"),
                          secret_env=SECRET),
        "hmac-sha256": Store("sig-hmac", SharedMemoryConnector(directory, namespace="hmac"),
                             secret_env=SECRET),
    }
    made["hmac-sha256"]._signer = Signer(os.environ[SECRET].encode(), fast=False)
    return made


def store_level(made: dict[str, Store], reps: int) -> None:
    print(f"## put + get + touch one byte, shm, median of {reps}")
    for nbytes in (1_000_000, 100_000_000):
        arr = np.random.default_rng(0).integers(0, 255, nbytes, dtype=np.uint8)
        times = {}
        for name, store in made.items():
            samples = []
            for _ in range(reps + 1):
                start = time.perf_counter()
                key = store.put(arr)
                int(store.get(key)[-1])
                store.evict(key)
                samples.append(time.perf_counter() - start)
            times[name] = statistics.median(samples[1:])
        base = times["unsigned"]
        print(f"{nbytes / 1e6:5g} MB  " + "  ".join(
            f"{n} {t * 1e3:7.2f} ms ({(t - base) / base * 100:+.0f}%)" for n, t in times.items()))


def dask_round_trip(made: dict[str, Store], reps: int) -> None:
    with session("dask", 2) as sess:
        arms: list[Arm] = [Arm(sess)]
        arms += [PxexecArm(sess, f"pxexec-{name}", store, SizeAtLeast(1_000_000))
                 for name, store in made.items()]
        records = roundtrip.run(arms, sizes=[1_000_000, 100_000_000], kinds=["numpy"],
                                modes=["fresh"], reps=reps)
        for arm in arms:
            arm.close()
    header, rows = roundtrip.report(records, f"Dask round trip, numpy, median of {reps}")
    medians = {h[:-3]: i for i, h in enumerate(header) if h.endswith(" ms")}
    for row in rows:
        base = row[medians["pxexec-unsigned"]]
        for name in ("pxexec-poly1305", "pxexec-hmac-sha256"):
            value = row[medians[name]]
            print(f"{row[2]:>6}  {name:<20} signing adds {(value - base) / base * 100:+.1f}% "
                  f"({(value - base):+.2f} ms) to the round trip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="pxexec-sign-", dir="/dev/shm")
    made = stores(directory)
    store_level(made, args.reps)
    dask_round_trip(made, args.reps)
    for store in made.values():
        store.close()


if __name__ == "__main__":
    main()
