from __future__ import annotations

import concurrent.futures as cf
import gc
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import Always, SizeAtLeast
from pxexec.store.leases import keeper, reset_keeper
from pxexec.store.ownership import (
    OwnedProxy,
    OwnershipError,
    RefMutProxy,
    RefProxy,
    borrow,
    clone,
    into_owned,
    mut_borrow,
    release,
    update,
)
from tests import workers


@pytest.fixture
def store(shm_dir: str) -> Any:
    with Store(f"own-{uuid.uuid4().hex[:6]}", SharedMemoryConnector(shm_dir)) as s:
        yield s


def test_owner_frees_on_drop_free_and_exit_exactly_once(store: Store) -> None:
    owner = store.owned_proxy([1, 2, 3])
    key = owner.__px_factory__.key
    assert isinstance(owner, OwnedProxy) and owner == [1, 2, 3]
    del owner
    gc.collect()
    assert not store.exists(key)
    second = store.owned_proxy("x")
    second.free()
    second.free()
    assert store.metrics.evictions == 2  # one each, never twice
    with store.owned_proxy({"a": 1}) as third:
        assert third["a"] == 1
    assert store.connector.keys() == []
    with pytest.raises(OwnershipError, match="freed"):
        len(third)


def test_owner_freed_at_interpreter_exit(shm_dir: str) -> None:
    code = (
        "from pxexec import Store\n"
        "from pxexec.connectors.shm import SharedMemoryConnector\n"
        f"s = Store('exit', SharedMemoryConnector({shm_dir!r}, namespace='exit'))\n"
        "kept = s.owned_proxy(b'x' * 1000)\n"
        "print(kept.__px_factory__.key)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip()
    assert SharedMemoryConnector(shm_dir, namespace="exit").keys() == []


def test_borrow_rules(store: Store) -> None:
    owner = store.owned_proxy([1])
    shared = borrow(owner)
    assert isinstance(shared, RefProxy) and shared == [1]
    with pytest.raises(OwnershipError, match="shared borrow"):
        mut_borrow(owner)
    with pytest.raises(OwnershipError, match="borrow"):
        owner.free()
    release(shared)
    with pytest.raises(OwnershipError, match="released"):
        len(shared)
    exclusive = mut_borrow(owner)
    assert isinstance(exclusive, RefMutProxy)
    with pytest.raises(OwnershipError, match="mutably borrowed"):
        borrow(owner)
    exclusive.append(2)
    update(exclusive)
    del exclusive
    gc.collect()  # a dropped borrow ends
    assert store.get(owner.__px_factory__.key) == [1, 2]
    owner.free()


def test_borrow_keeps_owner_alive(store: Store) -> None:
    owner = store.owned_proxy("alive")
    key = owner.__px_factory__.key
    ref = borrow(owner)
    del owner
    gc.collect()
    assert store.exists(key) and ref == "alive"
    del ref
    gc.collect()
    assert not store.exists(key)


def test_clone_update_into_owned(store: Store) -> None:
    owner = store.owned_proxy(np.zeros(3))
    copy = clone(owner)
    assert copy.__px_factory__.key != owner.__px_factory__.key
    owner[0] = 5.0  # changes this process's resolved target ...
    update(owner)  # ... and writes it back
    assert store.get(owner.__px_factory__.key)[0] == 5.0
    assert store.get(copy.__px_factory__.key)[0] == 0.0
    plain = store.proxy_from_key(copy.__px_factory__.key)
    assert into_owned(plain) is copy  # one owner per key
    owner.free()
    copy.free()
    assert store.connector.keys() == []


def test_executor_moves_owners_and_holds_borrows(store: Store) -> None:
    with StoreExecutor(cf.ThreadPoolExecutor(2), store, should_proxy=SizeAtLeast(10**6)) as ex:
        owner = store.owned_proxy(np.ones(10))
        key = owner.__px_factory__.key
        assert ex.submit(workers.total, owner).result() == 10.0
        assert ex.flush(timeout=10)
        assert not store.exists(key)  # moved into the task, freed when it completed
        with pytest.raises(OwnershipError, match="moved"):
            len(owner)
        kept = store.owned_proxy(np.ones(10))
        ref = borrow(kept)
        assert ex.submit(workers.total, ref).result() == 10.0
        mut_borrow(kept)  # the task's borrow ended with its future: no conflict
        gc.collect()


def test_results_are_owned_once(store: Store) -> None:
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, should_proxy=Always()) as ex:
        future = ex.submit(workers.make_array, 10)
        first, second = future.result(), future.result()
        assert isinstance(first, OwnedProxy) and first is second
        del first, second
        gc.collect()
        assert future.result().__px_own__.status == "live"  # the future keeps it
        del future
        gc.collect()
    assert store.connector.keys() == []


def test_failure_and_cancellation_free_moved_inputs(store: Store) -> None:
    with StoreExecutor(cf.ThreadPoolExecutor(1), store) as ex:
        doomed = store.owned_proxy(np.ones(10))
        with pytest.raises(ValueError):
            ex.submit(workers.fail, doomed).result()
        blocker = ex.submit(workers.sleepy, 1, 0.3)
        pending_input = store.owned_proxy(np.ones(10))
        pending = ex.submit(workers.total, pending_input)
        assert pending.cancel()
        blocker.result()
    gc.collect()
    assert store.connector.keys() == []


def _child_owner(code_store: str, count: int) -> subprocess.Popen[str]:
    code = (
        "import sys, time\n"
        "from pxexec import Store\n"
        f"{code_store}\n"
        f"owners = [s.owned_proxy(b'x' * 10_000) for _ in range({count})]\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.mark.parametrize("kind", ["shm", "file", "redis"])
def test_killed_owner_objects_expire(kind: str, shm_dir: str, tmp_path: Any,
                                     redis_url: str) -> None:
    lease = 2.0  # renewed every 0.67 s: robust to a loaded CI machine
    prefix = f"lease{uuid.uuid4().hex[:6]}"
    make = {
        "shm": f"from pxexec.connectors.shm import SharedMemoryConnector as C\n"
               f"s = Store('k', C({shm_dir!r}, namespace='k', lease={lease}))",
        "file": f"from pxexec.connectors.file import FileConnector as C\n"
                f"s = Store('k', C({str(tmp_path)!r}, namespace='k', lease={lease}))",
        "redis": f"from pxexec.connectors.redis import RedisConnector as C\n"
                 f"s = Store('k', C({redis_url!r}, prefix={prefix!r}, ttl={lease}))",
    }[kind]
    namespace: dict[str, Any] = {"Store": Store}
    proc = _child_owner(make, 50)
    exec(make, namespace)  # the same store in this process, to look at it
    connector = namespace["s"].connector
    assert len(connector.keys()) == 50
    time.sleep(lease * 1.5)  # alive: the child's keeper renews its leases
    if kind != "redis":
        connector.reap()
    assert len(connector.keys()) == 50
    killed_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while connector.keys() and time.monotonic() - killed_at < 15:
        if kind != "redis":
            connector.reap()
        time.sleep(0.1)
    assert connector.keys() == []


def test_live_owner_never_expires_during_long_tasks(shm_dir: str) -> None:
    reset_keeper()
    store = Store("long", SharedMemoryConnector(shm_dir, namespace="long", lease=1.0))
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, should_proxy=SizeAtLeast(50)) as ex:
        owner = store.owned_proxy(b"kept")
        future = ex.submit(workers.sleepy, np.ones(10), 3.0)  # input held by the executor
        time.sleep(1.5)
        store.connector.reap()
        assert len(store.connector.keys()) == 2
        result = future.result()
        store.connector.reap()
        assert float(result[0]) == 1.0 and owner == b"kept"
        assert keeper().renewals >= 3
        ex.free(result)
        owner.free()
    assert store.connector.keys() == []
    reset_keeper()


def test_redis_renewal_is_one_round_trip(redis_url: str) -> None:
    reset_keeper()
    store = Store("renew", RedisConnector(redis_url, prefix="renew", ttl=5))
    owners = [store.owned_proxy(i) for i in range(100)]
    assert len(keeper().held(store)) == 100
    import redis

    client = redis.Redis.from_url(redis_url)
    before = client.info("stats")["total_commands_processed"]
    keeper().renew_now()
    after = client.info("stats")["total_commands_processed"]
    assert 100 <= after - before <= 102  # 100 PEXPIREs (+ INFO) in one pipeline
    assert all(client.pttl(o.__px_factory__.key) > 4000 for o in owners)
    for o in owners:
        o.free()
    assert keeper().held(store) == set()
    reset_keeper()


def test_chained_results_are_freed_without_the_garbage_collector(store: Store) -> None:
    # On engines that cannot take futures as arguments, the executor waits for the
    # dependencies itself; that must not leave reference cycles that keep owners alive.
    gc.disable()
    try:
        with StoreExecutor(cf.ThreadPoolExecutor(2), store, should_proxy=Always()) as ex:
            first = ex.submit(workers.make_array, 10)
            second = ex.submit(np.add, first, first)
            third = ex.submit(np.add, second, first)
            assert list(third.result()) == [3.0] * 10
            del first, second, third
            assert ex.flush(10)
            assert store.connector.keys() == []
    finally:
        gc.enable()
