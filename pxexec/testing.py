"""A connector conformance suite for pytest, shipped for third-party connectors.

Subclass ``ConnectorConformance`` in a test module and provide a ``connector``
fixture that yields a fresh connector; every test below then runs against it::

    class TestMyConnector(ConnectorConformance):
        @pytest.fixture
        def connector(self):
            yield MyConnector(...)
"""

from __future__ import annotations

import pickle
import threading
from typing import Any

from pxexec.codec.serialize import deserialize, serialize
from pxexec.connectors import connector_from_config
from pxexec.connectors.base import Buffer, ConnectorConfig
from pxexec.connectors.shm import SharedMemoryConnector

LARGE = 8 * 1024 * 1024 + 13


def _payload(obj: Any) -> list[Any]:
    return serialize(obj)


__all__ = ["ConnectorConformance", "CountingConnector"]


class ConnectorConformance:
    """Behaviour every connector must show. Requires pytest and numpy.

    Each test is a method taking the ``connector`` fixture, so they also run by hand:

    >>> from pxexec.connectors.local import LocalConnector
    >>> ConnectorConformance().test_put_get_roundtrip(LocalConnector())
    """

    def test_put_get_roundtrip(self, connector: Any) -> None:
        key = connector.put(_payload(b"hello"))
        assert isinstance(key, str)
        assert deserialize(connector.get(key)) == b"hello"

    def test_frames_are_concatenated(self, connector: Any) -> None:
        key = connector.put([b"ab", memoryview(b"cd"), bytearray(b"ef")])
        assert bytes(connector.get(key)) == b"abcdef"

    def test_missing_key_returns_none(self, connector: Any) -> None:
        key = connector.put(_payload(1))
        connector.evict(key)
        assert connector.get(key) is None
        assert connector.exists(key) is False

    def test_exists_and_evict_idempotent(self, connector: Any) -> None:
        key = connector.put(_payload("x"))
        assert connector.exists(key)
        connector.evict(key)
        connector.evict(key)
        assert not connector.exists(key)

    def test_keys_are_unique(self, connector: Any) -> None:
        keys = {connector.put(_payload(i)) for i in range(50)}
        assert len(keys) == 50
        connector.evict_batch(list(keys))

    def test_batches(self, connector: Any) -> None:
        objs = [{"i": i} for i in range(20)]
        keys = connector.put_batch([_payload(o) for o in objs])
        assert [deserialize(b) for b in connector.get_batch(keys)] == objs
        connector.evict_batch(keys[:10])
        got = connector.get_batch(keys)
        assert got[:10] == [None] * 10 and all(g is not None for g in got[10:])
        connector.evict_batch(keys)
        assert not any(connector.exists(k) for k in keys)

    def test_large_value(self, connector: Any) -> None:
        import numpy as np

        arr = np.random.default_rng(0).integers(0, 255, LARGE, dtype=np.uint8)
        key = connector.put(_payload(arr))
        out = deserialize(connector.get(key))
        assert np.array_equal(out, arr)
        out[0] ^= 1  # writable, and private to this reader
        assert np.array_equal(deserialize(connector.get(key)), arr)
        connector.evict(key)

    def test_empty_and_zero_length_frames(self, connector: Any) -> None:
        key = connector.put(_payload(b""))
        assert deserialize(connector.get(key)) == b""

    def test_config_round_trip(self, connector: Any) -> None:
        key = connector.put(_payload([1, 2]))
        config = connector.config()
        assert config["type"]
        rebuilt = connector_from_config(config)
        assert rebuilt.config() == config
        assert deserialize(rebuilt.get(key)) == [1, 2]

    def test_pickles_to_config(self, connector: Any) -> None:
        key = connector.put(_payload("p"))
        clone = pickle.loads(pickle.dumps(connector))
        assert clone.config() == connector.config()
        assert deserialize(clone.get(key)) == "p"

    def test_concurrent_access(self, connector: Any) -> None:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(20):
                    obj = (n, i, b"x" * (i * 1000))
                    key = connector.put(_payload(obj))
                    assert deserialize(connector.get(key)) == obj
                    connector.evict(key)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []

    def test_foreign_key_is_missing(self, connector: Any) -> None:
        assert connector.get("not-a-key-of-this-connector") is None
        assert connector.exists("not-a-key-of-this-connector") is False
        connector.evict("not-a-key-of-this-connector")


class CountingConnector(SharedMemoryConnector):
    """A shared-memory connector that logs every ``get`` (pid and key) to a file.

    The log lives beside the objects, so gets made in worker processes are counted
    too: ``CountingConnector.gets(config)`` reads them back.

    >>> import os, tempfile
    >>> from pxexec import Store
    >>> store = Store("counting-demo", CountingConnector(tempfile.mkdtemp()))
    >>> key = store.put(b"x")
    >>> _ = store.connector.get(key)
    >>> store.connector.gets() == [(os.getpid(), key)]
    True
    """

    type_name = "pxexec.testing:CountingConnector"

    @property
    def log_path(self) -> str:
        return f"{self.path}.gets"

    def get(self, key: str) -> Buffer | None:
        import os

        with open(self.log_path, "a") as f:
            f.write(f"{os.getpid()} {key}\n")
        return super().get(key)

    def gets(self) -> list[tuple[int, str]]:
        """Every get so far, as (pid, key), from every process."""
        try:
            with open(self.log_path) as f:
                return [(int(p), k) for p, k in (line.split() for line in f)]
        except FileNotFoundError:
            return []

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> CountingConnector:
        options = {k: v for k, v in config.items() if k != "type"}
        return cls(**options)
