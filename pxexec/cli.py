"""The ``pxexec`` command line: ``pxexec bench [workload] [options]``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from pxexec.bench.common import parse_size, write_csv, write_rows

WORKLOADS = ("roundtrip", "throughput", "pipeline", "cholesky", "fedlearn", "moldesign")


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
                       help="comma-separated worker counts, one run each "
                            "(default 2; throughput: 1,2)")
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
    bench.add_argument("--size", type=_sizes, default=[1_000_000],
                       help="throughput: bytes in and out per task, e.g. 1kB,1MB (several "
                            "sizes take turns in one run; default 1MB)")
    bench.add_argument("--tasks", type=int, default=1000, help="throughput: number of tasks")
    bench.add_argument("--reps", type=int, default=None,
                       help="repetitions (roundtrip: per point, default 5; others: default 1)")
    bench.add_argument("--arm", action="append", choices=["proxystore", "ray"], default=None,
                       help="add a peer arm: proxystore (its StoreExecutor on a file store "
                            "in /dev/shm; pip install proxystore), ray (Ray on this machine "
                            "with the same CPUs; pip install 'pxexec[ray]')")
    bench.add_argument("--consumers", type=int, default=4,
                       help="pipeline: tasks that consume the made array (default 4)")
    bench.add_argument("--pipeline-size", type=parse_size, default=100_000_000,
                       help="pipeline: bytes of the made array (default 100MB)")
    bench.add_argument("--n", type=int, default=None, help="cholesky: matrix size (10000)")
    bench.add_argument("--block", type=int, default=None, help="cholesky: tile size (2500)")
    bench.add_argument("--clients", type=int, default=None, help="fedlearn: clients (8)")
    bench.add_argument("--rounds", type=int, default=None, help="fedlearn: rounds (3)")
    bench.add_argument("--samples", type=int, default=None,
                       help="fedlearn: samples per client (64)")
    bench.add_argument("--search", type=int, default=None,
                       help="moldesign: candidates to simulate (64)")
    bench.add_argument("--pool", type=int, default=None,
                       help="moldesign: candidates to score by inference (8192)")
    bench.add_argument("--out", default="bench-out",
                       help="directory for the CSV records, summary and PNG plot")
    bench.add_argument("--no-plot", action="store_true", help="do not draw the PNG plot")
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
    sweep = getattr(connector, "sweep", None)
    if lease_of(connector) is None and callable(sweep):  # the node store: liveness alone
        freed = getattr(connector, "swept_on_start", 0) + sweep()
        print(f"pxexec gc: freed {freed} object(s) that dead processes left "
              "(pass --lease SECONDS to also expire unheld objects)")
        if connector.trim():  # empty: the segments' memory goes back
            print("pxexec gc: the store is empty; its segments were deleted")
        return 0
    if lease_of(connector) is None:
        print("pxexec gc: this store has no lease period; pass --lease SECONDS "
              "(the period its processes use)", file=sys.stderr)
        return 2
    removed = getattr(connector, "reaped_on_start", 0) + connector.reap()
    print(f"pxexec gc: removed {removed} expired object(s)")
    return 0


def bench(args: argparse.Namespace) -> int:
    from pxexec.bench.engines import default_engine, stores
    from pxexec.policies import SizeAtLeast

    engine = args.engine or default_engine()
    workload = args.workload or "roundtrip"
    policy: Any = SizeAtLeast(args.threshold)
    config_store = None
    if args.config:
        from pxexec.config import load

        loaded = load(args.config)
        policy, config_store = loaded.policy, loaded.store
    peer = "proxystore" in (args.arm or [])
    if peer:
        from pxexec.bench.arms import require_proxystore

        require_proxystore()
    ray = "ray" in (args.arm or [])
    if ray:
        from pxexec.bench.arms import ray_available

        if not ray_available():
            print("pxexec bench: Ray is not installed, so the ray arm is skipped "
                  "(pip install 'pxexec[ray]' to add it).", file=sys.stderr, flush=True)
            ray = False
    args.ray = ray
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(args.out, exist_ok=True)
    with stores([] if config_store else (args.connector or ["shm"])) as named:
        if config_store is not None:
            named = {f"pxexec-{config_store.name}": config_store}
        records, title = _run(workload, engine, named, policy, peer, args)
        for label, store in named.items():  # the engine is gone: what did it leave?
            stats = getattr(store.connector, "stats", None)
            if callable(stats):
                left = stats()
                print(f"{label} after the run: {left['objects']} object(s), "
                      f"{left['bytes_in_use']} arena byte(s) in use, "
                      f"{left['spilled_bytes']} byte(s) spilled", flush=True)
    base = os.path.join(args.out, f"{workload}-{engine}-{stamp}")
    header, rows = _report(workload, records, title)
    write_csv(base + ".csv", records)
    write_rows(base + "-summary.csv", header, rows)
    print(f"\nrecords: {base}.csv\nsummary: {base}-summary.csv", flush=True)
    if not args.no_plot:
        try:
            from pxexec.bench.plots import plot

            print(f"plot:    {plot(records, base + '.png', title)}", flush=True)
        except ImportError as exc:
            print(f"no plot: {exc}", flush=True)
    return 0


def _run(
    workload: str, engine: str, named: dict[str, Any], policy: Any, peer: bool,
    args: argparse.Namespace,
) -> tuple[list[Any], str]:
    from pxexec.bench import cholesky, fedlearn, moldesign, pipeline, roundtrip, throughput
    from pxexec.bench.arms import arms
    from pxexec.bench.common import progress
    from pxexec.bench.engines import session

    quick = args.workload is None
    ray = bool(getattr(args, "ray", False))
    names = ["plain", *named, *(["proxystore"] if peer else []), *(["ray"] if ray else [])]
    reps = args.reps if args.reps is not None else (
        5 if workload in ("roundtrip", "pipeline") else 1)
    default_workers = [1, 2] if workload == "throughput" else [2]
    records: list[Any] = []
    for workers in args.workers or default_workers:
        print(f"pxexec bench {workload}: {engine} with {workers} worker(s); arms: "
              f"{', '.join(names)}", flush=True)
        with session(engine, workers) as sess, \
                arms(sess, named, policy, peer=peer, threshold=args.threshold,
                     ray=ray) as made:
            if workload == "roundtrip":
                sizes = args.sizes or [10_000, 1_000_000, 10_000_000, 100_000_000]
                kinds = ["numpy"] if quick else args.kinds
                modes = ["fresh"] if quick else args.modes
                total = len(sizes) * len(kinds) * len(modes) * (reps + 2) * len(made)
                with progress(total, "roundtrip") as bar:
                    records += roundtrip.run(made, sizes=sizes, kinds=kinds, modes=modes,
                                             reps=reps, progress=bar)
            elif workload == "throughput":
                total = args.tasks * len(made) * len(args.size)
                with progress(total, "throughput") as bar:
                    records += throughput.run(made, sizes=args.size, tasks=args.tasks,
                                              progress=bar)
            elif workload == "pipeline":
                with progress((reps + 2) * len(made), "pipeline") as bar:
                    records += pipeline.run(made, nbytes=args.pipeline_size,
                                            consumers=args.consumers, reps=reps, progress=bar)
            else:
                module = {"cholesky": cholesky, "fedlearn": fedlearn,
                          "moldesign": moldesign}[workload]
                options = _app_options(workload, args)
                with progress(reps * len(made), workload) as bar:
                    records += module.run(made, reps=reps, progress=bar, **options)
    workers_text = ",".join(str(w) for w in (args.workers or default_workers))
    titles = {
        "roundtrip": f"Round trip of one no-op task ({engine}, {workers_text} workers), "
                     f"median of {reps}",
        "throughput": f"Throughput, {'/'.join(str(n) for n in args.size)} bytes in and out "
                      f"per task ({engine}; arms and sizes take turns in {throughput.BLOCKS} "
                      "blocks)",
    }
    titles["pipeline"] = (f"Pipeline: make {args.pipeline_size} bytes -> {args.consumers} "
                          f"consumers -> reduce ({engine}, {workers_text} workers), median of "
                          f"{reps}")
    title = titles.get(workload, f"{workload} ({engine}, {workers_text} workers), "
                                 f"makespan over {reps} run(s)")
    return records, title


def _app_options(workload: str, args: argparse.Namespace) -> dict[str, Any]:
    wanted = {
        "cholesky": {"n": args.n, "block": args.block},
        "fedlearn": {"clients": args.clients, "rounds": args.rounds, "samples": args.samples},
        "moldesign": {"search": args.search, "pool": args.pool},
    }[workload]
    return {k: v for k, v in wanted.items() if v is not None}


def _report(workload: str, records: list[Any], title: str) -> tuple[list[str], list[list[Any]]]:
    from pxexec.bench import apps, roundtrip, throughput

    if workload in ("roundtrip", "pipeline"):
        return roundtrip.report(records, title)
    if workload == "throughput":
        return throughput.report(records, title)
    return apps.report(records, title)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
