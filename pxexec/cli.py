"""The ``pxexec`` command line: ``pxexec bench [workload] [options]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from pxexec.bench.common import parse_size, write_csv, write_rows

WORKLOADS = ("roundtrip", "throughput")


def _sizes(text: str) -> list[int]:
    return [parse_size(part) for part in text.split(",") if part]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def _words(text: str) -> list[str]:
    return [part for part in text.split(",") if part]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pxexec", description="pass-by-proxy for executors")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser(
        "bench",
        help="compare the plain engine with pxexec on the same workers",
        description=(
            "Without a workload: a short round-trip comparison on the embedded default "
            "(Dask when installed, else a process pool; the shm connector)."
        ),
    )
    bench.add_argument("workload", nargs="?", choices=WORKLOADS, default=None)
    bench.add_argument("--engine", default=None,
                       help="dask, process, thread or parsl (default: dask if installed)")
    bench.add_argument("--workers", type=_ints, default=None,
                       help="comma-separated worker counts (default 2; throughput: 1,2)")
    bench.add_argument("--connector", action="append", default=None,
                       help="connector URL, repeatable ('redis' starts a private server); "
                            "default shm")
    bench.add_argument("--config", default=None,
                       help="TOML config whose store and policy form the pxexec arm")
    bench.add_argument("--threshold", type=parse_size, default=1_000_000,
                       help="proxy objects of at least this size (default 1MB)")
    bench.add_argument("--sizes", type=_sizes, default=None,
                       help="roundtrip payload sizes, e.g. 10kB,1MB,100MB")
    bench.add_argument("--kinds", type=_words, default=["numpy", "bytes"],
                       help="roundtrip payload kinds: numpy,bytes")
    bench.add_argument("--modes", type=_words, default=["fresh", "input"],
                       help="roundtrip outputs: fresh (new object) and/or input (returned)")
    bench.add_argument("--size", type=parse_size, default=1_000_000,
                       help="throughput: bytes in and out per task (default 1MB)")
    bench.add_argument("--tasks", type=int, default=1000, help="throughput: number of tasks")
    bench.add_argument("--reps", type=int, default=5, help="roundtrip repetitions per point")
    bench.add_argument("--out", default="bench-out", help="directory for CSV files")
    gc_cmd = sub.add_parser(
        "gc",
        help="delete objects whose owner process died (expired leases)",
        description=(
            "Reap expired objects of a file or shm store: objects of owners whose lease "
            "heartbeat stopped, and objects nobody holds that are older than the lease. "
            "Redis expires them by itself (key TTLs)."
        ),
    )
    gc_cmd.add_argument("connector", nargs="?", default=None,
                        help="connector URL (e.g. shm, file:///scratch/px)")
    gc_cmd.add_argument("--lease", type=float, default=None,
                        help="lease period in seconds used by the store's processes")
    gc_cmd.add_argument("--namespace", default=None, help="store namespace (file/shm)")
    gc_cmd.add_argument("--config", default=None, help="a TOML config naming the store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return bench(args)
    if args.command == "gc":
        return collect(args)
    return 2  # pragma: no cover - argparse requires a command


def collect(args: argparse.Namespace) -> int:
    from pxexec.connectors import connector_from_url
    from pxexec.lease import lease_of

    if args.config:
        from pxexec.config import load

        connector = load(args.config).store.connector
    elif args.connector:
        options: dict[str, Any] = {}
        if args.namespace:
            options["namespace"] = args.namespace
        if args.lease is not None and not args.connector.startswith(("redis", "unix")):
            options["lease"] = args.lease
        connector = connector_from_url(args.connector, **options)
    else:
        print("pxexec gc: name a connector URL or --config FILE", file=sys.stderr)
        return 2
    if lease_of(connector) is None:
        print("pxexec gc: this store has no lease period; pass --lease SECONDS "
              "(the period its processes use)", file=sys.stderr)
        return 2
    removed = getattr(connector, "reaped_on_start", 0) + connector.reap()
    print(f"pxexec gc: removed {removed} expired object(s)")
    return 0


def bench(args: argparse.Namespace) -> int:
    from pxexec.bench import roundtrip, throughput
    from pxexec.bench.common import progress
    from pxexec.bench.engines import default_engine, session, stores
    from pxexec.policies import SizeAtLeast

    engine = args.engine or default_engine()
    urls = args.connector or ["shm"]
    policy: Any = SizeAtLeast(args.threshold)
    config_store = None
    if args.config:
        from pxexec.config import load

        loaded = load(args.config)
        policy, config_store = loaded.policy, loaded.store
    workload = args.workload or "roundtrip"
    quick = args.workload is None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out, exist_ok=True)
    with stores([] if config_store else urls) as arms:
        if config_store is not None:
            arms = {f"pxexec-{config_store.name}": config_store}
        if workload == "roundtrip":
            sizes = args.sizes or [10_000, 1_000_000, 10_000_000, 100_000_000]
            kinds = ["numpy"] if quick else args.kinds
            modes = ["fresh"] if quick else args.modes
            workers = (args.workers or [2])[0]
            points = len(sizes) * len(kinds) * len(modes) * (args.reps + 2) * (len(arms) + 1)
            print(f"pxexec bench roundtrip: {engine} with {workers} workers, arms: plain, "
                  f"{', '.join(arms)}", flush=True)
            with session(engine, workers) as sess, progress(points, "roundtrip") as bar:
                records = roundtrip.run(sess, arms, policy, sizes=sizes, kinds=kinds,
                                        modes=modes, reps=args.reps, progress=bar)
            header, rows = roundtrip.report(
                records, f"Round trip of one no-op task ({engine}, {workers} workers), "
                         f"median of {args.reps}")
        else:
            records = []
            for workers in args.workers or [1, 2]:
                print(f"pxexec bench throughput: {engine} with {workers} workers, "
                      f"{args.tasks} tasks of {args.size} bytes", flush=True)
                with session(engine, workers) as sess, \
                        progress(args.tasks * (len(arms) + 1), "throughput") as bar:
                    records += throughput.run(sess, arms, policy, nbytes=args.size,
                                              tasks=args.tasks, progress=bar)
            header, rows = throughput.report(records, f"Throughput ({engine})")
    write_csv(os.path.join(args.out, f"{workload}-{engine}-{stamp}.csv"), records)
    write_rows(os.path.join(args.out, f"{workload}-{engine}-{stamp}-summary.csv"), header, rows)
    print(f"\nrecords and summary written to {args.out}/", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
