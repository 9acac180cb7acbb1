"""Large bytes/bytearray built on huge-page-advised memory: same values, private copies."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pxexec.codec import hugepages as memory
from pxexec.codec.frames import join
from pxexec.codec.serialize import deserialize, serialize

BIG = memory.HUGE_MIN + 12_345  # not a multiple of any page size


def _pattern(n: int) -> bytes:
    return (bytes(range(251)) * (n // 251 + 1))[:n]


@pytest.mark.parametrize("make", [memory.bytes_from, memory.bytearray_from])
@pytest.mark.parametrize("size", [0, 1, 4095, BIG])
def test_copies_are_equal_and_private(make: Any, size: int) -> None:
    source = bytearray(_pattern(size))
    out = make(memoryview(source))
    assert type(out) is (bytes if make is memory.bytes_from else bytearray)
    assert out == source
    if size:
        source[-1] ^= 0xFF  # the copy does not alias the source
        assert out[-1] != source[-1]


def test_views_of_other_formats_are_copied_by_bytes() -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(BIG // 16 * 2, dtype=np.int64).reshape(2, -1)
    view = memoryview(arr)
    assert memory.bytes_from(view) == arr.tobytes()
    assert memory.bytearray_from(view) == bytearray(arr.tobytes())


def test_advice_covers_whole_pages_inside_the_object(monkeypatch: Any) -> None:
    if memory._API is None:
        pytest.skip("huge-page path unavailable on this platform")
    calls: list[tuple[int, int, int]] = []
    api = list(memory._API)
    api[3] = lambda start, length, advice: calls.append((start, length, advice)) or 0
    monkeypatch.setattr(memory, "_API", tuple(api))
    out = memory.bytes_from(memoryview(_pattern(BIG)))
    (start, length, advice), = calls
    first = memory._API[1](out)  # where the object's bytes start
    assert advice == memory._MADV_HUGEPAGE
    assert start % memory._PAGE == 0 and length % memory._PAGE == 0
    assert first <= start and start + length <= first + BIG
    assert length >= BIG - 2 * memory._PAGE


def test_without_the_fast_path_plain_constructors_are_used(monkeypatch: Any) -> None:
    monkeypatch.setattr(memory, "_API", None)
    data = _pattern(BIG)
    assert memory.bytes_from(memoryview(data)) == data
    assert memory.bytearray_from(memoryview(data)) == bytearray(data)


@pytest.mark.parametrize("obj", [_pattern(BIG), bytearray(_pattern(BIG))])
def test_large_bytes_round_trip_through_the_serializer(obj: Any) -> None:
    frames = serialize(obj)
    for data in (frames, join(frames), bytearray(join(frames))):
        back = deserialize(data)
        assert type(back) is type(obj) and back == obj


def test_hash_of_a_built_bytes_is_its_value() -> None:
    # CPython caches a bytes object's hash; an object filled after creation must not
    # carry a stale one
    data = _pattern(BIG)
    assert hash(memory.bytes_from(memoryview(data))) == hash(data)
    assert os.urandom(0) == memory.bytes_from(memoryview(b""))
