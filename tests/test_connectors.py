from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis as redis_lib

from pxexec.codec.serialize import deserialize, serialize
from pxexec.connectors import connector_from_config, connector_from_url, known_connectors
from pxexec.connectors.file import FileConnector
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.node import ShmConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import ConfigError, StoreConnectionError, StoreIOError, UnknownConnectorError
from pxexec.testing import ConnectorConformance


class TestLocal(ConnectorConformance):
    expected_capabilities = {"ChoosesKeys", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self) -> Iterator[Any]:
        yield LocalConnector()


class TestFile(ConnectorConformance):
    expected_capabilities = {"ChoosesKeys", "Leases", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self, tmp_path: Any) -> Iterator[Any]:
        yield FileConnector(str(tmp_path))


class TestFileLeased(ConnectorConformance):
    """With a lease: held objects are renewed and survive the reaper."""

    expected_capabilities = {"ChoosesKeys", "Leases", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self, tmp_path: Any) -> Iterator[Any]:
        yield FileConnector(str(tmp_path), lease=30)


class TestShm(ConnectorConformance):
    expected_capabilities = {"ChoosesKeys", "Leases", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self, shm_dir: str) -> Iterator[Any]:
        yield SharedMemoryConnector(shm_dir)


class TestRedis(ConnectorConformance):
    expected_capabilities = {"ChoosesKeys", "Leases", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self, redis_url: str) -> Iterator[Any]:
        conn = RedisConnector(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}")
        yield conn
        conn.close()


class TestRedisTTL(ConnectorConformance):
    """With a TTL: renew extends the keys' expiry (the server expires them)."""

    expected_capabilities = {"ChoosesKeys", "Leases", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self, redis_url: str) -> Iterator[Any]:
        conn = RedisConnector(redis_url, prefix=f"l{uuid.uuid4().hex[:8]}", ttl=60)
        yield conn
        conn.close()


class TestRedisSplit(ConnectorConformance):
    """Values over max_part are split into parts and joined on read."""

    expected_capabilities = {"ChoosesKeys", "Leases", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self, redis_url: str) -> Iterator[Any]:
        conn = RedisConnector(redis_url, prefix=f"s{uuid.uuid4().hex[:8]}", max_part=4096)
        yield conn
        conn.close()


def test_redis_split_uses_parts(redis_url: str) -> None:
    conn = RedisConnector(redis_url, prefix="split", max_part=4096)
    arr = np.arange(5000, dtype=np.float64)  # 40 kB -> 10 parts
    key = conn.put(serialize(arr))
    assert key.endswith(":p10")
    client = redis_lib.Redis.from_url(redis_url)
    assert all(len(client.get(f"{key}#{i}") or b"") <= 4096 for i in range(10))
    assert np.array_equal(deserialize(conn.get(key)), arr)
    conn.evict(key)
    assert client.keys("split:*") == []


def test_redis_never_touches_foreign_keys(redis_url: str) -> None:
    client = redis_lib.Redis.from_url(redis_url)
    client.set("someone-else", b"keep")
    conn = RedisConnector(redis_url, prefix="mine")
    key = conn.put(serialize(b"x"))
    conn.evict("someone-else")
    conn.evict_batch(["someone-else", key])
    assert client.get("someone-else") == b"keep"
    assert conn.keys() == []
    client.delete("someone-else")


def test_redis_ttl_expires(redis_url: str) -> None:
    conn = RedisConnector(redis_url, prefix="ttl", ttl=0.2)
    key = conn.put(serialize(b"x" * 100_000))  # raw path
    small = conn.put(serialize(b"y"))
    client = redis_lib.Redis.from_url(redis_url)
    assert 0 < client.pttl(key) <= 200 and 0 < client.pttl(small) <= 200


def test_redis_unreachable_is_clear_and_bounded() -> None:
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = RedisConnector(f"redis://user:hunter2@127.0.0.1:{port}/0", connect_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError) as info:
        conn.put(serialize(b"x"))
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "hunter2" not in message
    assert isinstance(info.value, ConnectionError)


def test_redis_password_env_missing() -> None:
    conn = RedisConnector("redis://127.0.0.1:1/0", password_env="PXEXEC_NO_SUCH_VAR")
    with pytest.raises(ConfigError, match="PXEXEC_NO_SUCH_VAR"):
        conn.get("pxexec:x")


def test_file_permissions_and_atomic_publish(tmp_path: Any) -> None:
    conn = FileConnector(str(tmp_path), namespace="ns")
    key = conn.put(serialize(b"secret"))
    path = os.path.join(str(tmp_path), "ns", key)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(str(tmp_path), "ns")).st_mode) == 0o700
    assert not [n for n in os.listdir(os.path.join(str(tmp_path), "ns")) if n.endswith(".tmp")]
    assert conn.keys() == [key]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_shm_large_object_is_gone_at_once_and_freed_in_the_background(shm_dir: str) -> None:
    import time

    from pxexec.connectors import file as file_module

    conn = SharedMemoryConnector(shm_dir, namespace="bg")
    before = _open_fds()
    big = conn.put(serialize(np.ones(file_module.FREE_LATER_MIN, dtype=np.uint8)))
    small = conn.put(serialize(b"x" * 1000))
    conn.evict(big)
    conn.evict(small)
    assert not conn.exists(big) and not conn.exists(small) and conn.keys() == []
    assert conn.get(big) is None
    deadline = time.monotonic() + 10
    while _open_fds() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _open_fds() == before  # the background thread closed the held descriptor


def test_a_forked_child_closes_descriptors_queued_by_its_parent(tmp_path: Any) -> None:
    import queue

    from pxexec.connectors.file import _Closer

    closer = _Closer()
    path = str(tmp_path / "f")
    open(path, "w").close()
    fds = [os.open(path, os.O_RDONLY) for _ in range(3)]
    closer._queue = queue.SimpleQueue()  # as if the parent's thread had not run yet
    for fd in fds:
        closer._queue.put(fd)
    closer._forget()  # what runs in a forked child
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    assert closer._queue is None


def test_file_rejects_path_traversal(tmp_path: Any) -> None:
    conn = FileConnector(str(tmp_path))
    assert conn.get("../../etc/passwd") is None
    assert not conn.exists("../x")


def test_file_directory_removed_is_clear(tmp_path: Any) -> None:
    import shutil

    conn = FileConnector(str(tmp_path / "store"))
    key = conn.put(serialize(1))
    shutil.rmtree(str(tmp_path / "store"))
    with pytest.raises(StoreIOError, match="does not exist"):
        conn.get(key)
    new = conn.put(serialize(2))  # recreated on write
    assert deserialize(conn.get(new)) == 2


def test_file_bad_namespace(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="plain name"):
        FileConnector(str(tmp_path), namespace="../evil")


def test_local_from_config_in_other_process_is_clear() -> None:
    with pytest.raises(ConfigError, match="another process"):
        connector_from_config({"type": "local", "instance": "gone"})


def test_connector_from_url(tmp_path: Any, redis_url: str) -> None:
    assert isinstance(connector_from_url("local"), LocalConnector)
    shm = connector_from_url("shm")  # the node store, copy-on-write reads
    assert isinstance(shm, ShmConnector) and shm.directory.startswith("/dev/shm/")
    files = connector_from_url("shm-files")
    assert isinstance(files, SharedMemoryConnector) and files.directory.startswith("/dev/shm/")
    f = connector_from_url(f"file://{tmp_path}")
    assert isinstance(f, FileConnector) and f.directory == str(tmp_path)
    r = connector_from_url(redis_url, prefix="u")
    assert isinstance(r, RedisConnector) and r.prefix == "u"
    u = connector_from_url("unix:///tmp/redis.sock")
    assert isinstance(u, RedisConnector)


def test_unknown_connector_lists_known() -> None:
    with pytest.raises(UnknownConnectorError) as info:
        connector_from_url("nosuch://x")
    for name in known_connectors():
        assert name in str(info.value)


def test_unknown_option_in_config(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        connector_from_config({"type": "file", "directory": str(tmp_path), "bogus": 1})
