"""Across hosts on the simulated cluster (pxexec.testbed): plain Dask vs pxexec.

Hosts: the head (this process: client and Dask scheduler), n1 and n2 (one Dask worker
process each), store (redis-server). Arms, interleaved, first arm rotating:

- ``dask``: plain Dask (the array is a task argument; the result is gathered);
- ``pxexec-node``: StoreExecutor on the file-per-object store (``shm-files``) with
  direct transfer (each received object lands in a new tmpfs file);
- ``pxexec-arena``: StoreExecutor on the node store (``shm``: pre-mapped arena
  segments) with direct transfer (served with sendfile from the segment, received
  with recv_into reserved arena space), whose reads are private copy-on-write maps;
- ``pxexec-view``: the same with read-only views (``node``: ``reads="view"``);
- ``pxexec-redis``: StoreExecutor on Redis on the store host.

Workloads: 100 MB round trip (worker on n1), fan-out (one 100 MB object, 4 tasks on 2
hosts; plain Dask scatters it once), pipeline (make 100 MB on n1 with ``np.full`` -> 4
consumers on 2 hosts -> reduce), pipeline-in-store (the same, the array built with
``current_store().empty``: in the node store's arena, in the worker's memory for plain
Dask), each unshaped and at 10 Gbit/s; bytes per link end from the veth
counters. Faults: the producer host's processes killed, the link down and up (time to
a clear error, then whether the next tasks succeed). Finally, objects left per host.

Run as root, under the bench lock:
    flock /tmp/pxexec-bench.lock .venv/bin/python benchmarks/multihost.py --reps 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pxexec import Store, StoreExecutor
from pxexec.connectors.node import NodeConnector, ShmConnector
from pxexec.connectors.node_transfer.server import stop_server
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.policies import SizeAtLeast
from pxexec.store.ownership import borrow
from pxexec.testbed import TestBed, can_build

MB = 1 << 20
HOSTS = ("n1", "n2")


def double(x: Any) -> Any:
    return x * 2


def total(x: Any) -> float:
    return float(np.asarray(x).sum())


def make(nbytes: int, seed: int) -> Any:
    return np.full(nbytes // 8, float(seed))


def make_in_store(nbytes: int, seed: int) -> Any:
    """``make``, building the array in the worker's store where there is one (a node
    store's arena: the result is published without the copy a put makes)."""
    from pxexec import current_store

    store = current_store()
    out = store.empty(nbytes // 8) if store is not None else np.empty(nbytes // 8)
    out[:] = float(seed)
    return out


def add_all(*values: float) -> float:
    return float(sum(values))


class Arms:
    def __init__(self, client: Any, workers: dict[str, str], stores: dict[str, Store]) -> None:
        self.client = client
        self.workers = workers
        self.executors = {arm: StoreExecutor(client, store, SizeAtLeast(MB), close_engine=False)
                          for arm, store in stores.items()}

    def executor(self, arm: str) -> StoreExecutor:
        return self.executors[arm]

    def at(self, arm: str, host: str) -> Any:
        return self.executor(arm).options(workers=[self.workers[host]])

    def roundtrip(self, arm: str, data: Any) -> None:
        if arm == "dask":
            out = self.client.submit(double, data, workers=[self.workers["n1"]],
                                     pure=False).result()
        else:
            out = np.asarray(self.at(arm, "n1").submit(double, data).result())
        assert out.shape == data.shape and out[-1] == data[-1] * 2

    def fanout(self, arm: str, data: Any) -> None:
        want = float(data.sum())
        targets = ["n1", "n2", "n1", "n2"]
        if arm == "dask":
            shared = self.client.scatter(data, workers=[self.workers["n1"]])
            futures = [self.client.submit(total, shared, workers=[self.workers[h]],
                                          pure=False) for h in targets]
            got = [f.result() for f in futures]
            del shared, futures
        else:
            store = self.executor(arm).store
            with store.owned_proxy(data) as owner:
                futures = [self.at(arm, h).submit(total, borrow(owner)) for h in targets]
                got = [f.result() for f in futures]
                del futures
        assert np.allclose(got, want), (arm, got, want)

    def pipeline(self, arm: str, nbytes: int, seed: int, maker: Callable[[int, int], Any] = make
                 ) -> None:
        targets = ["n1", "n2", "n1", "n2"]
        if arm == "dask":
            c, w = self.client, self.workers
            made = c.submit(maker, nbytes, seed, workers=[w["n1"]], pure=False)
            parts = [c.submit(total, made, workers=[w[h]], pure=False) for h in targets]
            result = c.submit(add_all, *parts, workers=[w["n1"]], pure=False).result()
            del made, parts
        else:
            made = self.at(arm, "n1").submit(maker, nbytes, seed)
            parts = [self.at(arm, h).submit(total, made) for h in targets]
            result = self.at(arm, "n1").submit(add_all, *parts).result()
            del made, parts
        assert result == 4 * seed * (nbytes // 8), (arm, result)

    def settle(self) -> None:
        for ex in self.executors.values():
            ex.flush()


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def link_totals(bed: TestBed) -> dict[str, tuple[int, int]]:
    return {h: bed.link_bytes(h) for h in (*HOSTS, "store")}


def measure(bed: TestBed, arms: Arms, names: list[str], reps: int, nbytes: int,
            label: str, workloads: list[str]) -> list[str]:
    rows = []
    data = np.random.default_rng(1).random(nbytes // 8)
    work: dict[str, Callable[[str, int], None]] = {
        "roundtrip": lambda arm, rep: arms.roundtrip(arm, data),
        "fan-out": lambda arm, rep: arms.fanout(arm, data),
        "pipeline": lambda arm, rep: arms.pipeline(arm, nbytes, rep + 2),
        "pipeline-in-store": lambda arm, rep: arms.pipeline(arm, nbytes, rep + 2, make_in_store),
    }
    for workload, run in work.items():
        if workloads and workload not in workloads:
            continue
        times: dict[str, list[float]] = {a: [] for a in names}
        moved: dict[str, dict[str, list[float]]] = {a: {} for a in names}
        for rep in range(-1, reps):  # one warm-up
            order = names[rep % len(names):] + names[:rep % len(names)]
            for arm in order:
                time.sleep(0.1)
                before = link_totals(bed)
                elapsed = timed(lambda arm=arm, run=run, rep=rep: run(arm, rep))
                after = link_totals(bed)
                arms.settle()
                if rep < 0:
                    continue
                times[arm].append(elapsed)
                for host in after:
                    rx = (after[host][0] - before[host][0]) / nbytes
                    tx = (after[host][1] - before[host][1]) / nbytes
                    moved[arm].setdefault(host, []).append(rx)
                    moved[arm].setdefault(host + " out", []).append(tx)
        base = statistics.median(times["dask"])
        for arm in names:
            med = statistics.median(times[arm])
            links = ", ".join(f"{h} {statistics.median(v):.2f}" for h, v in moved[arm].items()
                              if statistics.median(v) >= 0.05)
            rows.append(f"{label:9} {workload:17} {arm:13} {med * 1000:8.1f} ms "
                        f"{base / med:6.2f}x  link ends (x object): {links or '-'}")
    return rows


def faults(bed: TestBed, arms: Arms, scheduler: str, nbytes: int, env: dict[str, str],
           arm: str) -> list[str]:
    from pxexec.errors import NodeUnreachableError

    rows = []
    for fault in ("producer host killed", "link down, then up"):
        ex = arms.executor(arm)
        result = ex.options(workers=[arms.workers["n1"]]).submit(make, nbytes, 7).result()
        if fault.startswith("producer"):
            bed.kill_host("n1")
        else:
            bed.link("n1", False)
        start = time.perf_counter()
        try:
            np.asarray(result).sum()
            outcome = "no error (object was readable)"
        except NodeUnreachableError as exc:
            outcome = f"{type(exc).__name__} naming {exc.host!r}"
        elapsed = time.perf_counter() - start
        del result
        if fault.startswith("producer"):
            bed.start_dask_worker("n1", scheduler, env=env)
            arms.client.wait_for_workers(2, timeout=60)
            arms.workers.update(_workers(arms.client))
        else:
            bed.link("n1", True)
        ok = total(np.asarray(ex.options(workers=[arms.workers["n1"]]).submit(
            make, nbytes, 3).result())) == 3 * (nbytes // 8)
        ex.flush()
        rows.append(f"fault ({arm}): {fault:22} error after {elapsed:5.2f} s: {outcome}; "
                    f"next task {'succeeds' if ok else 'FAILS'}")
    return rows


def _workers(client: Any) -> dict[str, str]:
    return {info["name"].split("-")[0]: addr
            for addr, info in client.scheduler_info()["workers"].items()}


_ARENA_OBJECTS = (
    "import os, sqlite3, sys\n"
    "p = os.path.join(sys.argv[1], 'index.sqlite')\n"
    "n = 0\n"
    "if os.path.exists(p):\n"
    "    db = sqlite3.connect(p, timeout=30)\n"
    "    n = db.execute('SELECT COUNT(*) FROM objects').fetchone()[0]\n"
    "print(n)\n"
)


def objects_left(bed: TestBed, path: str, redis: Store) -> str:
    counts = {}
    for host in ("head", *HOSTS):
        names = bed.check_output(host, ["sh", "-c", f"ls {path}/node 2>/dev/null || true"]
                                 ).split()
        files = sum(1 for n in names if len(n) == 32)
        arena = sum(int(bed.check_output(host, [sys.executable, "-c", _ARENA_OBJECTS,
                                                os.path.join(path, ns)]))
                    for ns in ("arena", "view"))
        counts[host] = files + arena
    counts["store (redis)"] = len(redis.connector.keys())
    return "objects left: " + ", ".join(f"{h} {n}" for h, n in counts.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--rates", nargs="*", default=["unshaped", "10gbit"])
    parser.add_argument("--arms", nargs="*",
                        default=["dask", "pxexec-arena", "pxexec-view", "pxexec-node",
                                 "pxexec-redis"])
    parser.add_argument("--fault-arms", nargs="*", default=["pxexec-arena", "pxexec-node"])
    parser.add_argument("--streams", type=int, default=4,
                        help="transfer_streams of the node stores (connections per large pull)")
    parser.add_argument("--workloads", nargs="*", default=[],
                        help="roundtrip, fan-out, pipeline, pipeline-in-store (default: all)")
    args = parser.parse_args()
    reason = can_build()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    from distributed import Client

    nbytes = args.mb * MB
    bed = TestBed([*HOSTS, "store"]).up()
    path = tempfile.mkdtemp(prefix="pxexec-bench-mh-", dir="/dev/shm")
    network = bed.head_address.rsplit(".", 1)[0] + ".0/24"
    rows: list[str] = []
    try:
        url = bed.start_redis("store")
        scheduler = bed.start_dask_scheduler("head", port=18786)
        env = bed.env()
        for host in HOSTS:
            bed.start_dask_worker(host, scheduler, env=env)
        client = Client(scheduler, timeout=30)
        client.wait_for_workers(2, timeout=60)
        node = Store("bench-node", SharedMemoryConnector(path, namespace="node", transfer=True,
                                                        bind=network, replica_lease=3,
                                                        transfer_streams=args.streams))
        redis = Store("bench-redis", RedisConnector(url, prefix="bench-mh"), cache_size=0)
        arena = Store("bench-arena", ShmConnector(
            path, namespace="arena", transfer=True, bind=network, replica_lease=3,
            transfer_streams=args.streams,
            spill_directory=os.path.join(path, "spill")))  # /var/tmp is shared on the bed
        view = Store("bench-view", NodeConnector(
            path, namespace="view", transfer=True, bind=network, replica_lease=3,
            transfer_streams=args.streams, spill_directory=os.path.join(path, "spill-view")))
        stores = {"pxexec-arena": arena, "pxexec-view": view, "pxexec-node": node,
                  "pxexec-redis": redis}
        arms = Arms(client, _workers(client), {a: stores[a] for a in args.arms if a in stores})
        for rate in args.rates:
            for host in (*HOSTS, "store"):
                bed.shape(host, rate=None if rate == "unshaped" else rate)
            done = len(rows)
            rows += measure(bed, arms, args.arms, args.reps, nbytes, rate, args.workloads)
            for row in rows[done:]:
                print(row, flush=True)
        for host in (*HOSTS, "store"):
            bed.shape(host)
        for arm in args.fault_arms:
            if arm in arms.executors:
                for row in faults(bed, arms, scheduler, nbytes, env, arm):
                    print(row, flush=True)
        arms.settle()
        start = time.monotonic()  # frees that failed during the faults are retried
        clean = "objects left: head 0, n1 0, n2 0, store (redis) 0"
        while objects_left(bed, path, redis) != clean and time.monotonic() - start < 40:
            time.sleep(0.5)
        print(objects_left(bed, path, redis) + f" ({time.monotonic() - start:.1f} s after "
              "the last task)", flush=True)
        client.close()
    finally:
        bed.down()
        for sub in os.listdir(path):
            stop_server(os.path.join(path, sub))
        shutil.rmtree(path, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
