"""The connector conformance suite for pytest, shipped for third-party connectors.

Subclass ``ConnectorConformance`` in a test module and provide a ``connector``
fixture that yields a fresh connector; every test below then runs against it. The
required tests run on every connector; each capability's tests run where the
connector has that capability (``pxexec.connectors.base``) and are skipped where
it has not. Set ``expected_capabilities`` to the names you mean to have, so that
losing one fails (rather than skips)::

    class TestMyConnector(ConnectorConformance):
        expected_capabilities = {"ChoosesKeys", "ListsKeys"}

        @pytest.fixture
        def connector(self):
            yield MyConnector(...)
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any, ClassVar

import pytest

from pxexec.codec.serialize import deserialize, serialize
from pxexec.connectors.base import (
    CAPABILITIES,
    FLAGS,
    AllocatesInPlace,
    ChoosesKeys,
    Connector,
    IdentifiesContent,
    Leases,
    ListsKeys,
    Replaces,
    RoutesObjects,
    capabilities,
    flag,
)
from pxexec.connectors.owners import process_owner
from pxexec.connectors.registry import connector_from_config
from pxexec.errors import MissingKeyError

LARGE = 8 * 1024 * 1024 + 13


def _payload(obj: Any) -> list[Any]:
    return serialize(obj)


def _needs(connector: Any, capability: type[Any]) -> None:
    if not isinstance(connector, capability):
        pytest.skip(f"{type(connector).__name__} has no {capability.__name__} capability")


__all__ = ["ConnectorConformance"]


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

    # -- the contract itself -----------------------------------------------------------

    #: the capability names the connector under test must have (None: not checked)
    expected_capabilities: ClassVar[set[str] | None] = None

    def test_is_a_connector(self, connector: Any) -> None:
        assert isinstance(connector, Connector), (
            f"{type(connector).__name__} lacks methods of the Connector protocol")

    def test_declared_capabilities(self, connector: Any) -> None:
        expected = self.expected_capabilities
        if expected is None:
            pytest.skip("set the class attribute 'expected_capabilities' to check them")
        unknown = set(expected) - set(CAPABILITIES)
        assert not unknown, f"unknown capability names {sorted(unknown)}"
        assert capabilities(connector) == frozenset(expected)

    def test_flags_are_booleans(self, connector: Any) -> None:
        for name in FLAGS:
            assert isinstance(getattr(connector, name, FLAGS[name]), bool), name
        if flag(connector, "readonly_views"):
            key = connector.put([bytes(1 << 20)])  # large: small objects may be copied out
            assert memoryview(connector.get(key)).readonly
            connector.evict(key)

    # -- ChoosesKeys -------------------------------------------------------------------

    def test_chooses_keys(self, connector: Any) -> None:
        _needs(connector, ChoosesKeys)
        key = connector.new_key(5)
        if key is None:
            pytest.skip("this connector chooses no key for this object")
        assert isinstance(key, str) and key != connector.new_key(5)
        assert not connector.exists(key)
        connector.put_at(key, [b"ab", b"cde"])
        assert connector.exists(key)
        assert bytes(connector.get(key)) == b"abcde"
        connector.evict(key)
        assert connector.get(key) is None

    # -- Replaces ----------------------------------------------------------------------

    def test_replace_overwrites(self, connector: Any) -> None:
        _needs(connector, Replaces)
        key = connector.put(_payload("old value"))
        connector.replace(key, _payload("new value"))
        assert deserialize(connector.get(key)) == "new value"
        connector.evict(key)

    def test_replace_of_a_missing_key_raises_missing_key_error(self, connector: Any) -> None:
        _needs(connector, Replaces)
        key = connector.put(_payload("gone"))
        connector.evict(key)
        with pytest.raises(MissingKeyError) as info:
            connector.replace(key, _payload("new"))
        assert isinstance(info.value, KeyError)
        assert info.value.key == key and key in str(info.value) and info.value.store
        assert not connector.exists(key)  # nothing was created

    # -- Leases ------------------------------------------------------------------------

    def test_lease_attributes(self, connector: Any) -> None:
        _needs(connector, Leases)
        lease = connector.lease_seconds
        assert lease is None or (isinstance(lease, float | int) and lease > 0)
        assert isinstance(connector.tracks_owners, bool)

    def test_held_objects_survive_reaping(self, connector: Any) -> None:
        _needs(connector, Leases)
        owner = process_owner()
        keys = [connector.put(_payload(i)) for i in range(3)]
        connector.adopt(owner, keys)
        connector.renew(owner, keys, connector.lease_seconds or 60.0)
        reaped = connector.reap()
        assert isinstance(reaped, int) and reaped >= 0
        assert all(connector.exists(k) for k in keys)
        connector.evict_batch(keys)
        connector.adopt(owner, [])
        connector.renew(owner, [], connector.lease_seconds or 60.0)

    # -- ListsKeys ---------------------------------------------------------------------

    def test_lists_keys(self, connector: Any) -> None:
        _needs(connector, ListsKeys)
        keys = [connector.put(_payload(i)) for i in range(3)]
        listed = connector.keys()
        assert isinstance(listed, list) and set(keys) <= set(listed)
        connector.evict(keys[0])
        listed = connector.keys()
        assert keys[0] not in listed
        connector.evict_batch(keys)

    # -- RoutesObjects -----------------------------------------------------------------

    def test_routes_by_type_and_tags(self, connector: Any) -> None:
        _needs(connector, RoutesObjects)
        frames = _payload(b"routed")
        size = sum(memoryview(f).nbytes for f in frames)
        assert connector.route_for(size, bytes, ()) is not None
        key = connector.put(frames, obj_type=bytes, tags=())
        assert deserialize(connector.get(key)) == b"routed"
        if isinstance(connector, ChoosesKeys):
            reserve: Any = connector.new_key  # a router's takes obj_type and tags too
            chosen = reserve(size, obj_type=bytes, tags=())
            assert chosen is None or isinstance(chosen, str)
        connector.evict(key)

    # -- AllocatesInPlace --------------------------------------------------------------

    def test_allocate_then_seal(self, connector: Any) -> None:
        _needs(connector, AllocatesInPlace)
        data = os.urandom(100_000)
        key, buffer = connector.allocate(len(data))
        assert isinstance(key, str) and not connector.exists(key)
        memoryview(buffer).cast("B")[:] = data
        connector.seal(key)  # (the buffer is held until sealed: dropped, it is given back)
        del buffer
        assert connector.exists(key) and bytes(connector.get(key)) == data
        with pytest.raises(KeyError):
            connector.seal(key)  # sealed once
        connector.evict(key)

    # -- IdentifiesContent -------------------------------------------------------------

    def test_identifies_content(self, connector: Any) -> None:
        _needs(connector, IdentifiesContent)
        key = connector.put(_payload(b"first" * 30_000))  # large: a view where views exist
        buffer, ident, checked = connector.get_identified(key)
        assert bytes(buffer) == bytes(connector.get(key))
        assert connector.get_identified(key)[1] == ident  # the same bytes: the same id
        hash(ident)
        # only bytes the connector received and verified itself are checked: not a put
        assert checked is False
        if isinstance(connector, Replaces) and ident is not None:
            replacing: Any = connector
            replacing.replace(key, _payload(b"other" * 30_000))
            replaced, new_ident, _ = replacing.get_identified(key)
            assert deserialize(replaced) == b"other" * 30_000 and new_ident != ident
            del replaced
        del buffer
        connector.evict(key)
        assert connector.get_identified(key) is None
        assert connector.get_identified("not-a-key-of-this-connector") is None

