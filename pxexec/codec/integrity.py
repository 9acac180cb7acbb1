"""Whole-payload integrity of large frames with xxHash's XXH3 (``pip install 'pxexec[integrity]'``).

Frames of up to 64 kB always carry a CRC32 (``pxexec.codec.frames``). Larger raw buffers
(array data, pickle-5 buffers) carry an XXH3-64 digest when the writer has ``xxhash``:
XXH3 runs at tens of GB/s (about 4.5 ms for 100 MB on the test machine, against 34 ms
for zlib's CRC32), so a full check costs little next to moving the bytes. A reader with
``xxhash`` verifies every digest before decoding and refuses a corrupted payload; a
reader without it cannot verify large frames (as before) and reads them unchecked.
Signing a store (``secret_env``) still covers tampering, which no checksum does.

The cost is more than the hashing on zero-copy reads: verifying touches every stored
page at ``get`` time (``python benchmarks/integrity.py``: put + get of 100 MB on shm
+8% when the task reads all its data anyway, +53% when it reads none). Set
``PXEXEC_INTEGRITY=off`` to skip the digests with xxhash installed.

A Store on a connector that names the bytes it returns (``IdentifiesContent``: the node
store) verifies each stored object once per process: four tasks of one worker that
read the same 100 MB array hash it once (``pxexec.store.checked``). An object the node
store pulls from another node is hashed as its pieces arrive, while they are in cache
(``pxexec.codec.streaming``): corrupted in transit, it is never kept; intact, this
process does not hash it again when it decodes it.

>>> meta = digest_large_frames({}, [memoryview(bytes(100_000))])
>>> verify_large_frames(meta, [memoryview(bytes(100_000))]) is None or not HAVE_XXHASH
True
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence
from typing import Any

from pxexec.errors import DeserializationError

try:
    import xxhash

    #: XXH3 digests are written and verified (xxhash installed, PXEXEC_INTEGRITY not "off")
    HAVE_XXHASH = os.environ.get("PXEXEC_INTEGRITY", "").lower() != "off"
except ImportError:  # the optional extra is not installed: large frames go unchecked
    HAVE_XXHASH = False

__all__ = ["DIGESTS", "HAVE_XXHASH", "defer_digests", "deferring_digests",
           "digest_large_frames", "digests_checked", "verify_large_frames"]

#: the payload meta key of the XXH3-64 digests (one per frame, null for small frames)
DIGESTS = "_xxh3"
#: frames larger than this get a digest (smaller ones carry a CRC32 already)
LARGE_FRAME = 64 * 1024

#: set while decoding a payload whose digests this process has checked already
_CHECKED: contextvars.ContextVar[bool] = contextvars.ContextVar("pxexec_digests_checked",
                                                               default=False)


#: set while serializing for a writer that digests large frames as it copies them
_DEFER: contextvars.ContextVar[bool] = contextvars.ContextVar("pxexec_digests_deferred",
                                                             default=False)


@contextlib.contextmanager
def defer_digests() -> Iterator[None]:
    """Serialize with room for the digests instead of them: the writer computes them
    while copying (``pxexec.codec.frames.copy_digesting``), one pass instead of two.

    >>> with defer_digests():
    ...     print(deferring_digests())
    True
    >>> deferring_digests()
    False
    """
    token = _DEFER.set(True)
    try:
        yield
    finally:
        _DEFER.reset(token)


def deferring_digests() -> bool:
    """Whether ``defer_digests`` is in effect here.

    >>> deferring_digests()
    False
    """
    return _DEFER.get()


@contextlib.contextmanager
def digests_checked() -> Iterator[None]:
    """Decode without verifying large frames' digests again: the caller verified these
    very bytes before (``Store``: the same key and stored object, in this process).

    >>> frames = [memoryview(bytes(100_000))]
    >>> meta = {DIGESTS: [1]}  # a wrong digest: not looked at
    >>> with digests_checked():
    ...     verify_large_frames(meta, frames)
    >>> meta
    {}
    """
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def digest_large_frames(meta: dict[str, Any] | None,
                        views: Sequence[memoryview]) -> dict[str, Any] | None:
    """``meta`` with the XXH3 digest of every large frame (unchanged without xxhash).

    >>> digest_large_frames(None, [memoryview(b"small")]) is None
    True
    """
    if not HAVE_XXHASH or not any(v.nbytes > LARGE_FRAME for v in views):
        return meta
    digests = [xxhash.xxh3_64_intdigest(v) if v.nbytes > LARGE_FRAME else None for v in views]
    return {**(meta or {}), DIGESTS: digests}


def verify_large_frames(meta: dict[str, Any], frames: Sequence[memoryview]) -> None:
    """Check (and remove from ``meta``) the digests of large frames; raise if one differs.

    >>> verify_large_frames({}, [])
    """
    digests = meta.pop(DIGESTS, None)
    if digests is None or not HAVE_XXHASH or _CHECKED.get():
        return
    if not isinstance(digests, list) or len(digests) != len(frames):
        raise DeserializationError("Payload frame digests do not match its frames: corrupted.")
    for digest, frame in zip(digests, frames):
        if digest is not None and xxhash.xxh3_64_intdigest(frame) != digest:
            raise DeserializationError(
                f"Payload data digest (XXH3) of a {frame.nbytes}-byte frame does not match: "
                "the stored object is corrupted."
            )
