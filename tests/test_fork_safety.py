"""fork: children neither deadlock on inherited locks nor free what their parent owns."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store, exit_hooks
from pxexec.connectors import connector_from_config
from pxexec.connectors.file import FileConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector

KINDS = ["shm", "file", "redis"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _connector(kind: str, shm_dir: str, tmp_path: Any, redis_url: str) -> Any:
    if kind == "shm":
        return SharedMemoryConnector(shm_dir, namespace="fork")
    if kind == "file":
        return FileConnector(str(tmp_path), namespace="fork")
    return RedisConnector(redis_url, prefix=f"fork{uuid.uuid4().hex[:8]}")


@pytest.mark.parametrize("kind", KINDS)
def test_fork_pool_with_eight_submitting_threads(kind: str, shm_dir: str, tmp_path: Any,
                                                 redis_url: str) -> None:
    connector = _connector(kind, shm_dir, tmp_path, redis_url)
    config = json.dumps(connector_from_config(connector.config()).config())
    proc = subprocess.Popen([sys.executable, "-m", "tests.fork_workload", config], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workload and its forked children
        out, _ = proc.communicate()
        pytest.fail(f"the fork workload on {kind} deadlocked (killed after 150 s):\n{out}")
    assert proc.returncode == 0 and "ok" in out, out
    assert connector.keys() == []  # every input and result was freed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["del", "free", "exit"])
def test_a_forked_child_never_frees_what_its_parent_owns(kind: str, how: str, shm_dir: str,
                                                         tmp_path: Any, redis_url: str) -> None:
    store = Store(f"fork-own-{kind}", _connector(kind, shm_dir, tmp_path, redis_url))
    owner = store.owned_proxy(np.arange(1000))
    key = owner.__px_factory__.key
    assert float(owner.sum()) == 499500.0  # resolved (and cached for Redis) in the parent
    pid = os.fork()
    if pid == 0:  # the child drops the inherited owner, then exits as a program would
        status = 0
        try:
            if how == "del":
                del owner
                import gc
                gc.collect()
            elif how == "free":
                owner.free()
        except BaseException:
            status = 1
        finally:
            if how == "exit":  # pxexec's exit hooks, as an exiting interpreter runs them
                # (not every atexit hook of this pytest process: other libraries' hooks,
                # such as distributed's cluster closer, wait forever in a forked child)
                for hook in list(exit_hooks._REGISTERED):
                    hook()
            os._exit(status)
    _wait_for_child(pid)
    assert store.exists(key), "the child evicted its parent's object"
    assert float(Store(f"fork-own-{kind}-reader", store.connector, cache_size=0).get(key).sum()) \
        == 499500.0
    owner.free()
    assert not store.exists(key)


@pytest.mark.parametrize("kind", KINDS)
def test_a_forked_child_that_exits_for_real_leaves_its_parents_objects(
        kind: str, shm_dir: str, tmp_path: Any, redis_url: str) -> None:
    """The child ends with ``sys.exit``: the interpreter's whole exit, in a plain program."""
    connector = _connector(kind, shm_dir, tmp_path, redis_url)
    config = json.dumps(connector_from_config(connector.config()).config())
    proc = subprocess.run([sys.executable, "-m", "tests.fork_exit_workload", config], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout
    assert connector.keys() == []


def _wait_for_child(pid: int, timeout: float = 30.0) -> None:
    """Wait for a forked child to exit 0; fails (and kills it) if it hangs."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(raw) == 0, "the child failed"
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail(f"the forked child hung (killed after {timeout:.0f} s): a deadlock on a lock "
                "its parent's thread held at fork")


@contextlib.contextmanager
def _held_by_another_thread(lock: Any) -> Iterator[None]:
    """``lock`` held by another thread of this process for the block's duration."""
    import threading

    acquired, release = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            acquired.set()
            release.wait(60)

    thread = threading.Thread(target=holder)
    thread.start()
    assert acquired.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()


def _run_in_child(fn: Any, timeout: float = 30.0) -> None:
    """Fork; the child runs ``fn`` (True = ok). Fails if the child hangs (deadlock)."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if fn() else 1)
        except BaseException:
            os._exit(2)
    _wait_for_child(pid, timeout)


@pytest.mark.parametrize("held", ["redis pool", "store registry", "owners", "lease keeper",
                                  "local connector", "freer", "node store maps"])
def test_a_lock_held_by_another_thread_at_fork_never_blocks_the_child(
        held: str, redis_url: str, shm_dir: str) -> None:
    """What a fork pool worker inherits when another thread is inside pxexec at fork;
    the child then works with the store and exits (pxexec's exit hooks)."""

    from pxexec.connectors.local import LocalConnector
    from pxexec.connectors.node import NodeConnector
    from pxexec.executor.freer import Freer
    from pxexec.store import leases as lease
    from pxexec.store import ownership
    from pxexec.store import registry as store_module

    if held == "redis pool":
        connector: Any = RedisConnector(redis_url, prefix=f"lock{uuid.uuid4().hex[:8]}")
    elif held == "node store maps":  # small segments: the child's put needs a new one
        connector = NodeConnector(shm_dir, namespace="fork-lock", chunk=1 << 20)
    else:
        connector = LocalConnector()
    store = Store(f"fork-lock-{held}", connector, cache_size=0)
    key = store.put(np.arange(10))
    assert float(store.get(key).sum()) == 45.0  # the node store maps its segment
    lease.keeper()
    freer = Freer(store)
    lock = {
        "redis pool": lambda: connector.client.connection_pool._lock,
        "store registry": lambda: store_module._STORES_LOCK,
        "owners": lambda: ownership._OWNERS_LOCK,
        "lease keeper": lambda: lease._KEEPER_LOCK,
        "local connector": lambda: connector._lock,
        "freer": lambda: freer._cond,
        "node store maps": lambda: connector.arena._maps_lock,
    }[held]()
    if held == "owners":
        store.owned_proxy(1).free()  # registers the owners' fork hook, as first use does

    def child() -> bool:
        value = Store.from_config(store.config()).get(key)
        owner = Store.from_config(store.config()).owned_proxy(np.ones(3))
        fine = float(value.sum()) == 45.0 and float(owner.sum()) == 3.0
        lease.keeper()
        owner.free()
        mine = store.put(np.ones(300_000))  # 2.4 MB: through the parent's connector
        fine = fine and float(store.get(mine).sum()) == 300_000.0
        store.evict(mine)
        for hook in list(exit_hooks._REGISTERED):  # as the child's interpreter exits
            hook()
        return fine

    with _held_by_another_thread(lock):  # inside pxexec at fork time
        _run_in_child(child)
    store.evict(key)


def test_a_forked_child_leaves_its_parents_failed_evictions_to_the_parent(
        shm_dir: str, monkeypatch: Any) -> None:
    """A child's exit (pxexec's exit hooks) neither retries the evictions its parent
    deferred nor blocks on the parent's retry queue."""

    from pxexec.connectors.node import NodeConnector
    from pxexec.executor.freer import Freer

    store = Store("fork-deferred", NodeConnector(shm_dir, namespace="fork-deferred"),
                  cache_size=0)
    Freer(store)  # its exit hook retries deferred evictions
    store.failed_evictions.delays = (60.0,)  # the parent's own retry waits
    key = store.put(np.arange(10))

    def refuse(*args: Any) -> None:
        raise ConnectionError("the backend is down for this test")

    monkeypatch.setattr(store.connector, "evict_batch", refuse)
    monkeypatch.setattr(store.connector, "evict", refuse)
    assert not store.evict_or_defer([key])  # deferred: the parent will retry it
    monkeypatch.undo()
    assert store.metrics.deferred_evictions == 1 and store.failed_evictions.pending() == 1

    def child() -> bool:
        for hook in list(exit_hooks._REGISTERED):
            hook()
        return store.failed_evictions.pending() == 0 and \
            store.metrics.deferred_evictions == 0

    with _held_by_another_thread(store.failed_evictions._cond):  # the retry queue, busy
        _run_in_child(child)
    assert store.exists(key), "the child freed what its parent had deferred"
    assert store.retry_evictions() and not store.exists(key)  # the parent does
