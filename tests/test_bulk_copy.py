"""copy_into: two threads copy a large buffer exactly, and the digest sees it in order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import xxhash

from pxexec import Store
from pxexec.codec import bulk_copy
from pxexec.codec.bulk_copy import PARALLEL_AT, copy_into
from pxexec.connectors.node import NodeConnector

MB = 1 << 20
SIZES = [0, 1, 4095, PARALLEL_AT - 1, PARALLEL_AT, PARALLEL_AT + 12345, 3 * PARALLEL_AT + 7,
         100 * MB + 3]


def _source(size: int) -> memoryview:
    return memoryview(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
                      ).cast("B")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("digesting", [True, False])
def test_every_byte_arrives_and_the_digest_is_that_of_the_whole_source(
        size: int, digesting: bool) -> None:
    source = _source(size)
    target = memoryview(bytearray(size))
    digest = xxhash.xxh3_64() if digesting else None
    copy_into(target, source, digest)
    assert target == source
    if digest is not None:
        assert digest.intdigest() == xxhash.xxh3_64_intdigest(source)


def test_the_caller_copies_alone_without_numpy(monkeypatch: Any) -> None:
    monkeypatch.setattr(bulk_copy, "_HAVE_NUMPY", False)
    started: list[str] = []
    monkeypatch.setattr(bulk_copy.threading.Thread, "start", lambda self: started.append("x"))
    source, target, digest = _source(3 * PARALLEL_AT), memoryview(bytearray(3 * PARALLEL_AT)), \
        xxhash.xxh3_64()
    copy_into(target, source, digest)
    assert target == source and digest.intdigest() == xxhash.xxh3_64_intdigest(source)
    assert started == []


def test_a_helper_that_gets_no_cpu_until_the_caller_is_done_changes_nothing(
        monkeypatch: Any) -> None:
    """The caller copies whatever the helper has not taken (a busy machine)."""
    import threading

    go = threading.Event()
    real_copyto = np.copyto
    caller = threading.get_ident()

    def copyto(dst: Any, src: Any) -> None:
        if threading.get_ident() != caller:
            go.wait(10)  # the helper stalls on its first chunk
        real_copyto(dst, src)

    monkeypatch.setattr(np, "copyto", copyto)
    real_join = threading.Thread.join

    def join(self: threading.Thread, timeout: float | None = None) -> None:
        go.set()  # the caller has finished its part: let the helper go
        real_join(self, timeout)

    monkeypatch.setattr(threading.Thread, "join", join)
    size = 5 * PARALLEL_AT + 99
    source, target, digest = _source(size), memoryview(bytearray(size)), xxhash.xxh3_64()
    copy_into(target, source, digest)
    assert target == source and digest.intdigest() == xxhash.xxh3_64_intdigest(source)


def test_views_of_different_lengths_are_refused_before_copying() -> None:
    target = memoryview(bytearray(10))
    with pytest.raises(ValueError, match="one length"):
        copy_into(target, memoryview(b"x" * 11))
    assert bytes(target) == bytes(10)


@pytest.mark.parametrize("mb", [9, 40])
def test_a_large_array_put_into_the_node_store_reads_back_exactly(mb: int, shm_dir: str
                                                                  ) -> None:
    store = Store("bulk-copy", NodeConnector(shm_dir, namespace="bulk"), cache_size=0)
    data = np.random.default_rng(mb).random(mb * MB // 8)
    key = store.put(data)
    try:
        assert np.array_equal(Store("bulk-copy-reader", store.connector, cache_size=0
                                    ).get(key), data)
    finally:
        store.evict(key)


def test_a_failing_digest_stops_the_helper_before_the_error_reaches_the_caller() -> None:
    """The target may be gone once the caller has the error: no thread writes after it."""
    import threading

    class Failing:
        calls = 0

        def update(self, piece: Any) -> None:
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("digest broke")

    size = 6 * PARALLEL_AT
    with pytest.raises(RuntimeError, match="digest broke"):
        copy_into(memoryview(bytearray(size)), _source(size), Failing())
    assert not [t for t in threading.enumerate() if t.name == "pxexec-copy"]
