from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from pxexec.store.registry import clear_registry
from tests.redis_server import redis_url_or_private

# Worker processes started by engines (Parsl's process_worker_pool.py, TaskVine
# workers) find this environment's executables and the tests package.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
os.environ["PYTHONPATH"] = _ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")
# Node stores made without a directory live in this run's own directory, which every
# process the tests start inherits and nobody else writes to: after the run it must be
# empty (see tests/node_leftovers.py).
# Processes the run starts may import this module too (tests.conftest): they inherit the
# run's directory and leave it alone; only the process that made it checks and removes it.
_OWN_NODE_DIR = "PXEXEC_TEST_RUN_NODE_DIR" not in os.environ
if _OWN_NODE_DIR:
    os.environ["PXEXEC_TEST_RUN_NODE_DIR"] = tempfile.mkdtemp(
        prefix=f"pxexec-node-{os.getuid()}-test-", dir="/dev/shm")
_NODE_DIR = os.environ["PXEXEC_TEST_RUN_NODE_DIR"]
os.environ["PXEXEC_NODE_DIR"] = _NODE_DIR
# The same for the file-per-object shm store (``shm-files``): its default directory.
if _OWN_NODE_DIR:
    os.environ["PXEXEC_TEST_RUN_SHM_DIR"] = tempfile.mkdtemp(
        prefix=f"pxexec-{os.getuid()}-test-", dir="/dev/shm")
_SHM_DIR = os.environ["PXEXEC_TEST_RUN_SHM_DIR"]
os.environ["PXEXEC_SHM_DIR"] = _SHM_DIR


def _remove_at_exit(path: str, pid: int = os.getpid()) -> None:
    if os.getpid() == pid:  # not in a forked child that runs its exit functions
        shutil.rmtree(path, ignore_errors=True)


if _OWN_NODE_DIR:  # removed after the checks below; at exit too, if they never ran
    for _made in (_NODE_DIR, _SHM_DIR):  # (a run stopped by an error while collecting)
        atexit.register(_remove_at_exit, _made)


@pytest.fixture(scope="session", autouse=True)
def _node_stores_left_empty() -> Iterator[None]:
    """After the whole run (torn down last): zero objects and arena bytes in use."""
    yield
    if not _OWN_NODE_DIR:  # a run inside the run: the outer one checks
        return
    from tests.node_leftovers import file_leftovers, leftovers

    try:
        left = leftovers(_NODE_DIR)
        files = file_leftovers(_SHM_DIR)
    finally:
        shutil.rmtree(_NODE_DIR, ignore_errors=True)
        shutil.rmtree(_SHM_DIR, ignore_errors=True)
    assert not left, f"the test run left objects in its node stores: {left}"
    assert not files, f"the test run left objects in its shm-files stores: {files}"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_url_or_private(os.environ.get("PXEXEC_TEST_REDIS_URL") or None) as url:
        yield url


@pytest.fixture
def shm_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="pxexec-test-", dir="/dev/shm")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    yield
    clear_registry()


ENGINES = ["thread", "process-spawn", "process-fork", "dask", "parsl-thread", "parsl-htex",
           "taskvine", "taskvine-real"]


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
    )
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def parsl_htex(tmp_path_factory: Any) -> Iterator[Any]:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    from pxexec.engines.parsl import executor_from_config

    config = Config(
        executors=[HighThroughputExecutor(
            label="htex", max_workers_per_node=2, cores_per_worker=1, address="127.0.0.1",
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
        )],
        run_dir=str(tmp_path_factory.mktemp("parsl-htex")),
        strategy="none",
        initialize_logging=False,
    )
    pool = executor_from_config(config)
    yield pool
    pool.shutdown()


@pytest.fixture(scope="session")
def parsl_threads(tmp_path_factory: Any) -> Iterator[Any]:
    from parsl.config import Config
    from parsl.executors.threads import ThreadPoolExecutor as ParslThreads

    from pxexec.engines.parsl import executor_from_config

    config = Config(
        executors=[ParslThreads(label="threads", max_threads=2)],
        run_dir=str(tmp_path_factory.mktemp("parsl-threads")),
        initialize_logging=False,
    )
    pool = executor_from_config(config)
    yield pool
    pool.shutdown()


@pytest.fixture(params=ENGINES)
def engine(request: Any) -> Iterator[tuple[Any, bool]]:
    """(engine, close_engine): a real engine of each kind, ready to wrap."""
    import concurrent.futures as cf
    import multiprocessing

    name = request.param
    if name == "thread":
        yield cf.ThreadPoolExecutor(2), True
    elif name.startswith("process"):
        ctx = multiprocessing.get_context(name.split("-")[1])
        yield cf.ProcessPoolExecutor(2, mp_context=ctx), True
    elif name == "dask":
        from distributed import Client

        yield Client(request.getfixturevalue("dask_cluster")), True
    elif name == "parsl-thread":
        yield request.getfixturevalue("parsl_threads"), False
    elif name == "parsl-htex":
        yield request.getfixturevalue("parsl_htex"), False
    elif name.startswith("taskvine"):
        yield taskvine_executor(request, real=name == "taskvine-real"), True


def taskvine_executor(request: Any, real: bool) -> Any:
    """A FuturesExecutor with a factory of two local workers: TaskVine's or the stand-in's.

    The real one (``ndcctools``, with ``vine_worker`` and ``vine_factory`` on PATH) is
    skipped where absent; it runs in a temporary directory (TaskVine writes
    ``vine-run-info/`` into the current one) and its factory reports to a catalog
    server on this machine only.
    """
    from pxexec.engines.taskvine import executor_from_module

    if real:
        if importlib.util.find_spec("ndcctools") is None or not (
            shutil.which("vine_worker") and shutil.which("vine_factory")
        ):
            pytest.skip("ndcctools (TaskVine) with vine_worker is not installed; not on PyPI")
        from ndcctools import taskvine as module
    else:
        from tests import taskvine_standin as module
    patch = request.getfixturevalue("monkeypatch")
    patch.chdir(request.getfixturevalue("tmp_path"))
    patch.setenv("CATALOG_HOST", "127.0.0.1")
    patch.setenv("CATALOG_PORT", "9097")
    opts = {"min_workers": 2, "max_workers": 2, "catalog": "127.0.0.1:9097"}
    return executor_from_module(module, port=0, opts=opts)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Any]:
    """A simulated cluster: hosts n1, n2 and store (network, mount and UTS namespaces on
    a private subnet; this process is the head at ``bed.head_address``). Everything it
    started is killed at the end, also when a test fails (and at exit)."""
    from pxexec.testbed import TestBed, can_build

    reason = can_build()
    if reason:
        pytest.skip(f"multi-host tests skipped: {reason}")
    bed = TestBed(["n1", "n2", "store"]).up()
    try:
        yield bed
    finally:
        bed.down()


@pytest.fixture
def bed(testbed: Any) -> Iterator[Any]:
    """The session's test bed, with every process a test started on it killed after
    the test and every link restored (up, unshaped)."""
    yield testbed
    for name in testbed.names:
        testbed.link(name, True)
        testbed.shape(name)
        testbed.kill_host(name)
