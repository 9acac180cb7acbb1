"""Copying one large buffer into the store with two threads, digesting it on the way.

One thread copies at about half the memory bandwidth a node has, so a put of a large
array copies with two: the caller takes pieces from the front, copies each and feeds it
to the digest while it is still in cache; a helper thread takes chunks from the back
and only copies (``numpy.copyto``, which runs without the GIL). Where they meet, the
caller digests the rest of the source in order. Work is shared as it goes, not split
in advance: when the other core is busy the caller simply copies more itself, so a
put never waits for a helper that got no CPU. Without numpy, or below
``PARALLEL_AT``, the caller copies alone.

>>> source = memoryview(bytes(range(256)) * 4096)
>>> target = memoryview(bytearray(len(source)))
>>> copy_into(target, source); bytes(target) == bytes(source)
True
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

__all__ = ["PARALLEL_AT", "copy_into"]

#: buffers from this size are copied by two threads
PARALLEL_AT = 8 << 20
#: what the caller copies (and digests) at a time: fits a core's cache
_PIECE = 1 << 20
#: what the helper copies at a time
_CHUNK = 4 << 20

#: time to digest a byte over time to copy one (XXH3 reads; a copy reads and writes)
_HASH_PER_COPY = 0.4

_HAVE_NUMPY = importlib.util.find_spec("numpy") is not None


def copy_into(target: memoryview, source: memoryview, digest: Any = None) -> None:
    """``target[:] = source`` (byte views of one length); with ``digest`` (anything
    with ``update``, such as ``xxhash.xxh3_64()``), feed it ``source`` in order too.

    >>> import xxhash
    >>> data = memoryview(bytes(range(256)) * 65536)       # 16 MB: two threads
    >>> out, hasher = memoryview(bytearray(data.nbytes)), xxhash.xxh3_64()
    >>> copy_into(out, data, hasher)
    >>> out == data, hasher.intdigest() == xxhash.xxh3_64_intdigest(data)
    (True, True)
    """
    if target.nbytes != source.nbytes:
        raise ValueError(f"copy_into: the target holds {target.nbytes} bytes and the source "
                         f"{source.nbytes}; give views of one length")
    if source.nbytes < PARALLEL_AT or not _HAVE_NUMPY:
        _copy_alone(target, source, 0, source.nbytes, digest)
        return
    _copy_shared(target, source, digest)


def _copy_alone(target: memoryview, source: memoryview, start: int, end: int,
                digest: Any) -> None:
    for pos in range(start, end, _PIECE):
        piece = source[pos : min(pos + _PIECE, end)]
        target[pos : pos + piece.nbytes] = piece
        if digest is not None:
            digest.update(piece)


def _copy_shared(target: memoryview, source: memoryview, digest: Any) -> None:
    import numpy as np

    dst = np.frombuffer(target, dtype=np.uint8)
    src = np.frombuffer(source, dtype=np.uint8)
    size = source.nbytes
    lock = threading.Lock()
    bounds = [0, size]  # copied: [0, lo) by the caller, [hi, size) by the helper
    failed: list[BaseException] = []

    def from_the_back() -> None:
        try:
            while True:
                with lock:
                    lo, hi = bounds
                    if hi <= lo:
                        return
                    bounds[1] = start = max(lo, hi - _CHUNK)
                np.copyto(dst[start:hi], src[start:hi])
        except BaseException as exc:  # pragma: no cover - re-raised by the caller
            failed.append(exc)

    helper = threading.Thread(target=from_the_back, name="pxexec-copy", daemon=True)
    helper.start()
    try:
        _front(dst, src, source, digest, bounds, lock)
    except BaseException:
        with lock:  # the helper stops after its chunk: it never outlives the target
            bounds[1] = bounds[0]
        raise
    finally:
        helper.join()
    if failed:
        raise failed[0]


def _front(dst: Any, src: Any, source: memoryview, digest: Any, bounds: list[int],
           lock: threading.Lock) -> None:
    """The caller's part: digest all in order, copying from the front while the copying
    left outweighs the digesting left (so both threads end together), then copy what
    the helper has not taken."""
    import numpy as np

    size = source.nbytes
    hashed = 0
    while digest is not None and hashed < size:
        with lock:
            lo, hi = bounds
            copied = lo
            if lo == hashed and (hi - lo) > _HASH_PER_COPY * (size - hashed):
                copied = bounds[0] = min(lo + _PIECE, hi)
        end = min(hashed + _PIECE, size)
        if copied > hashed:
            np.copyto(dst[hashed:copied], src[hashed:copied])
        digest.update(source[hashed:end])
        hashed = end
    while True:
        with lock:
            lo, hi = bounds
            end = bounds[0] = min(lo + _PIECE, max(lo, hi))
        if end <= lo:
            return
        np.copyto(dst[lo:end], src[lo:end])
