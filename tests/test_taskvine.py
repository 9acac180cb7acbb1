"""TaskVine: the adapter on the stand-in (always) and on the real engine (where installed).

The tests taking the ``vine`` fixture run on both: ``standin`` is tests/taskvine_standin.py,
``real`` is ``ndcctools.taskvine`` with local ``vine_worker``s, skipped cleanly where
``ndcctools`` or ``vine_worker`` is absent.
"""

from __future__ import annotations

import concurrent.futures as cf
import gc
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.engines.taskvine import (
    PORT_VARIABLES,
    close_futures_executor,
    executor_from_module,
    futures_executor,
)
from pxexec.errors import MissingDependencyError, TaskOutputError
from pxexec.executor.facade import StoreExecutor, proxy_key
from tests import taskvine_standin, workers
from tests.conftest import taskvine_executor
from tests.counting import CountingConnector

N = 200_000  # 1.6 MB arrays: above the 1 MB default threshold

HAVE_REAL = importlib.util.find_spec("ndcctools") is not None and bool(
    shutil.which("vine_worker") and shutil.which("vine_factory")
)
real_only = pytest.mark.skipif(
    not HAVE_REAL, reason="ndcctools (TaskVine) with vine_worker is not installed; not on PyPI"
)


def leave(code: int) -> None:
    """A task that leaves the interpreter (TaskVine's wrapper catches only Exception)."""
    raise SystemExit(code)


@pytest.fixture
def store(shm_dir: str) -> Iterator[Store]:
    with Store(f"tv-{uuid.uuid4().hex[:6]}", CountingConnector(shm_dir)) as s:
        yield s


@pytest.fixture(params=["standin", "real"])
def vine(request: Any) -> Iterator[Any]:
    """A FuturesExecutor with a factory of two local workers, real or stand-in."""
    executor = taskvine_executor(request, real=request.param == "real")
    yield executor
    close_futures_executor(executor)


# -- the stand-in behaves like the real engine --------------------------------------------


def test_standin_reproduces_the_real_engine() -> None:
    saved = {name: os.environ.get(name) for name in PORT_VARIABLES}
    try:
        with pytest.raises(ValueError, match="manager_host_port, or manager_name"):
            taskvine_standin.FuturesExecutor(port=0)  # the factory gets manager=None
        raw = taskvine_standin.FuturesExecutor(port=0, factory=False)
        assert os.environ["TCP_LOW_PORT"] == os.environ["TCP_HIGH_PORT"] == "0"
        deaf = taskvine_standin.start_worker("localhost", raw.port)  # inherits the ports
        future = raw.submit(workers.add, 1, 2)
        with pytest.raises(TimeoutError):
            future.result(timeout=1)  # the worker cannot bind: nothing ever runs
        assert raw.ran == 0 and not deaf.can_bind
        for name in PORT_VARIABLES:
            os.environ.pop(name)
        taskvine_standin.start_worker("localhost", raw.port)
        for method in (future.done, future.running, future.cancelled):
            with pytest.raises(AttributeError, match="vine_task_state"):
                method()
        with pytest.raises(TypeError, match="of type 'int'"):
            future.result(timeout=0.5)
        assert future.result() == 3
        array = raw.submit(workers.make_array, 3)
        with pytest.raises(ValueError, match="ambiguous"):
            array.result()  # compared with a sentinel using ==
        failed = raw.submit(workers.fail, 1)
        downstream = raw.submit(workers.kinds, failed)
        assert downstream.result() == ["ValueError"]  # the exception became a value
        pending = raw.submit(workers.sleepy, 1, 5)
        assert pending.cancel() is None
        with pytest.raises(EOFError):
            pending.result()
        with pytest.raises(EOFError):
            raw.submit(leave, 3).result()
        with pytest.raises(TypeError, match="RLock"):
            raw.submit(workers.add, 1, b=future)
        with pytest.raises(AssertionError):
            raw.map(workers.total, (x for x in [1]))
        with pytest.raises(NotImplementedError):
            raw.map(workers.identity, [1, 2], "library")
        raw.shutdown()  # the base class's no-op
        assert raw.manager.listening
        assert raw.submit(workers.add, 2, 2).result() == 4
        raw.manager._free()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_missing_ndcctools_names_how_to_install() -> None:
    if importlib.util.find_spec("ndcctools") is not None:
        pytest.skip("ndcctools is installed")
    with pytest.raises(MissingDependencyError, match="conda-forge"):
        futures_executor(port=0)


def test_bad_factory_options_fail_before_anything_starts() -> None:
    with pytest.raises(TypeError, match="opts must be a mapping"):
        executor_from_module(taskvine_standin, port=0, opts=[("min_workers", 1)])


# -- construction and environment ---------------------------------------------------------


def test_factory_on_the_executors_manager_and_port_variables_restored(
    monkeypatch: Any, store: Store,
) -> None:
    for name in PORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    vine = executor_from_module(taskvine_standin, port=0, opts={"max_workers": 1})
    assert not any(name in os.environ for name in PORT_VARIABLES)
    with StoreExecutor(vine, store) as ex:
        assert ex.submit(workers.add, 1, 2).result(timeout=60) == 3
    monkeypatch.setenv("TCP_LOW_PORT", "20000")  # a range the user chose stays
    monkeypatch.setenv("TCP_HIGH_PORT", "20100")
    executor_from_module(taskvine_standin, port=0, factory=False).manager._free()
    assert (os.environ["TCP_LOW_PORT"], os.environ["TCP_HIGH_PORT"]) == ("20000", "20100")


def test_workers_started_by_hand_after_wrapping_can_run(monkeypatch: Any, store: Store) -> None:
    for name in PORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    vine = taskvine_standin.FuturesExecutor(port=0, factory=False)
    with StoreExecutor(vine, store) as ex:  # removes what Manager(port=0) exported
        assert not any(name in os.environ for name in PORT_VARIABLES)
        taskvine_standin.start_worker("localhost", vine.port)
        assert ex.submit(workers.add, 2, 3).result(timeout=60) == 5


@pytest.mark.parametrize("kind", ["standin", "real"])
def test_factory_started_with_the_port_variables_is_restarted(
    kind: str, monkeypatch: Any, tmp_path: Any, store: Store,
) -> None:
    if kind == "real" and not HAVE_REAL:
        pytest.skip("ndcctools (TaskVine) with vine_worker is not installed; not on PyPI")
    module: Any = taskvine_standin
    if kind == "real":  # pragma: no cover - needs CCTools
        from ndcctools import taskvine as module
    for name in PORT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CATALOG_HOST", "127.0.0.1")
    monkeypatch.setenv("CATALOG_PORT", "9097")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    vine = module.FuturesExecutor(  # TaskVine's own factory: its workers cannot bind
        port=port, manager_host_port=f"localhost:{port}",
        opts={"min_workers": 1, "max_workers": 1, "catalog": "127.0.0.1:9097"})
    if kind == "standin":
        assert not any(w.can_bind for w in vine.factory.workers)
    with StoreExecutor(vine, store) as ex:  # restarts the factory without the variables
        assert ex.submit(workers.add, 2, 3).result(timeout=60) == 5
    assert not _factory_running(vine.factory)


# -- behaviour on the real engine and on the stand-in --------------------------------------


def test_round_trip_by_proxy(vine: Any, store: Store) -> None:
    with StoreExecutor(vine, store) as ex:
        result = ex.submit(workers.double, np.ones(N)).result(timeout=60)
        assert float(result.sum()) == 2.0 * N
        assert ex.submit(workers.kinds, 1, big=np.ones(N)).result(timeout=60) == ["int",
                                                                                  "ndarray*"]
        assert list(ex.map(workers.add, (i for i in range(3)), [10, 20, 30], chunksize=2)) == [
            10, 21, 32]
        ex.free(result)
    assert store.connector.keys() == []


def test_timeout_comes_through_and_is_not_the_outcome(vine: Any, store: Store) -> None:
    with StoreExecutor(vine, store) as ex:
        future = ex.submit(workers.sleepy, 7, 2.5)
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="whole seconds"):
            future.result(timeout=0.5)
        assert time.monotonic() - start < 2.4  # rounded up to one second, not the task's time
        assert not future.done()
        assert future.result(timeout=30) == 7


def test_binding_error_is_not_the_outcome(vine: Any, store: Store) -> None:
    manager = vine.manager
    real_wait = manager.wait_for_task_id
    calls = []

    def broken_once(task_id: int, timeout: Any = "wait_forever") -> Any:
        calls.append(timeout)
        if len(calls) == 1:
            raise TypeError("in method 'vine_wait_for_task_id', argument 3 of type 'int'")
        return real_wait(task_id, timeout=timeout)

    with StoreExecutor(vine, store) as ex:
        future = ex.submit(workers.add, 1, 1)
        manager.wait_for_task_id = broken_once
        try:
            with pytest.raises(TypeError, match="argument 3"):
                future.result(timeout=30)
            assert not future.done()  # the binding's failure is not the task's outcome
            assert future.result(timeout=30) == 2
        finally:
            del manager.wait_for_task_id
    assert all(isinstance(t, int) for t in calls)


def test_failed_dependency_fails_the_dependent(vine: Any, store: Store) -> None:
    with StoreExecutor(vine, store) as ex:
        upstream = ex.submit(workers.fail, np.ones(N))
        downstream = ex.submit(workers.kinds, upstream)
        with pytest.raises(ValueError, match="failed on purpose"):
            downstream.result(timeout=60)  # not ["ValueError"]: a failure is never a value
        assert upstream.done() and isinstance(upstream.exception(), ValueError)
        later = ex.submit(workers.kinds, upstream)  # the upstream already failed
        with pytest.raises(ValueError, match="failed on purpose"):
            later.result(timeout=60)
        assert ex.flush(10)
    assert store.connector.keys() == []


def test_upstream_completed_on_the_client_so_its_data_is_freed(vine: Any, store: Store) -> None:
    with StoreExecutor(vine, store) as ex:
        upstream = ex.submit(workers.double, np.ones(N))  # a stored input, a stored result
        chained = ex.submit(workers.double, upstream)
        downstream = ex.submit(workers.total, chained)
        assert downstream.result(timeout=60) == 4.0 * N
        assert upstream.done() and chained.done()  # nobody called their result()
        del upstream, chained, downstream
        gc.collect()
        assert ex.flush(10)
        assert store.connector.keys() == []  # inputs and unread results are gone


def test_failed_task_pins_no_frames(vine: Any, store: Store) -> None:
    with StoreExecutor(vine, store) as ex:
        def caller() -> str:
            owner = ex.submit(workers.make_array, N).result(timeout=60)  # owned by this frame
            try:
                ex.submit(workers.fail, 1).result(timeout=60)
            except ValueError:
                pass
            key = proxy_key(owner)
            assert key is not None
            return key

        key = caller()
        gc.collect()
        assert ex.flush(10)
        remaining = store.connector.keys()
        assert key not in remaining  # the frame (and the owner) went
    assert store.connector.keys() == []


def test_cancel_a_task_and_its_dependents(vine: Any, store: Store) -> None:
    with StoreExecutor(vine, store, should_proxy=lambda x: isinstance(x, np.ndarray)) as ex:
        first = ex.submit(workers.sleepy, np.ones(10), 30)
        second = ex.submit(workers.total, first)
        assert first.cancel() and first.cancelled()  # TaskVine's cancel() says None
        assert second.cancelled()  # it could never run
        with pytest.raises(cf.CancelledError):
            first.result(timeout=30)
        assert first.cancel()  # cancelled already: stays so
        third = ex.submit(workers.total, first)  # on a cancelled task: cancelled at once
        assert third.cancelled()
        assert ex.submit(workers.add, 1, 2).result(timeout=60) == 3
        done = ex.submit(workers.add, 2, 2)
        assert done.result(timeout=60) == 4
        assert not done.cancel()  # finished: nothing to cancel
        assert ex.flush(10)
    assert store.connector.keys() == []


def test_task_leaving_the_interpreter_is_its_outcome(vine: Any, store: Store) -> None:
    with StoreExecutor(vine, store) as ex:
        with pytest.raises(SystemExit) as info:
            ex.submit(leave, 3).result(timeout=60)
        assert info.value.code == 3


def test_unimportable_function_gives_a_clear_error(
    vine: Any, store: Store, tmp_path: Any, monkeypatch: Any,
) -> None:
    name = f"client_only_{uuid.uuid4().hex[:6]}"
    (tmp_path / "client_only").mkdir()
    (tmp_path / "client_only" / f"{name}.py").write_text("def inc(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "client_only"))  # not on the workers' path
    module = importlib.import_module(name)
    try:
        with StoreExecutor(vine, store) as ex:
            with pytest.raises(TaskOutputError, match="PYTHONPATH") as info:
                ex.submit(module.inc, 1).result(timeout=60)
            assert isinstance(info.value, EOFError)
            assert f"No module named '{name}'" in info.value.output
    finally:
        sys.modules.pop(name, None)


def test_shutdown_stops_manager_workers_factory_and_refuses_tasks(
    vine: Any, store: Store,
) -> None:
    ex = StoreExecutor(vine, store, should_proxy=lambda x: isinstance(x, np.ndarray))
    assert ex.submit(workers.add, 1, 2).result(timeout=60) == 3
    pending = ex.submit(workers.sleepy, np.ones(10), 30)
    factory_pid = getattr(getattr(vine.factory, "_factory_proc", None), "pid", None)
    ex.shutdown(wait=False)
    assert pending.cancelled()  # nothing can run it any more
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(workers.add, 1, 2)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex._engine.submit(workers.add, (1, 2), {})
    assert vine.manager._taskvine is None
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", vine.port))  # the manager stopped listening
    assert not _factory_running(vine.factory)
    if factory_pid is not None:  # the real factory: it and its workers are gone
        assert _wait_gone(factory_pid)
    assert ex.flush(10)
    assert store.connector.keys() == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _wait_gone(pid: int, timeout: float = 30) -> bool:
    """True once ``pid`` and its children have exited."""
    children = _children(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in [pid, *children] if os.path.exists(f"/proc/{p}")
                 and not _zombie(p)]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _factory_running(factory: Any) -> bool:
    return getattr(factory, "_factory_proc", None) is not None  # None once stopped


@real_only
def test_real_taskvine_without_factory_leaves_no_process(
    store: Store, tmp_path: Any, monkeypatch: Any,
) -> None:  # pragma: no cover - needs CCTools
    monkeypatch.chdir(tmp_path)
    vine = futures_executor(port=0, factory=False)
    with StoreExecutor(vine, store) as ex:  # removes the port variables Manager exported
        worker = subprocess.Popen(
            ["vine_worker", "--single-shot", "--timeout", "60", "localhost", str(vine.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            result = ex.submit(workers.double, np.ones(N)).result(timeout=60)
            assert float(result.sum()) == 2.0 * N
            ex.free(result)
        except BaseException:
            worker.kill()
            raise
    assert worker.wait(timeout=30) is not None  # shutdown told it to leave
    assert (tmp_path / "vine-run-info").is_dir()
    assert store.connector.keys() == []
