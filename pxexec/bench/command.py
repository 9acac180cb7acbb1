"""What ``pxexec bench`` and ``pxexec plot`` do (the command line parses; this runs).

Imported only by those two commands, so the rest of the command line (``pxexec gc``,
``ls``, ``du``) never loads the benchmark harness.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from pxexec.bench.common import STOP
from pxexec.errors import ConfigError, MissingDependencyError, PxexecError

#: the package each engine needs, and the extra that installs it
ENGINE_NEEDS = {"dask": ("distributed", "dask"), "parsl": ("parsl", "parsl")}
#: the packages each workload needs beyond numpy (all in the ``bench`` extra)
WORKLOAD_NEEDS = {"moldesign": ("pandas",), "cholesky": ("scipy",)}


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
    from pxexec.connectors import config_from_url

    if url == "redis":  # a private redis-server, started by the benchmark
        _require("redis", "redis", "--connector redis")
        if shutil.which("redis-server") is None:
            raise ConfigError("--connector redis starts a private redis-server, but none is "
                              "on PATH: install it (e.g. apt-get install redis-server).")
        return
    config_from_url(url)  # the connector the URL names parses it (imports, never connects)


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
    """Run ``pxexec bench``; a failure that follows a Ctrl-C (workers interrupted too)
    is the interrupt's: it is raised as KeyboardInterrupt."""
    STOP.clear()
    try:
        return _bench(args)
    except PxexecError:
        raise
    except Exception:
        if STOP.is_set():
            raise KeyboardInterrupt from None
        raise


def _bench(args: argparse.Namespace) -> int:
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
        from pxexec.codec.integrity import HAVE_XXHASH

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
