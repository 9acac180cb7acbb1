"""Large frames carry an XXH3 digest (with the integrity extra): corruption is an error."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.codec import integrity
from pxexec.connectors.node import NodeConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import DeserializationError

pytest.importorskip("xxhash", reason="the integrity extra (pip install 'pxexec[integrity]')")


def _corrupt_middle(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("payload", [
    np.arange(2_000_000, dtype=np.float64),   # a numpy frame
    bytes(range(256)) * 20_000,                # a large bytes frame
    {"weights": np.ones((500, 500)), "name": "model"},  # a pickle-5 buffer in a dict
])
def test_a_corrupted_large_frame_is_refused(payload: Any, shm_dir: str) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="integrity")
    with Store("integrity", connector, cache_size=0) as store:
        key = store.put(payload)
        _corrupt_middle(connector.path_of(key))
        with pytest.raises(DeserializationError, match="XXH3"):
            store.get(key)
        store.evict(key)


def test_an_intact_payload_reads_back(shm_dir: str) -> None:
    with Store("intact", SharedMemoryConnector(shm_dir, namespace="intact")) as store:
        array = np.random.default_rng(1).random(1_000_000)
        key = store.put(array)
        assert np.array_equal(store.get(key), array)
        store.evict(key)


def test_a_reader_without_xxhash_reads_unchecked(shm_dir: str, monkeypatch: Any) -> None:
    with Store("no-xxhash", SharedMemoryConnector(shm_dir, namespace="nox")) as store:
        key = store.put(np.ones(100_000))
        monkeypatch.setattr(integrity, "HAVE_XXHASH", False)
        assert float(store.get(key).sum()) == 100_000.0
        store.evict(key)


class _CountingDigests:
    def __init__(self, monkeypatch: Any) -> None:
        self.calls = 0
        real = integrity.xxhash.xxh3_64_intdigest

        def counted(data: Any) -> int:
            self.calls += 1
            return int(real(data))

        monkeypatch.setattr(integrity.xxhash, "xxh3_64_intdigest", counted)


def _corrupt_node_object(connector: NodeConnector, key: str) -> None:
    located = connector.locate(key)
    assert located is not None
    path, offset, length = located
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_the_node_store_verifies_a_stored_object_once_per_process(
        shm_dir: str, monkeypatch: Any) -> None:
    connector = NodeConnector(shm_dir, namespace="once", chunk=1 << 24)
    with Store("verify-once", connector, cache_size=0) as store:
        array = np.random.default_rng(2).random(1_000_000)
        key = store.put(array)
        digests = _CountingDigests(monkeypatch)
        views = [store.get(key) for _ in range(3)]
        assert all(np.array_equal(v, array) for v in views)
        assert digests.calls == 1  # checked at the first read only
        digests.calls = 0
        store.replace(key, array * 2)  # new bytes under the same key: checked again
        assert np.array_equal(store.get(key), array * 2)
        assert digests.calls == 2  # the replace's own digest, then one verification
        del views
        store.evict(key)


def test_a_corrupted_node_object_is_refused_at_every_read(shm_dir: str) -> None:
    connector = NodeConnector(shm_dir, namespace="corrupt", chunk=1 << 24)
    with Store("node-corrupt", connector, cache_size=0) as store:
        key = store.put(np.arange(1_000_000, dtype=np.float64))
        _corrupt_node_object(connector, key)
        for _ in range(2):  # a failed check is not remembered as a passed one
            with pytest.raises(DeserializationError, match="XXH3"):
                store.get(key)
        store.evict(key)


def test_bytes_corrupted_after_a_replace_are_refused(shm_dir: str) -> None:
    connector = NodeConnector(shm_dir, namespace="after", chunk=1 << 24)
    with Store("node-after", connector, cache_size=0) as store:
        key = store.put(np.ones(1_000_000))
        assert float(store.get(key).sum()) == 1_000_000.0  # verified, remembered
        store.replace(key, np.full(1_000_000, 2.0))
        _corrupt_node_object(connector, key)
        with pytest.raises(DeserializationError, match="XXH3"):
            store.get(key)
        store.evict(key)


@pytest.mark.parametrize("payload", [
    np.random.default_rng(3).random(3_000_000),          # 24 MB: digested while copied
    np.random.default_rng(3).random(1_000_000),          # 8 MB: digested, then copied
    {"weights": np.ones((500, 500)), "name": "model"},    # pickle-5 buffers beside a stream
    [np.arange(300_000), np.arange(10), b"x" * 200_000],  # large and small frames mixed
    bytes(range(256)) * 20_000,
])
def test_node_store_puts_digest_while_copying_and_the_digests_hold(
        payload: Any, shm_dir: str) -> None:
    connector = NodeConnector(shm_dir, namespace="fused", chunk=1 << 24)
    with Store("fused", connector, cache_size=0) as store:
        key = store.put(payload)
        got = store.get(key)
        if isinstance(payload, np.ndarray):
            assert np.array_equal(got, payload)
        elif isinstance(payload, dict):
            assert np.array_equal(got["weights"], payload["weights"]) and got["name"] == "model"
        elif isinstance(payload, list):
            assert all(np.array_equal(a, b) for a, b in zip(got, payload, strict=True))
        else:
            assert got == payload
        del got
        other = store.put(payload)  # the digests are real: a changed byte is refused
        _corrupt_node_object(connector, other)
        with pytest.raises(DeserializationError, match="XXH3"):
            Store("fused-reader", connector, cache_size=0, register=False).get(other)
        store.evict_batch([key, other])


def test_a_put_that_fails_while_copying_leaves_nothing(shm_dir: str, monkeypatch: Any) -> None:
    from pxexec.store import store as store_module

    def broken(frames: Any, target: memoryview) -> None:
        target[:10] = b"0123456789"
        raise OSError("the copy failed half-way")

    connector = NodeConnector(shm_dir, namespace="broken", chunk=1 << 24)
    with Store("broken", connector) as store:
        monkeypatch.setattr(store_module, "copy_digesting", broken)
        with pytest.raises(OSError, match="half-way"):
            store.put(np.ones(3_000_000))  # 24 MB: from FUSED_PUT up, copied while digested
        import gc

        gc.collect()
        stats = connector.stats()
        assert stats["objects"] == stats["writing"] == stats["bytes_in_use"] == 0, stats


def test_an_object_larger_than_the_arena_spills_with_its_digests(shm_dir: str) -> None:
    spill = os.path.join(shm_dir, "spill")
    connector = NodeConnector(shm_dir, namespace="spilled", chunk=1 << 20, capacity=1 << 20,
                              spill_directory=spill)
    with Store("spilled", connector, cache_size=0) as store:
        array = np.random.default_rng(4).random(500_000)  # 4 MB > the 1 MB arena
        key = store.put(array)
        assert np.array_equal(store.get(key), array)
        assert connector.stats()["spilled_objects_now"] == 1
        store.evict(key)


def test_the_process_that_put_a_large_array_reads_it_without_hashing_it_again(
        shm_dir: str, monkeypatch: Any) -> None:
    """Its put hashed the bytes as it copied them in; readers elsewhere still check."""
    import xxhash

    connector = NodeConnector(shm_dir, namespace="put-verified", chunk=1 << 26)
    store = Store("put-verified", connector, cache_size=0)
    data = np.random.default_rng(5).random((40 << 20) // 8)
    key = store.put(data)
    checked: list[int] = []
    real = xxhash.xxh3_64_intdigest
    monkeypatch.setattr(xxhash, "xxh3_64_intdigest",
                        lambda b: checked.append(memoryview(b).nbytes) or real(b))
    assert np.array_equal(store.get(key), data)
    assert not [n for n in checked if n >= 1 << 20], "the producer hashed its own put again"
    other = Store("put-verified-other", NodeConnector(shm_dir, namespace="put-verified",
                                                      chunk=1 << 26), cache_size=0)
    assert np.array_equal(other.get(key), data)  # another Store (another reader): checked
    assert [n for n in checked if n >= 1 << 20]
    store.evict(key)
