"""The ``pxexec`` command line: ``pxexec bench|plot|ls|du|gc ...``."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from pxexec.errors import (
    ConfigError,
    MissingDependencyError,
    PxexecError,
    StoreConnectionError,
    UnknownConnectorError,
)

WORKLOADS = ("roundtrip", "throughput", "pipeline", "cholesky", "fedlearn", "moldesign")
ENGINES = ("dask", "process", "thread", "parsl")
KINDS = ("numpy", "bytes")
MODES = ("fresh", "input")
#: the package each engine needs, and the extra that installs it
ENGINE_NEEDS = {"dask": ("distributed", "dask"), "parsl": ("parsl", "parsl")}
#: the packages each workload needs beyond numpy (all in the ``bench`` extra)
WORKLOAD_NEEDS = {"moldesign": ("pandas",), "cholesky": ("scipy",)}


def _size(text: str) -> int:
    from pxexec.units import parse_bytes

    try:
        return parse_bytes(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sizes(text: str) -> list[int]:
    sizes = [_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 10kB,1MB")
    return sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _positives(text: str) -> list[int]:
    values = [_positive(part) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("give at least one number, e.g. 1,2")
    return values


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds (got {text})")
    return value


def _one_of(allowed: Sequence[str]) -> Any:
    def words(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        bad = [w for w in chosen if w not in allowed]
        if bad or not chosen:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose one or more of {', '.join(allowed)} (comma-separated)")
        return chosen

    return words


def _existing_file(text: str) -> str:
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return text


def _version() -> str:
    from pxexec import __version__

    return f"pxexec {__version__} (Python {sys.version.split()[0]})"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (and exit with status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pxexec", description="pass-by-proxy for executors")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = sub.add_parser(
        "bench",
        help="compare the plain engine with pxexec on the same workers",
        description=(
            "Without a workload: a short round-trip comparison on the embedded default "
            "(Dask when installed, else a process pool; the shm connector)."
        ),
    )
    bench.add_argument("workload", nargs="?", choices=WORKLOADS, default=None)
    bench.add_argument("--engine", default=None, choices=ENGINES,
                       help="the engine (default: dask if installed, else process)")
    bench.add_argument("--workers", type=_positives, default=None,
                       help="comma-separated worker counts, one run each "
                            "(default 2; throughput: 1,2)")
    bench.add_argument("--connector", action="append", default=None,
                       help="connector URL, repeatable ('redis' starts a private server); "
                            "default shm")
    bench.add_argument("--config", default=None, type=_existing_file,
                       help="TOML config whose store and policy form the pxexec arm")
    bench.add_argument("--threshold", type=_size, default=1_000_000,
                       help="proxy objects of at least this size (default 1MB; units "
                            "B, kB, MB, GB, KiB, MiB, GiB)")
    bench.add_argument("--sizes", type=_sizes, default=None,
                       help="roundtrip payload sizes, e.g. 10kB,1MB,100MB")
    bench.add_argument("--kinds", type=_one_of(KINDS), default=["numpy", "bytes"],
                       help="roundtrip payload kinds: numpy,bytes")
    bench.add_argument("--modes", type=_one_of(MODES), default=["fresh", "input"],
                       help="roundtrip outputs: fresh (new object) and/or input (returned)")
    bench.add_argument("--size", type=_sizes, default=[1_000_000],
                       help="throughput: bytes in and out per task, e.g. 1kB,1MB (several "
                            "sizes take turns in one run; default 1MB)")
    bench.add_argument("--tasks", type=_positive, default=1000,
                       help="throughput: number of tasks")
    bench.add_argument("--reps", type=_positive, default=None,
                       help="repetitions (roundtrip: per point, default 5; others: default 1)")
    bench.add_argument("--arm", action="append", choices=["proxystore", "ray"], default=None,
                       help="add a peer arm: proxystore (its StoreExecutor on a file store "
                            "in /dev/shm; pip install proxystore), ray (Ray on this machine "
                            "with the same CPUs; pip install 'pxexec[ray]')")
    bench.add_argument("--consumers", type=_positive, default=4,
                       help="pipeline: tasks that consume the made array (default 4)")
    bench.add_argument("--pipeline-size", type=_size, default=100_000_000,
                       help="pipeline: bytes of the made array (default 100MB)")
    bench.add_argument("--n", type=_positive, default=None, help="cholesky: matrix size (10000)")
    bench.add_argument("--block", type=_positive, default=None, help="cholesky: tile size (2500)")
    bench.add_argument("--clients", type=_positive, default=None, help="fedlearn: clients (8)")
    bench.add_argument("--rounds", type=_positive, default=None, help="fedlearn: rounds (3)")
    bench.add_argument("--samples", type=_positive, default=None,
                       help="fedlearn: samples per client (64)")
    bench.add_argument("--search", type=_positive, default=None,
                       help="moldesign: candidates to simulate (64)")
    bench.add_argument("--pool", type=_positive, default=None,
                       help="moldesign: candidates to score by inference (8192)")
    bench.add_argument("--out", default="bench-out",
                       help="directory for the CSV records, summary and PNG plot")
    bench.add_argument("--no-plot", action="store_true", help="do not draw the PNG plot")
    from pxexec.usage_cli import add_commands

    add_commands(sub, _existing_file, _seconds)
    plot_cmd = sub.add_parser(
        "plot", help="draw the plot of a bench run again from its CSV records",
        description="Draw the PNG plot of a `pxexec bench` run from its records CSV file.",
    )
    plot_cmd.add_argument("records", type=_existing_file, help="a run's records CSV file")
    plot_cmd.add_argument("--out", default=None,
                          help="the PNG file to write (default: next to the CSV file)")
    plot_cmd.add_argument("--title", default=None, help="the plot's title")
    gc_cmd = sub.add_parser(
        "gc",
        help="delete objects whose owner process died (expired leases)",
        description=(
            "Reap the objects of a file or shm store that were held by owner processes "
            "that are gone (no longer running on this host, or, with --lease, whose "
            "heartbeat stopped), and temporary files of writers that are gone; list what "
            "was removed. Objects no owner held are never removed, and no symlink is "
            "followed. Redis expires objects by itself (key TTLs)."
        ),
    )
    gc_cmd.add_argument("connector", nargs="?", default=None,
                        help="connector URL (e.g. shm, file:///scratch/px)")
    gc_cmd.add_argument("--lease", type=_seconds, default=None,
                        help="lease period in seconds used by the store's processes")
    gc_cmd.add_argument("--namespace", default=None, help="store namespace (file/shm)")
    gc_cmd.add_argument("--config", default=None, type=_existing_file,
                        help="a TOML config naming the store")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status: 0 done, 1 failed, 2 usage error, 130 Ctrl-C."""
    args = build_parser().parse_args(argv)
    from pxexec.bench.common import STOP
    from pxexec.usage_cli import disk_usage, list_objects

    STOP.clear()
    commands = {"bench": bench, "gc": collect, "plot": replot, "ls": list_objects,
                "du": disk_usage}
    try:
        return commands[args.command](args)
    except BrokenPipeError:  # the reader went away (pxexec ls | head): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return _interrupted(args.command)
    except (MissingDependencyError, StoreConnectionError) as exc:
        print(f"pxexec {args.command}: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, UnknownConnectorError) as exc:  # what the user wrote is wrong
        print(f"pxexec {args.command}: {exc}", file=sys.stderr)
        return 2
    except PxexecError as exc:  # a store it must not touch, or cannot find
        print(f"pxexec {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception:
        if STOP.is_set():  # a failure caused by the Ctrl-C (workers interrupted too)
            return _interrupted(args.command)
        raise


def _interrupted(command: str) -> int:
    print(f"\npxexec {command}: interrupted; what it had stored is freed.", file=sys.stderr)
    return 130


def collect(args: argparse.Namespace) -> int:
    from pxexec.connectors import connector_from_url
    from pxexec.store.leases import lease_of

    if args.config:
        from pxexec.config import load

        connector = load(args.config).store.connector
    elif args.connector:
        options: dict[str, Any] = {}
        if args.namespace:
            options["namespace"] = args.namespace
        node_store = not args.connector.startswith(("redis", "unix"))
        if args.lease is not None and node_store:
            options["lease"] = args.lease
        if node_store and args.connector.split(":")[0] in ("file", "shm", "shm-files"):
            options["create"] = False  # gc never makes a store that is not there
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
    reap_report = getattr(connector, "reap_report", None)
    if reap_report is None:
        if lease_of(connector) is None:
            print("pxexec gc: this store has no lease period; pass --lease SECONDS "
                  "(the period its processes use)", file=sys.stderr)
            return 2
        removed = getattr(connector, "reaped_on_start", 0) + connector.reap()
        print(f"pxexec gc: removed {removed} expired object(s)")
        return 0
    start, now = connector.start_report, reap_report()
    objects = start.objects + now.objects
    temporaries = start.temporaries + now.temporaries
    owners = start.owners + now.owners
    print(f"pxexec gc: {now.directory}: removed {len(objects)} object(s) held by "
          f"{len(owners)} owner process(es) that are gone, and {len(temporaries)} "
          "temporary file(s) of writers that are gone")
    for name in objects:
        print(f"  object {name}")
    for name in temporaries:
        print(f"  temporary file {name}")
    return 0


def replot(args: argparse.Namespace) -> int:
    from pxexec.bench.common import read_csv

    _require("matplotlib", "bench", "pxexec plot")
    from pxexec.bench.plots import plot

    try:
        records = read_csv(args.records)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{args.records} is not a records file of pxexec bench ({exc}).") \
            from None
    if not records:
        raise ConfigError(f"{args.records} holds no records.")
    first = records[0]
    workers = ",".join(str(w) for w in sorted({r.workers for r in records}))
    title = args.title or f"{first.workload} ({first.engine}, {workers} workers)"
    out = args.out or os.path.splitext(args.records)[0] + ".png"
    print(f"plot:    {plot(records, out, title)}")
    return 0


def _require(module: str, extra: str, feature: str) -> None:
    """Raise MissingDependencyError (one line, naming the extra) if ``module`` is absent."""
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(module, extra, feature)


def _check_connector(url: str) -> None:
    """Refuse an unknown connector URL before anything starts (no I/O)."""
    from urllib.parse import urlsplit

    from pxexec.connectors import connector_class

    if url == "redis":  # a private redis-server, started by the benchmark
        _require("redis", "redis", "--connector redis")
        if shutil.which("redis-server") is None:
            raise ConfigError("--connector redis starts a private redis-server, but none is "
                              "on PATH: install it (e.g. apt-get install redis-server).")
        return
    if "://" not in url:
        connector_class(url)
        return
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss", "unix"):
        connector_class("redis")
    elif parts.scheme == "file" and not parts.path:
        raise ConfigError(f"File URL {url!r} needs a path, e.g. 'file:///scratch/pxexec'.")
    elif parts.scheme not in ("file", "shm"):
        connector_class(parts.scheme)


def _preflight(workload: str, engine: str, args: argparse.Namespace) -> None:
    """Everything a run needs, checked before any engine or store starts."""
    _require("numpy", "bench", "pxexec bench")
    for module in WORKLOAD_NEEDS.get(workload, ()):
        _require(module, "bench", f"pxexec bench {workload}")
    if engine in ENGINE_NEEDS:
        module, extra = ENGINE_NEEDS[engine]
        _require(module, extra, f"pxexec bench --engine {engine}")
    for url in args.connector or []:
        _check_connector(url)
    if "proxystore" in (args.arm or []):
        from pxexec.bench.arms import require_proxystore

        require_proxystore()


def bench(args: argparse.Namespace) -> int:
    from pxexec.bench.engines import default_engine

    engine = args.engine or default_engine()
    workload = args.workload or "roundtrip"
    _preflight(workload, engine, args)

    from pxexec.bench.common import stop_on_interrupt, write_csv, write_rows
    from pxexec.bench.engines import stores
    from pxexec.policies import SizeAtLeast

    policy: Any = SizeAtLeast(args.threshold)
    config_store = None
    if args.config:
        from pxexec.config import load

        loaded = load(args.config)
        policy, config_store = loaded.policy, loaded.store
    peer = "proxystore" in (args.arm or [])
    ray = "ray" in (args.arm or [])
    if ray:
        from pxexec.bench.arms import ray_available

        if not ray_available():
            print("pxexec bench: Ray is not installed, so the ray arm is skipped "
                  "(pip install 'pxexec[ray]' to add it).", file=sys.stderr, flush=True)
            ray = False
    args.ray = ray
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=f".*{LARGE_GRAPH}")  # count each
        with stop_on_interrupt(), \
                stores([] if config_store else (args.connector or ["shm"])) as named:
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
    _explain_warnings(caught)
    base = os.path.join(args.out, f"{workload}-{engine}-{stamp}")
    header, rows = _report(workload, records, title)
    os.makedirs(args.out, exist_ok=True)  # only now: a failed run leaves no empty directory
    write_csv(base + ".csv", records)
    write_rows(base + "-summary.csv", header, rows)
    print(f"\nrecords: {base}.csv\nsummary: {base}-summary.csv", flush=True)
    if not args.no_plot:
        if importlib.util.find_spec("matplotlib") is None:
            print("no plot: matplotlib is not installed (pip install 'pxexec[bench]')", flush=True)
        else:
            from pxexec.bench.plots import plot

            print(f"plot:    {plot(records, base + '.png', title)}", flush=True)
    return 0


LARGE_GRAPH = "Sending large graph"


def _explain_warnings(caught: Sequence[warnings.WarningMessage]) -> None:
    """Dask's large-graph warnings, counted and explained; other warnings shown as usual."""
    large = [w for w in caught if LARGE_GRAPH in str(w.message)]
    for w in caught:
        if LARGE_GRAPH not in str(w.message):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if large:
        first = str(large[0].message).split(".")[0]
        print(f"\nnote: Dask warned {len(large)} time(s) \"{first}...\". That is the plain "
              "arm: plain Dask sends large task arguments inside the task graph, the cost "
              "pxexec's arms avoid by sending proxies. Expected; not a fault.", flush=True)


def _run(
    workload: str, engine: str, named: dict[str, Any], policy: Any, peer: bool,
    args: argparse.Namespace,
) -> tuple[list[Any], str]:
    from pxexec.bench import cholesky, fedlearn, moldesign, pipeline, roundtrip, throughput
    from pxexec.bench.arms import arms
    from pxexec.bench.common import human_size, progress
    from pxexec.bench.engines import session

    quick = args.workload is None
    ray = bool(getattr(args, "ray", False))
    names = ["plain", *named, *(["proxystore"] if peer else []), *(["ray"] if ray else [])]
    reps = args.reps if args.reps is not None else (
        5 if workload in ("roundtrip", "pipeline") else 1)
    default_workers = [1, 2] if workload == "throughput" else [2]
    records: list[Any] = []
    for workers in args.workers or default_workers:
        from pxexec.integrity import HAVE_XXHASH

        print(f"pxexec bench {workload}: {engine} with {workers} worker(s); arms: "
              f"{', '.join(names)}; XXH3 checks of large frames "
              f"{'on' if HAVE_XXHASH else 'off'}", flush=True)
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
        "throughput": f"Throughput, {'/'.join(human_size(n) for n in args.size)} in and out "
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
