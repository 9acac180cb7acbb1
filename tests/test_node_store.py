"""The node-local store: segments, allocator, pinned views, spill, crashes, engines."""

from __future__ import annotations

import concurrent.futures as cf
import gc
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.codec.serialize import deserialize, serialize
from pxexec.connectors import connector_from_config, connector_from_url
from pxexec.connectors.node import NodeConnector, ShmConnector
from pxexec.errors import ConfigError, DeserializationError, UnsafeDirectoryError
from pxexec.executor.facade import StoreExecutor
from pxexec.store.leases import reset_keeper
from pxexec.testing import ConnectorConformance
from tests import node_workers, workers

MB = 1 << 20


@pytest.fixture
def node_dirs() -> Iterator[tuple[str, str]]:
    shm = tempfile.mkdtemp(prefix="pxexec-node-test-", dir="/dev/shm")
    spill = tempfile.mkdtemp(prefix="pxexec-spill-test-")
    yield shm, spill
    shutil.rmtree(shm, ignore_errors=True)
    shutil.rmtree(spill, ignore_errors=True)


def make(dirs: tuple[str, str], **options: Any) -> NodeConnector:
    options.setdefault("chunk", 16 * MB)
    options.setdefault("capacity", 64 * MB)
    return NodeConnector(dirs[0], spill_directory=dirs[1], namespace=uuid.uuid4().hex[:8],
                         **options)


def assert_empty(connector: NodeConnector) -> None:
    """Nothing left: no objects, no pins, no arena bytes in use, no spill files."""
    gc.collect()
    stats = connector.stats()
    assert stats["objects"] == stats["writing"] == stats["retired"] == stats["pins"] == 0, stats
    assert stats["bytes_in_use"] == 0 and stats["spilled_bytes_now"] == 0, stats
    assert not os.path.isdir(connector.spill_directory) or not os.listdir(
        connector.spill_directory)


@pytest.fixture
def node(node_dirs: tuple[str, str]) -> Iterator[NodeConnector]:
    connector = make(node_dirs)
    yield connector
    connector.evict_batch(connector.keys())
    assert_empty(connector)
    assert connector.trim()


class TestNodeConformance(ConnectorConformance):
    expected_capabilities = {"AllocatesInPlace", "IdentifiesContent", "Leases", "ListsKeys",
                             "Replaces"}

    @pytest.fixture(params=["view", "private"])
    def connector(self, request: Any, node_dirs: tuple[str, str]) -> Iterator[Any]:
        connector = make(node_dirs, reads=request.param)
        yield connector
        connector.evict_batch(connector.keys())
        assert_empty(connector)


class TestShmLeasedConformance(ConnectorConformance):
    """What ``shm`` names (ShmConnector), with a lease: held objects survive the reaper."""

    expected_capabilities = {"AllocatesInPlace", "IdentifiesContent", "Leases", "ListsKeys",
                             "Replaces"}

    @pytest.fixture
    def connector(self, node_dirs: tuple[str, str]) -> Iterator[Any]:
        connector = ShmConnector(node_dirs[0], spill_directory=node_dirs[1], chunk=16 * MB,
                                 capacity=64 * MB, namespace=uuid.uuid4().hex[:8], lease=30)
        yield connector
        connector.evict_batch(connector.keys())
        assert_empty(connector)


# -- layout and reuse ----------------------------------------------------------------


def test_files_are_private_and_segments_reused(node: NodeConnector) -> None:
    info = os.lstat(node.path)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    offsets = []
    for _ in range(5):  # same size, freed each time: always the same, populated, space
        key = node.put(serialize(np.ones(2 * MB // 8)))
        offsets.append(node.locate(key))
        node.evict(key)
    assert len(set(offsets)) == 1
    segment, offset, _length = offsets[0]
    assert offset % os.sysconf("SC_PAGE_SIZE") == 0  # large objects are page-aligned
    assert stat.S_IMODE(os.lstat(segment).st_mode) == 0o600
    assert node.stats()["segments"] == 1


def test_allocator_coalesces_freed_neighbours(node: NodeConnector) -> None:
    keys = [node.put([bytes(3 * MB)]) for _ in range(4)]
    for key in keys:
        node.evict(key)
    big = node.put([bytes(12 * MB)])  # fits only if the four extents merged back
    assert node.stats()["segments"] == 1 and node.stats()["spilled_objects"] == 0
    node.evict(big)


def test_view_is_zero_copy_read_only_and_outlives_evict(node: NodeConnector) -> None:
    store = Store(f"views-{uuid.uuid4().hex[:6]}", node)
    arr = np.arange(MB, dtype=np.float64)
    key = store.put(arr)
    view = store.get(key)
    again = store.get(key)
    assert np.shares_memory(view, again)  # both view the one shared copy
    assert not view.flags.writeable
    with pytest.raises(ValueError):
        view[0] = 1.0
    store.evict(key)
    assert not store.exists(key) and node.stats()["retired"] == 1
    del again
    # evicted but viewed: its space is not reused while the view lives
    other = store.put(np.zeros(MB))
    assert np.array_equal(view, arr)
    store.evict(other)
    del view
    gc.collect()
    assert node.stats()["bytes_in_use"] == 0


def test_private_reads_are_writable_and_private(node_dirs: tuple[str, str]) -> None:
    connector = make(node_dirs, reads="private")
    store = Store(f"private-{uuid.uuid4().hex[:6]}", connector)
    key = store.put(np.arange(MB // 8))
    out = store.get(key)
    out[0] = -1
    assert store.get(key)[0] == 0
    del out
    store.evict(key)
    assert_empty(connector)


def test_pickled_objects_with_buffers_view_too(node: NodeConnector) -> None:
    store = Store(f"pickle-{uuid.uuid4().hex[:6]}", node)
    obj = {"a": np.arange(MB // 8), "b": [1, 2], "c": b"x" * 100_000}
    key = store.put(obj)
    out = store.get(key)
    assert np.array_equal(out["a"], obj["a"]) and out["b"] == [1, 2] and out["c"] == obj["c"]
    store.evict(key)
    del out


# -- building in place ---------------------------------------------------------------


@pytest.mark.parametrize("signed", [False, True])
def test_empty_then_seal_moves_nothing(node: NodeConnector, signed: bool,
                                       monkeypatch: Any) -> None:
    monkeypatch.setenv("PXEXEC_TEST_SECRET", "s3cret")
    store = Store(f"empty-{uuid.uuid4().hex[:6]}", node,
                  secret_env="PXEXEC_TEST_SECRET" if signed else None)
    arr = store.empty((512, 1024), "float32")
    np.add(np.ones((512, 1024), "float32"), 1, out=arr)
    key = store.put(arr)  # put of an array from empty() seals it
    assert not arr.flags.writeable
    out = store.get(key)
    assert np.shares_memory(out, arr) and out.dtype == np.float32 and out.shape == (512, 1024)
    assert float(out.sum()) == 2.0 * 512 * 1024
    store.evict(key)
    del out, arr


def test_an_array_built_in_place_carries_its_digest(node: NodeConnector) -> None:
    pytest.importorskip("xxhash", reason="the integrity extra (pip install 'pxexec[integrity]')")
    store = Store(f"built-{uuid.uuid4().hex[:6]}", node, cache_size=0)
    arr = store.empty(2 * MB // 8)
    arr[:] = np.arange(arr.size)
    key = store.seal(arr)
    reader = Store(f"reader-{uuid.uuid4().hex[:6]}", node, cache_size=0)
    assert np.array_equal(reader.get(key), np.arange(arr.size))  # the digest holds
    where = node.locate(key)
    assert where is not None
    path, offset, length = where
    fd = os.open(path, os.O_RDWR)
    try:  # a byte of the data changed behind the store's back
        last = os.pread(fd, 1, offset + length - 3)
        os.pwrite(fd, bytes([last[0] ^ 0x10]), offset + length - 3)
    finally:
        os.close(fd)
    with pytest.raises(DeserializationError, match="XXH3"):
        Store(f"late-{uuid.uuid4().hex[:6]}", node, cache_size=0).get(key)
    del arr
    store.evict(key)


def test_unsealed_allocation_is_given_back(node: NodeConnector) -> None:
    store = Store(f"abort-{uuid.uuid4().hex[:6]}", node)
    arr = store.empty(4 * MB // 8)
    arr[:] = 1
    assert node.stats()["writing"] == 1 and node.keys() == []
    del arr
    gc.collect()
    assert node.stats()["bytes_in_use"] == 0


def test_allocate_and_seal_for_transfers(node: NodeConnector) -> None:
    payload = serialize(np.arange(MB // 8))
    size = sum(memoryview(f).nbytes for f in payload)
    key, buffer = node.allocate(size)
    assert node.get(key) is None and not node.exists(key)  # invisible before sealing
    memoryview(buffer)[:] = b"".join(bytes(f) for f in payload)
    node.seal(key)
    assert np.array_equal(deserialize(node.get(key)), np.arange(MB // 8))
    with pytest.raises(KeyError):
        node.seal(key)
    del buffer
    node.evict(key)


# -- spill -----------------------------------------------------------------------------


def test_full_arena_spills_transparently(node_dirs: tuple[str, str]) -> None:
    connector = make(node_dirs, capacity=8 * MB, chunk=8 * MB)
    store = Store(f"spill-{uuid.uuid4().hex[:6]}", connector)
    arrays = [np.full(3 * MB // 8, i, dtype=np.float64) for i in range(4)]
    keys = [store.put(a) for a in arrays]
    stats = connector.stats()
    assert stats["arena_bytes"] == 8 * MB and stats["spilled_objects"] == 2
    assert stats["spilled_bytes"] >= 2 * 3 * MB
    huge = store.put(np.ones(20 * MB // 8))  # larger than the whole arena: straight to disk
    assert connector.stats()["spilled_objects"] == 3
    for key, arr in zip(keys, arrays):
        assert np.array_equal(store.get(key), arr)
    assert store.get(huge).sum() == 20 * MB // 8
    store.evict_batch([*keys, huge])
    assert_empty(connector)


# -- errors and config -----------------------------------------------------------------


def test_bad_options_and_foreign_directories(node_dirs: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match="reads must be"):
        NodeConnector(node_dirs[0], reads="mutable")
    with pytest.raises(ConfigError, match="capacity"):
        NodeConnector(node_dirs[0], capacity=-1)
    # the shared private-directory rules (pxexec.connectors.private_dir)
    readable = os.path.join(node_dirs[0], "readable")
    os.mkdir(readable)
    os.chmod(readable, 0o755)  # ours, nobody else can write: tightened to 0700
    NodeConnector(node_dirs[0], namespace="readable").close()
    assert stat.S_IMODE(os.lstat(readable).st_mode) == 0o700
    open_dir = os.path.join(node_dirs[0], "open")
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)  # others could plant objects: refused
    with pytest.raises(UnsafeDirectoryError):
        NodeConnector(node_dirs[0], namespace="open")
    os.symlink(readable, os.path.join(node_dirs[0], "link"))
    with pytest.raises(UnsafeDirectoryError, match="symlink"):
        NodeConnector(node_dirs[0], namespace="link")
    with pytest.raises(ConfigError, match="relative"):
        NodeConnector("relative/dir")


def test_url_and_config_round_trip(node_dirs: tuple[str, str]) -> None:
    connector = connector_from_url(f"node://{node_dirs[0]}", namespace="url", chunk=4 * MB,
                                   spill_directory=node_dirs[1])
    assert isinstance(connector, NodeConnector) and connector.path.endswith("/url")
    assert connector_from_config(connector.config()).config() == connector.config()
    assert connector.trim()


# -- many processes --------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_concurrent_writers_in_many_processes(node: NodeConnector, method: str) -> None:
    ctx = multiprocessing.get_context(method)
    with cf.ProcessPoolExecutor(4, mp_context=ctx) as pool:
        done = list(pool.map(node_workers.churn, [node.config()] * 4, range(4), [30] * 4))
    assert done == [30] * 4


# -- crashes ---------------------------------------------------------------------------


def _pool() -> cf.ProcessPoolExecutor:
    return cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))


def test_sigkill_mid_write_leaves_nothing(node: NodeConnector) -> None:
    with _pool() as pool, pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(node_workers.die_mid_write, node.config(), 8 * MB).result(timeout=60)
    assert node.keys() == []  # never visible
    assert node.stats()["writing"] == 0  # the dead writer's space is swept
    assert node.stats()["bytes_in_use"] == 0


def test_sigkill_at_a_random_moment_of_puts(node: NodeConnector, tmp_path: Any) -> None:
    ready = str(tmp_path / "ready")
    process = multiprocessing.get_context("fork").Process(
        target=node_workers.put_forever, args=(node.config(), 3 * MB, ready))
    process.start()
    while not os.path.exists(ready):
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.05))
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    for key in list(node.keys()):  # whatever is visible is whole
        assert deserialize(node.get(key)).nbytes == 3 * MB
    assert node.stats()["writing"] == 0


def test_sigkill_holding_the_index_lock(node: NodeConnector) -> None:
    with _pool() as pool, pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(node_workers.die_holding_the_lock, node.config()).result(timeout=60)
    start = time.monotonic()
    key = node.put([b"after the crash"])  # the lock died with its holder
    assert time.monotonic() - start < 10
    with node.arena.index.transaction() as db:  # and its transaction was rolled back
        assert db.execute("SELECT * FROM counters WHERE name = 'crash-test'").fetchall() == []
    node.evict(key)


def test_sigkill_mid_read_unpins(node: NodeConnector) -> None:
    key = node.put(serialize(np.ones(4 * MB // 8)))
    with _pool() as pool, pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(node_workers.die_mid_read, node.config(), key).result(timeout=60)
    node.evict(key)  # the dead reader's pin does not hold the space
    assert node.stats()["bytes_in_use"] == 0


def test_owner_killed_with_100_objects_live(node_dirs: tuple[str, str]) -> None:
    connector = make(node_dirs, lease=60)
    with _pool() as pool, pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(node_workers.die_owning, connector.config(), 100).result(timeout=60)
    assert len(connector.keys()) == 100 and connector.stats()["bytes_in_use"] > 0
    assert connector.reap() == 100  # dead owner (pid + start time): no wait for the lease
    assert_empty(connector)
    reset_keeper()


def test_index_survives_a_reader_of_its_database(node: NodeConnector) -> None:
    # the index is plain SQLite: inspectable with the standard tools while in use
    key = node.put([b"x" * 100])
    db = sqlite3.connect(node.arena.index.path)
    assert db.execute("SELECT COUNT(*) FROM objects WHERE state = 'sealed'").fetchone() == (1,)
    db.close()
    node.evict(key)


# -- engines ---------------------------------------------------------------------------


def test_round_trip_on_every_engine(engine: Any, node_dirs: tuple[str, str]) -> None:
    connector = make(node_dirs)
    store = Store(f"node-ex-{uuid.uuid4().hex[:6]}", connector)
    arr = np.arange(400_000, dtype=np.float64)
    executor, close = engine
    with StoreExecutor(executor, store, close_engine=close) as ex:
        result = ex.submit(workers.double, arr).result(timeout=120)
        assert np.array_equal(result, arr * 2)
        assert ex.flush(timeout=10)
        ex.free(result)
    del result
    assert connector.keys() == []
    assert connector.stats()["objects"] == 0


def test_segments_deleted_elsewhere_are_unmapped_here(node_dirs: tuple[str, str]) -> None:
    first = make(node_dirs)
    second = connector_from_config(first.config())
    key = second.put(serialize(np.ones(MB)))  # second maps segment 1
    second.evict(key)
    assert first.trim()  # another process's view: the arena is empty, segments go
    old = set(second.arena._maps)
    key = second.put(serialize(np.ones(MB)))  # a new segment; the deleted one is let go
    with first.arena.index.transaction() as db:
        live = {s for (s,) in db.execute("SELECT id FROM segments")}
    assert set(second.arena._maps) == live and not live & old
    second.evict(key)
    assert first.trim()


def test_gc_command_reaps_a_dead_owner(node_dirs: tuple[str, str], capsys: Any) -> None:
    from pxexec.cli import main

    connector = make(node_dirs, lease=60)
    with _pool() as pool, pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(node_workers.die_owning, connector.config(), 3).result(timeout=60)
    url = f"node://{node_dirs[0]}"
    assert main(["gc", url, "--namespace", connector.namespace, "--lease", "60"]) == 0
    assert "removed 3 expired object(s)" in capsys.readouterr().out
    assert connector.keys() == []
    reset_keeper()


def test_shm_names_the_node_store_and_reads_stay_writable(node_dirs: tuple[str, str]) -> None:
    # a config written for the file-per-object shm store (with fsync) still loads
    connector = connector_from_config({"type": "shm", "directory": node_dirs[0],
                                       "namespace": "old-config", "fsync": False,
                                       "lease": None})
    assert isinstance(connector, NodeConnector) and connector.reads == "private"
    store = Store(f"shm-{uuid.uuid4().hex[:6]}", connector)
    key = store.put(np.arange(MB // 8))
    out = store.get(key)
    out[:10] = -1  # writable, private to this reader
    assert store.get(key)[0] == 0
    store.evict(key)
    del out
    assert_empty(connector)
    assert connector.trim()


def test_spilled_objects_are_found_by_a_process_with_other_options(
        node_dirs: tuple[str, str], tmp_path: Any) -> None:
    writer = make(node_dirs, capacity=4 * MB, chunk=4 * MB)
    key = writer.put(serialize(np.ones(MB)))  # 8 MB: larger than the arena, spilled
    spilled = writer.locate(key)
    assert spilled is not None and spilled[0].startswith(node_dirs[1])
    # e.g. `pxexec gc` from a URL: another spill directory, the same index
    other = NodeConnector(node_dirs[0], namespace=writer.namespace,
                          spill_directory=str(tmp_path / "elsewhere"))
    assert deserialize(other.get(key)).sum() == MB
    other.evict(key)
    assert not os.path.exists(spilled[0])
    assert_empty(writer)


def test_gc_without_a_lease_frees_what_dead_writers_left(node: NodeConnector,
                                                          capsys: Any) -> None:
    from pxexec.cli import main

    with _pool() as pool, pytest.raises(cf.process.BrokenProcessPool):
        pool.submit(node_workers.die_mid_write, node.config(), 2 * MB).result(timeout=60)
    with node.arena.index.transaction() as db:
        assert db.execute("SELECT COUNT(*) FROM objects").fetchone() == (1,)
    assert main(["gc", f"node://{node.directory}", "--namespace", node.namespace]) == 0
    out = capsys.readouterr().out
    assert "freed 1 object(s) that dead processes left" in out
    assert "its segments were deleted" in out  # nothing left: the memory went back
    with node.arena.index.transaction() as db:
        assert db.execute("SELECT COUNT(*) FROM objects").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM segments").fetchone() == (0,)


def test_many_connectors_of_one_store_in_one_process(node_dirs: tuple[str, str]) -> None:
    # each opens the index; none may drop another's SQLite locks (POSIX locks are per
    # process), or a second process would delete the database's WAL files under them
    first = make(node_dirs)
    key = first.put([b"kept"])
    handles = []
    with _pool() as pool:
        for _ in range(3):
            handles.append(connector_from_config(first.config()))  # another handle here
            # a process that closes its handle must not think itself the last user
            assert pool.submit(node_workers.use_and_close, first.config()).result(60)
            assert bytes(first.get(key)) == b"kept"
            assert os.path.exists(first.arena.index.path + "-shm")
    first.evict(key)
