"""Engines for the benchmarks: the plain engine and pxexec on the same workers."""

from __future__ import annotations

import concurrent.futures as cf
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from pxexec.connectors import connector_from_url
from pxexec.executor.facade import StoreExecutor
from pxexec.store.store import Store

ENGINES = ("dask", "process", "thread", "parsl")


@dataclass
class Session:
    """One running engine: ``submit`` is the plain engine, ``pxexec`` wraps it."""

    name: str
    workers: int
    engine: Any
    submit: Callable[..., Any]

    def pxexec(self, store: Store, policy: Callable[[Any], bool]) -> StoreExecutor:
        return StoreExecutor(
            self.engine, store, policy, close_engine=False, proxy_containers=True,
        )


def default_engine() -> str:
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "process"
    return "dask"


@contextmanager
def session(name: str, workers: int) -> Iterator[Session]:
    """Start ``name`` with ``workers`` single-threaded workers; stop it afterwards."""
    if name == "dask":
        from distributed import Client, LocalCluster

        with _children_hold_interrupts():  # worker processes inherit a blocked Ctrl-C
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            )
        with cluster, Client(cluster) as client:

            def submit(fn: Callable[..., Any], *args: Any) -> Any:
                return client.submit(fn, *args, pure=False)

            yield Session(name, workers, client, submit)
    elif name in ("process", "thread"):
        pool: cf.Executor = (
            cf.ProcessPoolExecutor(workers, initializer=_ignore_interrupts) if name == "process"
            else cf.ThreadPoolExecutor(workers)
        )
        with pool:
            list(pool.map(abs, range(workers * 2)))  # start the workers
            yield Session(name, workers, pool, pool.submit)
    elif name == "parsl":
        from parsl.config import Config
        from parsl.executors import HighThroughputExecutor
        from parsl.providers import LocalProvider

        from pxexec.engines.parsl import executor_from_config

        run_dir = tempfile.mkdtemp(prefix="pxexec-parsl-")
        config = Config(
            executors=[HighThroughputExecutor(
                label="htex", max_workers_per_node=workers, cores_per_worker=1,
                address="127.0.0.1",
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            )],
            run_dir=run_dir, strategy="none", initialize_logging=False,
        )
        with _children_ignore_interrupts():  # the interchange and workers start here
            pool = executor_from_config(config)
        try:
            pool.submit(abs, 1).result()
            yield Session(name, workers, pool, pool.submit)
        finally:
            pool.shutdown()
    else:
        raise ValueError(f"Unknown engine {name!r}; choose from {', '.join(ENGINES)}.")


@contextmanager
def _children_ignore_interrupts() -> Iterator[None]:
    """Processes started inside ignore SIGINT: a terminal's Ctrl-C reaches the whole
    process group, and the benchmark, not its workers, decides how to stop. (An ignored
    signal stays ignored across exec; a handler does not.) Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _children_hold_interrupts() -> Iterator[None]:
    """Threads started inside, and the processes they start, have SIGINT blocked, while
    this process keeps its handler: a Ctrl-C that comes meanwhile is held, not lost.

    Dask's LocalCluster starts its IO loop thread here, and that thread's threads start the
    worker processes (spawn); a blocked signal mask is inherited by threads and across fork
    and exec, so the workers never see the terminal's Ctrl-C. Ignoring SIGINT here instead
    (``_children_ignore_interrupts``) would discard a Ctrl-C that comes during the seconds
    the cluster takes to start, and the run would go on to its end. Once the main thread
    unblocks SIGINT, a held Ctrl-C reaches its handler. Main thread only.

    multiprocessing's resource tracker is started first, here: starting it unblocks SIGINT
    in the thread that starts it, which would otherwise be Dask's IO loop thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _ignore_interrupts() -> None:
    """Pool workers leave Ctrl-C (sent to the whole terminal group) to the benchmark."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: directory stores that get a namespace of their own for each run: what another run
#: (or a test) keeps in the same directory is neither counted nor freed by this one
PRIVATE_NAMESPACE = ("shm", "file", "node", "shm-files")


@contextmanager
def stores(urls: list[str]) -> Iterator[dict[str, Store]]:
    """A store per connector URL; ``redis`` alone starts a private redis-server.

    File and shm stores get a namespace of their own for this run; whatever is left in
    it when the run ends (normally nothing; after a Ctrl-C perhaps an object in flight)
    is evicted, and the namespace removed, so an interrupted run leaves nothing behind.
    """
    with ExitStack() as stack:
        result: dict[str, Store] = {}
        for url in urls:
            label = url.split("://")[0] if "://" in url else url
            options: dict[str, Any] = {}
            if url == "redis":
                from pxexec.bench.private_redis import private_redis

                url = stack.enter_context(private_redis()).url
            elif label in PRIVATE_NAMESPACE:
                options["namespace"] = f"bench-{os.getpid()}"
            connector = connector_from_url(url, **options)
            store = Store(f"bench-{label}", connector)
            if options:
                stack.callback(_empty, connector)
            stack.callback(store.close)
            result[f"pxexec-{label}"] = store
        yield result


def _empty(connector: Any) -> None:
    """Evict everything left in a connector private to this run, and remove its folder
    (and a node store's spill folder)."""
    keys = connector.keys()
    for key in keys:
        connector.evict(key)
    if callable(getattr(connector, "trim", None)):
        connector.trim()
    shutil.rmtree(connector.path, ignore_errors=True)
    spill = getattr(connector, "spill_directory", None)
    if isinstance(spill, str):
        shutil.rmtree(spill, ignore_errors=True)
