"""Across hosts, on the simulated cluster of pxexec.testbed (skipped without namespaces).

The test process is the head (client, Dask scheduler); n1 and n2 run one Dask worker
each; store runs redis-server. Every test leaves no object on any host.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store, StoreExecutor
from pxexec.connectors.node_transfer.server import stop_server
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import NodeUnreachableError, ObjectOnOtherHostError, StoreConnectionError
from pxexec.policies import SizeAtLeast
from pxexec.store.registry import clear_registry
from tests.bed_helpers import network, small_disk, wait_until

MB = 1 << 20


def double(x: Any) -> Any:
    return x * 2


def total(x: Any) -> float:
    return float(np.asarray(x).sum())


def hostname() -> str:
    import socket

    return socket.gethostname()


@pytest.fixture
def store_dir(bed: Any) -> Iterator[str]:
    """A store directory, the same path on every host (each in its own /dev/shm)."""
    path = tempfile.mkdtemp(prefix="pxexec-mh-", dir="/dev/shm")
    yield path
    for sub in _listdir(path):
        stop_server(os.path.join(path, sub))
    shutil.rmtree(path, ignore_errors=True)
    for host in bed.names:  # node servers there stop once their directory is gone
        bed.check_output(host, ["rm", "-rf", path])


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def objects_on(bed: Any, host: str, path: str) -> list[str]:
    """Object files of every store namespace under ``path`` on ``host``."""
    if host == "head":
        names = [n for sub in _listdir(path) for n in _listdir(os.path.join(path, sub))]
    else:
        out = bed.check_output(host, ["sh", "-c", f"ls {path}/* 2>/dev/null || true"])
        names = out.split()
    return sorted(n for n in names if len(n) == 32 and not n.startswith("."))


def transfer_store(bed: Any, store_dir: str, name: str, namespace: str) -> Store:
    """A store of node-local shared memory whose objects other hosts fetch directly."""
    return Store(name, SharedMemoryConnector(store_dir, namespace=namespace, transfer=True,
                                             bind=network(bed)))


def put_on(bed: Any, host: str, store: Store, lines: str) -> str:
    """What ``lines`` print in a new Python on ``host``, where ``s`` is ``store``."""
    return bed.python(host, "import json\nfrom pxexec.store.store import get_or_create_store\n"
                      f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
                      f"{lines}\n")


@pytest.fixture(scope="module")
def dask_on_bed(testbed: Any) -> Iterator[tuple[Any, dict[str, str]]]:
    """A Dask scheduler on the head and one worker process on each of n1 and n2."""
    from distributed import Client

    scheduler = testbed.start_dask_scheduler("head", port=0 or 18786 + os.getpid() % 1000)
    for host in ("n1", "n2"):
        testbed.start_dask_worker(host, scheduler)
    client = Client(scheduler, timeout=30)
    client.wait_for_workers(2, timeout=60)
    workers = {info["name"].split("-")[0]: addr
               for addr, info in client.scheduler_info()["workers"].items()}
    try:
        yield client, workers
    finally:
        client.close()
        for host in ("head", "n1", "n2"):
            testbed.kill_host(host)


def test_node_local_read_elsewhere_names_the_host_and_free_is_not_swallowed(
    bed: Any, store_dir: str, caplog: Any,
) -> None:
    store = Store("mh-plain", SharedMemoryConnector(store_dir, namespace="plain"))
    code = (
        "import json, numpy as np\n"
        "from pxexec.store.registry import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        "print(s.put(np.ones(1000)))\n"
    )
    key = bed.python("n1", code)
    assert "@n1~" in key
    with pytest.raises(ObjectOnOtherHostError, match=r"host 'n1'.*transfer=True") as info:
        store.get(key)
    assert isinstance(info.value, KeyError)
    with caplog.at_level(logging.ERROR, logger="pxexec"):
        store.free([key])  # from the wrong host: logged and counted, never silent
    assert store.metrics.evict_failures == 1 and store.metrics.evictions_given_up == 1
    assert "n1" in caplog.text
    assert objects_on(bed, "n1", store_dir) != []
    bed.python("n1", code.replace("print(s.put(np.ones(1000)))", f"s.evict({key!r})"))
    assert objects_on(bed, "n1", store_dir) == []


def test_round_trip_and_fan_out_with_direct_transfer(
    bed: Any, store_dir: str, dask_on_bed: tuple[Any, dict[str, str]],
) -> None:
    client, workers = dask_on_bed
    connector = SharedMemoryConnector(store_dir, namespace="rt", transfer=True,
                                      bind=network(bed))
    store = Store("mh-rt", connector)
    data = np.random.default_rng(0).random(10 * MB // 8)
    with StoreExecutor(client, store, SizeAtLeast(MB), close_engine=False) as ex:
        before = {h: bed.link_bytes(h) for h in ("n1", "n2")}
        result = ex.options(workers=[workers["n1"]]).submit(double, data).result()
        assert np.array_equal(np.asarray(result), data * 2)
        after = {h: bed.link_bytes(h) for h in ("n1", "n2")}
        received = after["n1"][0] - before["n1"][0]
        sent = after["n1"][1] - before["n1"][1]
        # the argument crosses n1's link once in, the result once out (plus a little)
        assert 10 * MB <= received < 11.5 * MB
        assert 10 * MB <= sent < 11.5 * MB
        assert after["n2"][0] - before["n2"][0] < MB
        del result
        ex.flush()
        # fan-out: one object, four tasks on two hosts: each host pulls it once
        owner = store.owned_proxy(data)
        from pxexec.store.ownership import borrow

        before = {h: bed.link_bytes(h) for h in ("n1", "n2")}
        futures = [ex.options(workers=[workers[h]]).submit(total, borrow(owner))
                   for h in ("n1", "n2", "n1", "n2")]
        assert {f.result() for f in futures} == {float(data.sum())}
        for h in ("n1", "n2"):
            got = bed.link_bytes(h)[0] - before[h][0]
            assert 10 * MB <= got < 11.5 * MB, (h, got)
        assert wait_until(lambda: len(objects_on(bed, "n1", store_dir)) == 1)  # n1's copy
        del futures
        owner.free()  # frees the object and every copy
        ex.flush()
    for host in ("head", "n1", "n2"):
        assert wait_until(lambda h=host: objects_on(bed, h, store_dir) == []), host


def test_objects_outlive_their_producer_process(bed: Any, store_dir: str) -> None:
    store = transfer_store(bed, store_dir, "mh-exit", "exit")
    # the producer has exited; n1's node server serves it
    key = put_on(bed, "n1", store, "import numpy as np\nprint(s.put(np.arange(1_000_000)))")
    assert int(store.get(key).sum()) == sum(range(1_000_000))
    assert wait_until(lambda: objects_on(bed, "head", store_dir) != [])  # the head's copy
    store.evict(key)
    assert wait_until(lambda: objects_on(bed, "n1", store_dir) == [])
    assert objects_on(bed, "head", store_dir) == []


def test_a_host_without_room_for_its_copies_reads_and_keeps_nothing(
    bed: Any, store_dir: str,
) -> None:
    """On a host whose store directory is full, reads still return their objects and
    the node's copies are given up with a warning: one object read alone (received in
    memory), several read at once (received in place, whose files have their space
    reserved before any byte arrives: a SIGBUS killed the reader before). No
    half-written file is left."""
    store = transfer_store(bed, store_dir, "mh-full", "full")
    big = put_on(bed, "n1", store, "import numpy as np\nprint(s.put(np.ones(4 * 2**20)))")
    small = put_on(bed, "n1", store, "import numpy as np\nprint(s.put(np.ones(200_000)))")
    other = put_on(bed, "n1", store, "import numpy as np\nprint(s.put(np.ones(100_000)))")
    with small_disk(bed, "n2", store_dir, "1m"):
        code = (
            "import logging, time\n"
            "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
            f"print(float(s.get({big!r}).sum()), flush=True)\n"
            "time.sleep(1)\n"  # the node's copy is written in the background
            f"print([float(a.sum()) for a in s.get_batch([{small!r}, {other!r}])])\n"
        )
        proc = subprocess.run(bed.enter("n2", [sys.executable, "-c", (
            "import json\nfrom pxexec.store.store import get_or_create_store\n"
            f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n" + code)]),
            capture_output=True, text=True, timeout=120, env=bed.env())
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = proc.stdout.splitlines()
        assert len(lines) == 2, (proc.stdout, proc.stderr[-2000:])
        assert lines[0] == str(float(4 * 2**20))
        assert lines[1] == "[200000.0, 100000.0]"
        assert "could not keep this node's copy" in proc.stderr
        assert "could not keep copies of 2 objects" in proc.stderr
        assert bed.check_output("n2", ["find", store_dir, "-name", "*.tmp"]) == ""
    store.free([big, small, other])
    assert wait_until(lambda: objects_on(bed, "n1", store_dir) == [])


def test_vanished_node_gives_a_clear_error_in_bounded_time_and_copies_expire(
    bed: Any, store_dir: str,
) -> None:
    connector = SharedMemoryConnector(store_dir, namespace="gone", transfer=True,
                                      bind=network(bed), transfer_timeout=2,
                                      replica_lease=1.5)
    store = Store("mh-gone", connector)
    code = (
        "import json, numpy as np\n"
        "from pxexec.store.registry import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        "print(s.put(np.ones(100_000)), s.put(np.zeros(100_000)))\n"
    )
    copied, lost = bed.python("n1", code).split()
    assert float(store.get(copied).sum()) == 100_000.0  # the head now holds a copy
    bed.link("n1", False)  # the network to n1 goes
    start = time.monotonic()
    with pytest.raises(NodeUnreachableError, match=r"host 'n1' at 10\.213\.") as info:
        store.get(lost)
    assert time.monotonic() - start < 4  # transfer_timeout (2 s), not a hang
    assert isinstance(info.value, ConnectionError)
    # the head's copy of an object whose origin cannot be reached expires
    assert wait_until(lambda: objects_on(bed, "head", store_dir) == [], timeout=10)
    bed.link("n1", True)
    bed.kill_host("n1")  # now n1's processes die (its memory stays, like a hung node)
    start = time.monotonic()
    with pytest.raises(NodeUnreachableError, match="'n1'"):
        store.get(lost)
    assert time.monotonic() - start < 4
    bed.check_output("n1", ["rm", "-rf", store_dir])


def test_transfer_needs_the_secret(bed: Any, store_dir: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("PXEXEC_MH_SECRET", "right")
    connector = SharedMemoryConnector(store_dir, namespace="auth", transfer=True,
                                      bind=network(bed), secret_env="PXEXEC_MH_SECRET")
    store = Store("mh-auth", connector)
    key = store.put(np.ones(1000))
    config = json.dumps(store.config())
    code = (
        "import json\n"
        "from pxexec.store.registry import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({config!r}))\n"
        "try:\n"
        f"    print(float(s.get({key!r}).sum()))\n"
        "except ConnectionError as exc:\n"
        "    print('refused:', exc)\n"
    )
    good = bed.check_output("n2", ["env", "PXEXEC_MH_SECRET=right", bed._python, "-c", code])
    assert good == "1000.0"
    bad = bed.check_output("n1", ["env", "PXEXEC_MH_SECRET=wrong", bed._python, "-c", code])
    assert bad.startswith("refused:") and "secret" in bad
    assert objects_on(bed, "n1", store_dir) == []  # nothing was received
    store.evict(key)
    assert wait_until(lambda: objects_on(bed, "n2", store_dir) == [])
    assert objects_on(bed, "head", store_dir) == []


def test_redis_link_down_fails_fast_naming_host_and_address_then_recovers(bed: Any) -> None:
    from pxexec.connectors.redis import RedisConnector

    url = bed.start_redis("store")
    store = Store("mh-redis", RedisConnector(url, prefix="mh"), cache_size=0)
    key = store.put(np.ones(MB))
    assert store.get(key).sum() == MB  # a pooled connection now exists
    bed.link("store", False)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError) as info:
        store.get(key)
    assert time.monotonic() - start < 10
    address = url.rsplit("/", 1)[0].split("//")[1]
    assert address in str(info.value) and repr(hostname()) in str(info.value)
    bed.link("store", True)
    # the pooled connection is stale now: the next operations succeed without a failure
    assert store.get(key).sum() == MB
    store.evict(key)
    assert store.connector.keys() == []
    clear_registry()


def test_parsl_htex_workers_on_another_host(bed: Any, store_dir: str, tmp_path: Any) -> None:
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    from pxexec.engines.parsl import executor_from_config

    config = Config(
        executors=[HighThroughputExecutor(
            label="htex-n2", max_workers_per_node=1, address=bed.head_address,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                                   launcher=bed.parsl_launcher("n2")),
        )],
        run_dir=str(tmp_path), strategy="none", initialize_logging=False,
    )
    pool = executor_from_config(config)
    store = Store("mh-parsl", SharedMemoryConnector(store_dir, namespace="parsl",
                                                   transfer=True, bind=network(bed)))
    try:
        with StoreExecutor(pool, store, SizeAtLeast(MB), close_engine=False) as ex:
            assert ex.submit(hostname).result(timeout=120) == "n2"
            data = np.arange(MB // 8, dtype=np.float64)
            result = ex.submit(double, data).result(timeout=120)  # made on n2, read here
            assert np.array_equal(np.asarray(result), data * 2)
            del result
            ex.flush()
    finally:
        pool.shutdown()
    for host in ("head", "n2"):
        assert wait_until(lambda h=host: objects_on(bed, h, store_dir) == []), host


def test_an_owner_on_another_node_keeps_the_lease_alive(bed: Any, store_dir: str) -> None:
    from pxexec.store.leases import keeper

    store = Store("mh-lease", SharedMemoryConnector(store_dir, namespace="lease", lease=1.5,
                                                   transfer=True, bind=network(bed)))
    # the writer on n1 holds both objects (its owner record there lists them), waits
    # until the head's owner is recorded on n1 too, then dies without freeing anything
    code = (
        "import json, os, sys, time, numpy as np\n"
        "from pxexec.store.leases import keeper\n"
        "from pxexec.store.registry import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        "keys = [s.put(np.ones(1000)), s.put(np.zeros(1000))]\n"
        "keeper().hold(s, keys)\n"
        "print(*keys, flush=True)\n"
        "me = os.uname().nodename\n"
        "deadline = time.monotonic() + 60\n"
        "while time.monotonic() < deadline and not any(\n"
        "        not n.startswith(me + '-') for n in os.listdir(s.connector.leases)):\n"
        "    time.sleep(0.05)\n"
        "os._exit(0)\n"
    )
    writer = bed.spawn("n1", [sys.executable, "-c", code], label="lease-writer")
    assert wait_until(lambda: len(bed.log("n1", "lease-writer").split()) == 2, timeout=60)
    held, orphan = bed.log("n1", "lease-writer").split()
    keeper().hold(store, [held])  # the owner is here, on the head: recorded on n1 as well
    try:
        writer.wait(timeout=60)
        # n1's node server reaps what only the dead writer held; the head's owner,
        # recorded there with its heartbeat, keeps ``held``
        assert wait_until(lambda: len(objects_on(bed, "n1", store_dir)) == 1, timeout=10)
        time.sleep(3)
        assert objects_on(bed, "n1", store_dir) == [held.partition("@")[0]]
        assert orphan.partition("@")[0] not in objects_on(bed, "n1", store_dir)
        assert float(store.get(held).sum()) == 1000.0
    finally:
        keeper().forget(store, [held])
    # the owner lets go (or dies): its heartbeat on n1 stops, the lease runs out there
    # and the copy here goes too
    assert wait_until(lambda: objects_on(bed, "n1", store_dir) == [], timeout=10)
    store.evict(held)
    assert objects_on(bed, "head", store_dir) == []


def test_many_small_objects_come_over_one_connection(bed: Any, store_dir: str) -> None:
    store = transfer_store(bed, store_dir, "mh-batch", "batch")
    keys = put_on(bed, "n1", store,
                  "print(' '.join(s.put_batch([{'i': i} for i in range(200)])))").split()
    assert store.get_batch(keys) == [{"i": i} for i in range(200)]
    assert len(objects_on(bed, "head", store_dir)) == 200  # copies, on this node
    client = store.connector.transfer_client()
    assert client.idle_connections() == 1  # one connection carried all 200
    store.evict_batch(keys)
    assert wait_until(lambda: objects_on(bed, "n1", store_dir) == [])
    assert objects_on(bed, "head", store_dir) == []


def test_a_freed_object_of_another_node_says_where_it_lived(bed: Any, store_dir: str) -> None:
    from pxexec.errors import MissingKeyError

    store = Store("mh-missing", SharedMemoryConnector(store_dir, namespace="missing",
                                                     transfer=True, bind=network(bed)))
    code = (
        "import json\n"
        "from pxexec.store.registry import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        "k = s.put(b'x' * 100); s.evict(k); print(k)\n"
    )
    key = bed.python("n2", code)
    with pytest.raises(MissingKeyError, match="host 'n2', which no longer has it"):
        store.get(key)
