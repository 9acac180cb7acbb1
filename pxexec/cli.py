"""The ``pxexec`` command line: ``pxexec bench|plot|ls|du|gc ...``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from pxexec.errors import (
    ConfigError,
    MissingDependencyError,
    PxexecError,
    StoreConnectionError,
    UnknownConnectorError,
)
from pxexec.policies.base import DEFAULT_THRESHOLD

N = TypeVar("N")

WORKLOADS = ("roundtrip", "throughput", "pipeline", "cholesky", "fedlearn", "moldesign")
ENGINES = ("dask", "process", "thread", "parsl")
KINDS = ("numpy", "bytes")
MODES = ("fresh", "input")


def _size(text: str) -> int:
    from pxexec.units import parse_bytes

    try:
        return parse_bytes(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _checked(convert: Callable[[str], N], what: str, ok: Callable[[N], bool],
             must: str) -> Callable[[str], N]:
    """A parser of one ``what`` (converted by ``convert``) that must satisfy ``ok``."""

    def parse(text: str) -> N:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {must} (got {text.strip()})")
        return value

    return parse


def _comma_separated(one: Callable[[str], N], noun: str,
                     example: str) -> Callable[[str], list[N]]:
    """A parser of a comma-separated list of what ``one`` parses (at least one)."""

    def parse(text: str) -> list[N]:
        values = [one(part) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"give at least one {noun}, e.g. {example}")
        return values

    return parse


_positive = _checked(int, "a whole number", lambda n: n >= 1, "at least 1")
_seconds = _checked(float, "a number of seconds", lambda s: s > 0, "more than 0 seconds")
_sizes = _comma_separated(_size, "size", "10kB,1MB")
_positives = _comma_separated(_positive, "number", "1,2")


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
    bench.add_argument("--threshold", type=_size, default=DEFAULT_THRESHOLD,
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
    from pxexec.usage_cli import disk_usage, list_objects

    commands = {"bench": _bench, "gc": collect, "plot": _replot, "ls": list_objects,
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


def _bench(args: argparse.Namespace) -> int:
    from pxexec.bench.command import bench  # the harness loads for this command only

    return bench(args)


def _replot(args: argparse.Namespace) -> int:
    from pxexec.bench.command import replot

    return replot(args)


def _interrupted(command: str) -> int:
    print(f"\npxexec {command}: interrupted; what it had stored is freed.", file=sys.stderr)
    return 130


def collect(args: argparse.Namespace) -> int:
    from pxexec.connectors import config_from_url, connector_from_url
    from pxexec.store.leases import lease_of

    if args.config:
        from pxexec.config import load

        connector: Any = load(args.config).store.connector  # gc uses each store's extras
    elif args.connector:
        options: dict[str, Any] = {}
        if args.namespace:
            options["namespace"] = args.namespace
        kind = config_from_url(args.connector)["type"]  # parsed by the connector it names
        node_store = kind != "redis"
        if args.lease is not None and node_store:
            options["lease"] = args.lease
        if kind in ("file", "shm", "shm-files"):
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
