"""The node store (``shm``/``node``: arena segments) across hosts, on the test bed.

Keys name their node; with ``transfer=True`` a reader on another node pulls the
object once into its own arena (the holder's server sends it from the segment),
later readers there map that copy, and freeing anywhere frees every replica. Every
test leaves no object on any host (counted in each host's index).
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
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.node import ShmConnector
from pxexec.connectors.node.connector import ArenaConnector
from pxexec.connectors.node_transfer.server import stop_server
from pxexec.errors import DeserializationError, NodeUnreachableError, ObjectOnOtherHostError
from pxexec.policies import SizeAtLeast
from tests.bed_helpers import network, small_disk, wait_until

MB = 1 << 20

_COUNT = (
    "import os, sqlite3, sys\n"
    "n = 0\n"
    "for sub in (os.listdir(sys.argv[1]) if os.path.isdir(sys.argv[1]) else []):\n"
    "    p = os.path.join(sys.argv[1], sub, 'index.sqlite')\n"
    "    if os.path.exists(p):\n"
    "        db = sqlite3.connect(p, timeout=30)\n"
    "        n += db.execute('SELECT COUNT(*) FROM objects').fetchone()[0]\n"
    "        db.close()\n"
    "print(n)\n"
)


def objects_on(bed: Any, host: str, path: str) -> int:
    """Objects (any state) in every node store namespace under ``path`` on ``host``."""
    return int(bed.check_output(host, [sys.executable, "-c", _COUNT, path]))


def assert_no_objects(bed: Any, path: str, hosts: tuple[str, ...]) -> None:
    """No host of ``hosts`` holds an object of the store at ``path`` (waited for: frees
    travel between hosts)."""
    for host in hosts:
        assert wait_until(lambda h=host: objects_on(bed, h, path) == 0), host


def total(x: Any) -> float:
    return float(np.asarray(x).sum())


def double(x: Any) -> Any:
    return x * 2


@pytest.fixture
def store_dir(bed: Any) -> Iterator[str]:
    """A node store directory, the same path on every host (each in its own /dev/shm)."""
    path = tempfile.mkdtemp(prefix="pxexec-mhn-", dir="/dev/shm")
    yield path
    for sub in os.listdir(path) if os.path.isdir(path) else []:
        stop_server(os.path.join(path, sub))
    shutil.rmtree(path, ignore_errors=True)
    for host in bed.names:  # node servers there stop once their directory is gone
        bed.check_output(host, ["rm", "-rf", path])


def node_store(bed: Any, store_dir: str, namespace: str, **options: Any) -> ShmConnector:
    options.setdefault("transfer", True)
    if options["transfer"]:
        options.setdefault("bind", network(bed))
    return ShmConnector(store_dir, namespace=namespace, chunk=16 * MB,
                        spill_directory=os.path.join(store_dir, "spill"), **options)


def store_program(store: Store, body: str) -> str:
    """Python code that opens ``store`` as ``s`` (in a new process), then runs ``body``."""
    return ("import json\n"
            "from pxexec.store.store import get_or_create_store\n"
            f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n" + body)


def put_on(bed: Any, host: str, store: Store, expr: str) -> str:
    """Store ``expr`` from a process on ``host`` (which exits); the key."""
    return bed.python(host, store_program(store, f"import numpy as np\nprint(s.put({expr}))\n"))


def test_a_node_store_key_names_its_host_and_a_read_elsewhere_says_so(
    bed: Any, store_dir: str, caplog: Any,
) -> None:
    store = Store("mhn-plain", node_store(bed, store_dir, "plain", transfer=False))
    key = put_on(bed, "n1", store, "np.ones(100_000)")
    assert "@n1~" in key
    with pytest.raises(ObjectOnOtherHostError, match=r"host 'n1'.*transfer=True"):
        store.get(key)
    with caplog.at_level(logging.ERROR, logger="pxexec"):
        store.free([key])  # from the wrong host: logged and counted, never silent
    assert store.metrics.evict_failures == 1 and "n1" in caplog.text
    assert objects_on(bed, "n1", store_dir) == 1
    code = (
        "import json\n"
        "from pxexec.store.store import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        f"s.evict({key!r})\n"
    )
    bed.python("n1", code)
    assert objects_on(bed, "n1", store_dir) == 0


def test_a_read_on_another_host_lands_in_its_arena_once_and_a_free_frees_every_replica(
    bed: Any, store_dir: str,
) -> None:
    connector = node_store(bed, store_dir, "rt")
    store = Store("mhn-rt", connector)
    key = put_on(bed, "n1", store, "np.arange(10 * 2**20 // 8, dtype=np.float64)")
    assert "@n1~" in key and key.count("@") == 2  # token@host~boot@ip:port
    expected = float(np.arange(10 * MB // 8, dtype=np.float64).sum())
    sent_before = bed.link_bytes("n1")[1]
    assert total(store.get(key)) == expected  # the producer exited: n1's server serves
    token = key.partition("@")[0]
    place = ArenaConnector.locate(connector, token)
    assert place is not None and os.path.basename(place[0]).startswith("seg-")  # the arena
    # a second reader on this host maps the local copy: nothing more crosses n1's link
    reader = (
        "import json\n"
        "from pxexec.store.store import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        f"print(float(s.get({key!r}).sum()))\n"
    )
    assert float(bed.python("head", reader)) == expected
    sent = bed.link_bytes("n1")[1] - sent_before
    assert 10 * MB <= sent < 11 * MB, sent
    # n2 pulls its own replica; one free from the head frees n1's object and both copies
    assert float(bed.python("n2", reader)) == expected
    assert objects_on(bed, "n2", store_dir) == 1
    store.evict(key)
    assert_no_objects(bed, store_dir, ("head", "n1", "n2"))


def test_a_full_arena_spills_what_it_receives(bed: Any, store_dir: str) -> None:
    connector = ShmConnector(store_dir, namespace="spill", chunk=MB, capacity=MB,
                             spill_directory=os.path.join(store_dir, "spill"), transfer=True,
                             bind=network(bed))
    store = Store("mhn-spill", connector)
    key = put_on(bed, "n1", store, "np.ones(4 * 2**20 // 8)")
    assert total(store.get(key)) == 4 * MB / 8
    assert connector.stats()["spilled_objects_now"] == 1
    store.evict(key)
    assert_no_objects(bed, store_dir, ("head", "n1"))


def test_many_small_objects_come_over_one_connection(bed: Any, store_dir: str) -> None:
    store = Store("mhn-batch", node_store(bed, store_dir, "batch"))
    code = (
        "import json\n"
        "from pxexec.store.store import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        "print(' '.join(s.put_batch([{'i': i} for i in range(200)])))\n"
    )
    keys = bed.python("n1", code).split()
    assert store.get_batch(keys) == [{"i": i} for i in range(200)]
    assert objects_on(bed, "head", store_dir) == 200  # copies, in this node's arena
    assert store.connector.transfer_client().idle_connections() == 1
    store.evict_batch(keys)
    assert_no_objects(bed, store_dir, ("head", "n1"))


def test_dask_round_trip_and_fan_out_cross_each_link_once(
    bed: Any, store_dir: str,
) -> None:
    from distributed import Client

    scheduler = bed.start_dask_scheduler("head", port=19786 + os.getpid() % 1000)
    for host in ("n1", "n2"):
        bed.start_dask_worker(host, scheduler)
    client = Client(scheduler, timeout=30)
    try:
        client.wait_for_workers(2, timeout=60)
        workers = {info["name"].split("-")[0]: addr
                   for addr, info in client.scheduler_info()["workers"].items()}
        store = Store("mhn-dask", node_store(bed, store_dir, "dask"))
        data = np.random.default_rng(0).random(10 * MB // 8)
        with StoreExecutor(client, store, SizeAtLeast(MB), close_engine=False) as ex:
            before = bed.link_bytes("n1")
            result = ex.options(workers=[workers["n1"]]).submit(double, data).result()
            assert np.array_equal(np.asarray(result), data * 2)
            after = bed.link_bytes("n1")
            assert 10 * MB <= after[0] - before[0] < 11.5 * MB  # the argument, once in
            assert 10 * MB <= after[1] - before[1] < 11.5 * MB  # the result, once out
            del result
            ex.flush()
            from pxexec.store.ownership import borrow

            owner = store.owned_proxy(data)
            before2 = {h: bed.link_bytes(h) for h in ("n1", "n2")}
            futures = [ex.options(workers=[workers[h]]).submit(total, borrow(owner))
                       for h in ("n1", "n2", "n1", "n2")]
            assert {f.result() for f in futures} == {float(data.sum())}
            for h in ("n1", "n2"):  # each worker host's link carries it once
                got = bed.link_bytes(h)[0] - before2[h][0]
                assert 10 * MB <= got < 11.5 * MB, (h, got)
            del futures
            owner.free()
            ex.flush()
    finally:
        client.close()
    assert_no_objects(bed, store_dir, ("head", "n1", "n2"))


def test_link_down_and_producer_killed_give_a_clear_error_then_tasks_succeed(
    bed: Any, store_dir: str,
) -> None:
    connector = node_store(bed, store_dir, "gone", transfer_timeout=2, replica_lease=1.5)
    store = Store("mhn-gone", connector)
    copied = put_on(bed, "n1", store, "np.ones(100_000)")
    lost = put_on(bed, "n1", store, "np.zeros(100_000)")
    assert total(store.get(copied)) == 100_000.0  # the head now holds a replica
    bed.link("n1", False)
    start = time.monotonic()
    with pytest.raises(NodeUnreachableError, match=r"host 'n1' at 10\.") as info:
        store.get(lost)
    assert time.monotonic() - start < 10 and isinstance(info.value, ConnectionError)
    # the replica of an object whose origin cannot be reached expires (replica_lease)
    assert wait_until(lambda: objects_on(bed, "head", store_dir) == 0, timeout=10)
    bed.link("n1", True)
    assert total(store.get(lost)) == 0.0  # link back: the next read succeeds
    store.evict(lost)
    bed.kill_host("n1")  # the producer host's processes (its node server too) die
    start = time.monotonic()
    with pytest.raises(NodeUnreachableError, match="'n1'"):
        store.get(copied)
    assert time.monotonic() - start < 10
    fresh = put_on(bed, "n2", store, "np.full(100_000, 2.0)")  # next tasks succeed
    assert total(store.get(fresh)) == 200_000.0
    store.evict(fresh)
    assert_no_objects(bed, store_dir, ("head", "n2"))
    bed.check_output("n1", ["rm", "-rf", store_dir])  # n1's memory, like a hung node's
    assert objects_on(bed, "n1", store_dir) == 0


def test_a_host_route_serves_data_that_leaves_its_host_and_frees_it_from_elsewhere(
    bed: Any, store_dir: str,
) -> None:
    node = node_store(bed, store_dir, "route").config()
    small = {"type": "shm", "directory": store_dir, "namespace": "small"}
    routes = [Route("workers", node, host=r"n[0-9]+", min_size=1000), Route("small", small)]
    multi = MultiConnector(routes, default="small")
    assert not routes[0].active  # dormant on the head
    store = Store("mhn-route", multi)
    key = put_on(bed, "n1", store, "np.ones(200_000)")
    assert key.startswith("workers:") and "@n1~" in key
    assert total(store.get(key)) == 200_000.0  # read here, through the transfer
    store.evict(key)  # freed from the head: n1's object and the head's copy go
    assert_no_objects(bed, store_dir, ("head", "n1"))
    plain = [Route("workers", {**node, "transfer": False}, host=r"n[0-9]+", min_size=1000),
             Route("small", {"type": "local"})]
    no_transfer = Store("mhn-route-plain", MultiConnector(plain, default="small"))
    with pytest.raises(Exception, match="direct transfer"):
        no_transfer.get(key)


def test_an_owner_on_another_node_keeps_the_lease_alive(bed: Any, store_dir: str) -> None:
    from pxexec.store.leases import keeper

    store = Store("mhn-lease", node_store(bed, store_dir, "lease", lease=1.5))
    # the writer on n1 holds both objects, waits until the head's owner is recorded on
    # n1 too (in n1's index, with the heartbeat its renewals bring), then dies
    code = (
        "import json, os, time, numpy as np\n"
        "from pxexec.store.leases import keeper\n"
        "from pxexec.store.store import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        "keys = [s.put(np.ones(1000)), s.put(np.zeros(1000))]\n"
        "keeper().hold(s, keys)\n"
        "print(*keys, flush=True)\n"
        "deadline = time.monotonic() + 60\n"
        "def owners():\n"
        "    with s.connector.arena.index.transaction() as db:\n"
        "        return db.execute('SELECT COUNT(*) FROM owners').fetchone()[0]\n"
        "while time.monotonic() < deadline and owners() < 2:\n"
        "    time.sleep(0.05)\n"
        "os._exit(0)\n"
    )
    writer = bed.spawn("n1", [sys.executable, "-c", code], label="lease-writer-node")
    assert wait_until(lambda: len(bed.log("n1", "lease-writer-node").split()) == 2, timeout=60)
    held, orphan = bed.log("n1", "lease-writer-node").split()
    keeper().hold(store, [held])  # the owner is here, on the head: recorded on n1 as well
    try:
        writer.wait(timeout=60)
        # n1's node server reaps what only the dead writer held; the head's owner keeps
        # ``held`` while it renews
        assert wait_until(lambda: objects_on(bed, "n1", store_dir) == 1, timeout=10)
        time.sleep(3)
        assert objects_on(bed, "n1", store_dir) == 1
        assert float(store.get(held).sum()) == 1000.0
        with pytest.raises(Exception, match="n1"):
            store.get(orphan)
    finally:
        keeper().forget(store, [held])
    # the owner lets go: its heartbeat on n1 stops, the lease runs out there, and the
    # copy here goes with its origin
    assert wait_until(lambda: objects_on(bed, "n1", store_dir) == 0, timeout=15)
    store.evict(held)
    assert wait_until(lambda: objects_on(bed, "head", store_dir) == 0)


class _CountedHashing:
    """Bytes this process hashes with XXH3: streamed (``xxh3_64().update``, the pull)
    and one-shot (``xxh3_64_intdigest``, a decode's verification)."""

    def __init__(self, monkeypatch: Any) -> None:
        import xxhash

        self.streamed = self.one_shot = 0
        real_stream, real_once = xxhash.xxh3_64, xxhash.xxh3_64_intdigest
        counter = self

        class Counted:
            def __init__(self) -> None:
                self.inner = real_stream()

            def update(self, data: Any) -> None:
                counter.streamed += memoryview(data).nbytes
                self.inner.update(data)

            def __getattr__(self, name: str) -> Any:
                return getattr(self.inner, name)

        def once(data: Any) -> int:
            self.one_shot += memoryview(data).nbytes
            return int(real_once(data))

        monkeypatch.setattr(xxhash, "xxh3_64", Counted)
        monkeypatch.setattr(xxhash, "xxh3_64_intdigest", once)


def test_a_pull_hashes_each_large_frame_once_as_it_arrives(
    bed: Any, store_dir: str, monkeypatch: Any,
) -> None:
    pytest.importorskip("xxhash")
    connector = node_store(bed, store_dir, "verify")
    store = Store("mhn-verify", connector, cache_size=0)
    expr = ("{'a': np.arange(3 * 2**20 // 8, dtype=np.float64), "
            "'b': np.arange(2**20 + 3, dtype=np.uint8), 'name': 'pulled'}")
    key = put_on(bed, "n1", store, expr)
    hashed = _CountedHashing(monkeypatch)  # in this process: the one that pulls
    got = store.get(key)
    assert got["name"] == "pulled"
    assert np.array_equal(got["a"], np.arange(3 * MB // 8, dtype=np.float64))
    assert np.array_equal(got["b"], np.arange(MB + 3, dtype=np.uint8))
    large = 3 * MB + MB + 3
    assert (hashed.streamed, hashed.one_shot) == (large, 0)  # while receiving, only
    again = Store("mhn-verify-2", connector, cache_size=0).get(key)  # the same copy
    assert np.array_equal(again["b"], got["b"])
    assert (hashed.streamed, hashed.one_shot) == (large, 0)  # not hashed again
    del got, again
    store.evict(key)
    assert_no_objects(bed, store_dir, ("head", "n1"))


def test_an_object_corrupted_on_its_host_is_refused_and_never_kept(
    bed: Any, store_dir: str,
) -> None:
    pytest.importorskip("xxhash")
    store = Store("mhn-corrupt", node_store(bed, store_dir, "corrupt"))
    # n1 stores an array, then one byte in the middle of its sealed bytes flips
    code = (
        "import json, numpy as np\n"
        "from pxexec.store.store import get_or_create_store\n"
        f"s = get_or_create_store(json.loads({json.dumps(store.config())!r}))\n"
        "key = s.put(np.arange(4 * 2**20 // 8, dtype=np.float64))\n"
        "path, offset, length = s.connector.locate(key)\n"
        "with open(path, 'r+b') as f:\n"
        "    f.seek(offset + length // 2); byte = f.read(1)\n"
        "    f.seek(offset + length // 2); f.write(bytes([byte[0] ^ 0xFF]))\n"
        "print(key)\n"
    )
    key = bed.python("n1", code)
    for _ in range(2):  # each read is refused; nothing is sealed here
        with pytest.raises(DeserializationError,
                           match=r"received from host 'n1' at 10\..* is corrupted .*XXH3"):
            store.get(key)
        assert objects_on(bed, "head", store_dir) == 0
    assert objects_on(bed, "n1", store_dir) == 1
    store.evict(key)
    assert_no_objects(bed, store_dir, ("head", "n1"))
    assert store.connector.keys() == []


def test_on_one_node_keys_name_it_and_no_server_starts(tmp_path: Any) -> None:
    # runs anywhere (no test bed): the same-node path stays as it was
    from pxexec.connectors.nodeid import this_node

    directory = tempfile.mkdtemp(prefix="pxexec-mhn-one-", dir="/dev/shm")
    try:
        connector = ShmConnector(directory, chunk=MB, spill_directory=str(tmp_path))
        key = connector.put([b"x" * 100_000])
        assert key == key.partition("@")[0] + "@" + this_node().tag
        assert bytes(connector.get(key)) == b"x" * 100_000
        assert not os.path.exists(os.path.join(connector.path, ".node-server.json"))
        elsewhere = key.partition("@")[0] + "@n9~00000000"
        with pytest.raises(ObjectOnOtherHostError, match="host 'n9'"):
            connector.get(elsewhere)
        with pytest.raises(ObjectOnOtherHostError, match="cannot free"):
            connector.evict(elsewhere)
        assert connector.keys() == [key]
        connector.evict(key)
        assert connector.keys() == [] and connector.stats()["objects"] == 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_reader_cut_off_mid_pull_leaves_nothing_pinned_on_the_holder(
    bed: Any, store_dir: str,
) -> None:
    """The holder's server lets go of an object whose reader vanished mid-transfer
    within its send grace (30 s), so freeing it frees it (not 10 minutes later)."""
    store = Store("mhn-cut", node_store(bed, store_dir, "cut", transfer_timeout=2,
                                        replica_lease=3), cache_size=0)
    key = put_on(bed, "n1", store, "np.arange(5 * 2**20, dtype=np.float64)")  # 40 MB
    bed.shape("n2", rate="100mbit")  # the pull takes over 3 s
    code = store_program(store, (
        "try:\n"
        f"    s.get({key!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    ))
    before = bed.link_bytes("n2")[0]
    reader = bed.spawn("n2", [sys.executable, "-c", code], label="cut-reader")
    assert wait_until(lambda: bed.link_bytes("n2")[0] - before > 8 * MB, timeout=20)
    bed.link("n2", False)
    reader.wait(timeout=30)
    assert "NodeUnreachableError" in bed.log("n2", "cut-reader")
    store.evict(key)  # n1 is reachable from here
    assert wait_until(lambda: objects_on(bed, "n1", store_dir) == 0, timeout=45)
    bed.link("n2", True)
    bed.shape("n2")
    assert_no_objects(bed, store_dir, ("head", "n1", "n2"))


def test_a_reader_without_room_to_spill_a_pulled_object_reads_it_without_a_copy(
    bed: Any, store_dir: str,
) -> None:
    """A pulled object that fits neither the reader's arena nor its spill directory is
    read into this reader's memory, without a node copy, and with a warning naming the
    spill directory (the copy's space is reserved before any byte arrives: a full disk
    is not a SIGBUS mid-receive, nor the holder's fault); an array built in place there
    is a StoreIOError. Nothing is left behind."""
    spill = os.path.join(store_dir, "small-spill")
    connector = ShmConnector(store_dir, namespace="full", chunk=4 * MB, capacity=4 * MB,
                             spill_directory=spill, transfer=True, bind=network(bed))
    store = Store("mhn-full", connector, cache_size=0)
    key = put_on(bed, "n1", store, "np.ones(4 * 2**20)")  # 32 MB: n1 spills it
    with small_disk(bed, "n2", spill, "8m"):
        code = store_program(store, f"print(float(s.get({key!r}).sum()))\n")
        proc = subprocess.run(bed.enter("n2", [sys.executable, "-c", code]),
                              capture_output=True, text=True, timeout=120, env=bed.env())
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.strip() == str(float(4 * 2**20))
        assert "could not keep a copy" in proc.stderr and spill in proc.stderr
        assert bed.check_output("n2", ["find", spill, "-type", "f"]) == ""  # none left
        empty = store_program(store, (
            "try:\n"
            "    s.empty(4 * 2**20)\n"  # built in place: the same reservation
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n"
        ))
        assert bed.python("n2", empty) == "StoreIOError"
    store.evict(key)
    assert_no_objects(bed, store_dir, ("head", "n1", "n2"))


def test_an_empty_node_server_stops_though_readers_keep_connections_to_it(
    bed: Any, store_dir: str,
) -> None:
    """Idle pooled connections are not requests: a node server whose store has been
    empty for ``idle`` seconds stops, and the readers' next pull goes to its successor."""
    store = Store("mhn-idle", node_store(bed, store_dir, "idle", idle=1.0), cache_size=0)
    first = put_on(bed, "n1", store, "np.ones(3 * 2**20)")  # 24 MB: several streams
    assert total(store.get(first)) == 3 * 2**20
    assert store.connector.transfer_client().idle_connections() > 1
    store.evict(first)
    running = ("from pxexec.connectors.node_transfer.server import server_pid\n"
               f"print(server_pid({os.path.join(store_dir, 'idle')!r}))\n")
    assert wait_until(lambda: bed.python("n1", running) == "None", timeout=15)
    second = put_on(bed, "n1", store, "np.full(3 * 2**20, 2.0)")  # a new server
    assert total(store.get(second)) == 6 * 2**20  # over new connections
    store.evict(second)
    assert_no_objects(bed, store_dir, ("head", "n1"))


def test_frees_in_a_row_are_answered_while_a_node_with_copies_is_cut_off(
    bed: Any, store_dir: str,
) -> None:
    """The holder answers each free at once and tells the nodes with copies after, off
    the connection: a copy's node that does not answer delays no later request."""
    store = Store("mhn-frees", node_store(bed, store_dir, "frees", transfer_timeout=2,
                                          replica_lease=3), cache_size=0)
    keys = [put_on(bed, "n1", store, f"np.full(100_000, {i}.0)") for i in range(3)]
    code = store_program(store, f"print(sum(float(s.get(k).sum()) for k in {keys!r}))\n")
    assert bed.python("n2", code) == str(300_000.0)  # n2 holds copies of all three
    assert objects_on(bed, "n2", store_dir) == 3
    assert store.connector.transfer_client().has(  # a pooled connection to n1
        keys[0].split("@")[1], keys[0].rsplit("@", 1)[1], [keys[0].split("@")[0]]) == [True]
    bed.link("n2", False)
    start = time.monotonic()
    store.free(keys)  # one connection to n1, three requests in a row
    assert store.metrics.evict_failures == 0
    assert time.monotonic() - start < 1.5
    assert wait_until(lambda: objects_on(bed, "n1", store_dir) == 0)
    bed.link("n2", True)  # its copies go: their origin no longer has them
    assert_no_objects(bed, store_dir, ("head", "n1", "n2"))
