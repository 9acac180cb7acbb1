"""Copying one large buffer into the store with two threads, digesting what landed.

One thread copies at about half the memory bandwidth a node has, so a put of a large
array copies with two. The caller copies the first part of the buffer piece by piece
and feeds each piece of the *target* to the digest right after copying it, while it
is in cache. A helper thread copies the rest, chunk by chunk from where the caller's
part ends (``numpy.copyto``, which runs without the GIL). The caller then digests the
helper's chunks in order as each is done, and while it would wait it copies chunks
itself, taken from the far end: work is shared as it goes, so a put never waits long
for a helper that got no CPU. The digest is always that of the bytes in the target,
so an object's digest describes what was stored even if its source changed meanwhile.
Without numpy, below ``PARALLEL_AT``, or where a thread cannot start (late in
interpreter shutdown), the caller copies alone.

>>> source = memoryview(bytes(range(256)) * 4096)
>>> target = memoryview(bytearray(len(source)))
>>> copy_into(target, source); bytes(target) == bytes(source)
True
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["PARALLEL_AT", "copy_into"]

#: buffers from this size are copied by two threads
PARALLEL_AT = 8 << 20
#: what the caller copies and digests at a time: fits a core's cache
_PIECE = 1 << 20
#: what the helper (or the caller, taking from the far end) copies at a time
_CHUNK = 4 << 20
#: the caller's part of the copy when it digests too (it digests everything, which
#: takes about 0.4 of the time copying does; measured best here), or when it does not
_SHARE_DIGESTING = 0.25
_SHARE_COPYING = 0.5


def copy_into(target: memoryview, source: memoryview, digest: Any = None) -> None:
    """``target[:] = source`` (views of one size in bytes; the target writable and
    contiguous); with ``digest`` (anything with ``update``, such as
    ``xxhash.xxh3_64()``), feed it the copied bytes in order too.

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
    if target.readonly or not target.c_contiguous:
        raise ValueError("copy_into: the target must be a writable, contiguous buffer")
    target = _bytes_of(target)
    if not source.c_contiguous:  # a strided view: copied by slices, as it always was
        target[:] = source if source.format == "B" and source.ndim == 1 else source.tobytes()
        if digest is not None:
            for pos in range(0, target.nbytes, _PIECE):
                digest.update(target[pos : pos + _PIECE])
        return
    source = _bytes_of(source)
    if source.nbytes < PARALLEL_AT or not _copy_shared(target, source, digest):
        _copy_alone(target, source, digest)


def _bytes_of(view: memoryview) -> memoryview:
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _copy_alone(target: memoryview, source: memoryview, digest: Any) -> None:
    for pos in range(0, source.nbytes, _PIECE):
        stop = pos + _PIECE
        target[pos:stop] = source[pos:stop]
        if digest is not None:
            digest.update(target[pos:stop])


class _Shares:
    """Who copies what, under ``cond``: the caller has ``[0, split)``; the helper
    claims chunks upward from ``split`` (all of ``[split, done)`` is copied); the caller
    takes chunks downward from ``size`` (``[tail, size)``, copied when it digests
    there). ``[claimed, tail)`` is not taken yet."""

    def __init__(self, size: int, split: int) -> None:
        self.cond = threading.Condition()
        self.claimed = self.done = split
        self.tail = size
        self.failed: BaseException | None = None

    def stop(self) -> None:
        with self.cond:
            self.tail = self.claimed


def _copy_shared(target: memoryview, source: memoryview, digest: Any) -> bool:
    """The two-thread copy; False if it could not start (nothing copied)."""
    try:
        import numpy as np
    except ImportError:  # no numpy (or a broken one, or the interpreter shutting down)
        return False
    dst = np.frombuffer(target, dtype=np.uint8)
    src = np.frombuffer(source, dtype=np.uint8)
    size = source.nbytes
    share = _SHARE_DIGESTING if digest is not None else _SHARE_COPYING
    split = int(size * share) // _PIECE * _PIECE
    shares = _Shares(size, split)

    def helper_part() -> None:
        try:
            while True:
                with shares.cond:
                    start = shares.claimed
                    if start >= shares.tail:
                        return
                    end = shares.claimed = min(start + _CHUNK, shares.tail)
                np.copyto(dst[start:end], src[start:end])
                with shares.cond:
                    shares.done = end
                    shares.cond.notify_all()
        except BaseException as exc:  # pragma: no cover - re-raised by the caller
            with shares.cond:
                shares.failed = exc
                shares.cond.notify_all()

    helper = threading.Thread(target=helper_part, name="pxexec-bulk-copy", daemon=True)
    try:
        try:
            helper.start()
        except RuntimeError:  # no new threads (interpreter shutdown)
            return False
        for pos in range(0, split, _PIECE):  # the caller's part, digested as it goes
            np.copyto(dst[pos : pos + _PIECE], src[pos : pos + _PIECE])
            if digest is not None:
                digest.update(target[pos : pos + _PIECE])
        _rest(dst, src, target, digest, shares, split, size)
    except BaseException as exc:
        _stop_and_join(helper, shares, exc)  # the helper takes no more chunks, then ends
        raise
    _stop_and_join(helper, shares, None)
    if shares.failed is not None:  # pragma: no cover - numpy.copyto does not fail here
        raise shares.failed
    return True


def _rest(dst: Any, src: Any, target: memoryview, digest: Any, shares: _Shares, split: int,
          size: int) -> None:
    """The caller, after its part: digest ``[split, size)`` in order as it is copied;
    copy chunks from the far end instead of waiting."""
    import numpy as np

    pos = split
    while pos < size:
        with shares.cond:
            if shares.failed is not None:
                raise shares.failed
            if pos >= shares.tail:  # the chunks the caller copied itself
                ready = size
            elif pos < shares.done:
                ready = shares.done
            elif shares.tail > shares.claimed:  # take one from the far end and copy it
                end = shares.tail
                start = shares.tail = max(shares.claimed, end - _CHUNK)
                ready = -1
            elif digest is None:  # nothing left to take: the helper finishes its chunk
                return
            else:
                shares.cond.wait()
                continue
        if ready < 0:
            np.copyto(dst[start:end], src[start:end])
            continue
        if digest is None:
            pos = ready  # nothing to digest: skip to what is left to take
            continue
        stop = min(ready, pos + _PIECE)
        digest.update(target[pos:stop])
        pos = stop


def _stop_and_join(helper: threading.Thread, shares: _Shares,
                   error: BaseException | None) -> None:
    """Make ``helper`` take no more chunks (after ``error``) and wait until it has ended,
    even through interrupts: it writes into the caller's target, so it must be done
    before the caller's error or return goes anywhere. An interrupt meanwhile is
    raised afterwards (unless ``error`` is already on its way)."""
    interrupted: BaseException | None = None
    stopping = error is not None
    while True:
        try:
            if stopping:
                shares.stop()
                stopping = False
            if not helper.is_alive():
                break
            helper.join()
        except BaseException as exc:  # e.g. a second KeyboardInterrupt
            interrupted = interrupted or exc
            stopping = True
    if interrupted is not None and error is None:
        raise interrupted
