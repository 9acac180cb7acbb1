"""copy_into: two threads copy a large buffer exactly, and the digest sees it in order."""

from __future__ import annotations

import sys
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
    monkeypatch.setitem(sys.modules, "numpy", None)  # importing it fails
    started: list[str] = []
    monkeypatch.setattr(bulk_copy.threading.Thread, "start", lambda self: started.append("x"))
    source, target, digest = _source(3 * PARALLEL_AT), memoryview(bytearray(3 * PARALLEL_AT)), \
        xxhash.xxh3_64()
    copy_into(target, source, digest)
    assert target == source and digest.intdigest() == xxhash.xxh3_64_intdigest(source)
    assert started == []


def test_a_helper_that_gets_no_cpu_for_a_while_changes_nothing(monkeypatch: Any) -> None:
    """The caller copies what the helper has not taken (a busy machine), then waits
    for the helper's one chunk before digesting it."""
    import threading

    go = threading.Event()
    real_copyto = np.copyto
    caller = threading.get_ident()
    taken: list[str] = []

    def copyto(dst: Any, src: Any) -> None:
        who = "caller" if threading.get_ident() == caller else "helper"
        taken.append(who)
        if who == "helper":
            go.wait(10)  # the helper stalls on its first chunk
        real_copyto(dst, src)

    monkeypatch.setattr(np, "copyto", copyto)
    timer = threading.Timer(0.3, go.set)
    timer.start()
    size = 5 * PARALLEL_AT + 99
    source, target, digest = _source(size), memoryview(bytearray(size)), xxhash.xxh3_64()
    copy_into(target, source, digest)
    timer.join()
    assert target == source and digest.intdigest() == xxhash.xxh3_64_intdigest(source)
    assert taken.count("helper") == 1  # its first chunk; the caller took all the others


@pytest.mark.parametrize("digesting", [True, False])
def test_a_source_changed_during_the_copy_still_gets_the_digest_of_what_was_stored(
        digesting: bool) -> None:
    """The digest is that of the target's bytes, whatever the source did meanwhile."""
    import threading

    size = 6 * PARALLEL_AT
    array = np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)
    source = memoryview(array).cast("B")
    stop = threading.Event()

    def scribble() -> None:  # another thread keeps writing into the source
        while not stop.is_set():
            array[::4096] += 1

    thread = threading.Thread(target=scribble)
    thread.start()
    try:
        target, digest = memoryview(bytearray(size)), xxhash.xxh3_64()
        copy_into(target, source, digest)
    finally:
        stop.set()
        thread.join()
    assert digest.intdigest() == xxhash.xxh3_64_intdigest(target)


def test_strided_and_typed_views_are_copied_as_their_bytes() -> None:
    base = np.arange(4 * PARALLEL_AT // 8, dtype=np.int64)
    typed = memoryview(base)  # format "l", 32 MB
    target = memoryview(bytearray(typed.nbytes))
    copy_into(target, typed)
    assert bytes(target) == base.tobytes()
    strided = memoryview(np.arange(3 * PARALLEL_AT, dtype=np.uint8)[::3])
    target = memoryview(bytearray(strided.nbytes))
    digest = xxhash.xxh3_64()
    copy_into(target, strided, digest)
    assert bytes(target) == strided.tobytes()
    assert digest.intdigest() == xxhash.xxh3_64_intdigest(strided.tobytes())


def test_a_read_only_target_is_refused_before_copying() -> None:
    with pytest.raises(ValueError, match="writable"):
        copy_into(memoryview(bytes(PARALLEL_AT)), _source(PARALLEL_AT))


def test_an_interrupted_join_still_waits_for_the_helper(monkeypatch: Any) -> None:
    """A KeyboardInterrupt while the caller waits for the helper reaches the caller
    only once the helper has stopped writing."""
    import threading

    joining = threading.Event()
    real_copyto, real_join = np.copyto, threading.Thread.join
    caller = threading.get_ident()
    writes_after: list[bool] = []

    def copyto(dst: Any, src: Any) -> None:
        if threading.get_ident() != caller:
            joining.wait(10)  # the helper is still writing when the caller joins
        real_copyto(dst, src)
        writes_after.append(raised.is_set())

    raised = threading.Event()

    def join(self: threading.Thread, timeout: float | None = None) -> None:
        if not joining.is_set():
            joining.set()
            raise KeyboardInterrupt  # the first wait is interrupted
        real_join(self, timeout)

    monkeypatch.setattr(np, "copyto", copyto)
    monkeypatch.setattr(threading.Thread, "join", join)
    size = 6 * PARALLEL_AT
    target, source = memoryview(bytearray(size)), _source(size)
    with pytest.raises(KeyboardInterrupt):
        copy_into(target, source)  # no digest: the caller takes every other chunk, then joins
    raised.set()
    assert joining.is_set() and not any(writes_after)
    assert not [t for t in threading.enumerate() if t.name == "pxexec-bulk-copy"]


def test_an_interrupt_while_the_helper_starts_stops_it_before_the_error_goes_on(
        monkeypatch: Any) -> None:
    import threading
    import time

    real_start, real_copyto = threading.Thread.start, np.copyto
    caller = threading.get_ident()
    raised = threading.Event()
    writes_after: list[bool] = []

    def start(self: threading.Thread) -> None:
        real_start(self)
        if self.name == "pxexec-bulk-copy":
            raise KeyboardInterrupt  # Ctrl-C while start() waits for the thread

    def copyto(dst: Any, src: Any) -> None:
        if threading.get_ident() != caller:
            time.sleep(0.005)  # a slow helper: it would still be copying
        real_copyto(dst, src)
        writes_after.append(raised.is_set())

    monkeypatch.setattr(threading.Thread, "start", start)
    monkeypatch.setattr(np, "copyto", copyto)
    size = 8 * PARALLEL_AT
    with pytest.raises(KeyboardInterrupt):
        copy_into(memoryview(bytearray(size)), _source(size))
    raised.set()
    time.sleep(0.05)
    assert not any(writes_after)
    assert not [t for t in threading.enumerate() if t.name == "pxexec-bulk-copy"]


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
    assert not [t for t in threading.enumerate() if t.name == "pxexec-bulk-copy"]
