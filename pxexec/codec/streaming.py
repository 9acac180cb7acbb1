"""Verify a payload's XXH3 digests while its bytes arrive (node-to-node pulls).

A reader that pulls an object from another node receives it in pieces
(``recv_into``). ``StreamingDigests`` hashes each piece right after it arrives, while
it is still in the CPU's cache, with one streaming ``xxhash.xxh3_64()`` per large
frame, so that corruption in transit is refused before the copy is kept, and the
decode that follows need not read every stored page again to check the same
digests (``IdentifiesContent.get_identified`` says ``checked``).

The header is parsed with ``pxexec.codec.frames`` (its CRC32 checked) once all of its
bytes are in; the padding between frames and frames without a digest are skipped.
A streaming XXH3 over a frame's pieces equals ``xxh3_64_intdigest`` of the whole frame.

>>> from pxexec.codec.frames import make_frames, join
>>> payload = join(make_frames(1, None, [bytes(200_000)]))
>>> digests = StreamingDigests(len(payload))
>>> for start in range(0, len(payload), 7_000):
...     digests.feed(memoryview(payload)[start : start + 7_000])
>>> digests.result() is (True if integrity.HAVE_XXHASH else None)
True
"""

from __future__ import annotations

from typing import Any

from pxexec.codec import integrity
from pxexec.codec.frames import _CRC, _FIXED, MAGIC, VERSION, _parse_header, byte_view, padding
from pxexec.codec.integrity import DIGESTS
from pxexec.errors import DeserializationError

__all__ = ["StreamingDigests"]


class StreamingDigests:
    """The XXH3 digests of one payload, checked as its bytes are fed in order.

    ``feed(piece)`` takes consecutive pieces of any size (a piece may split the header,
    a frame or the padding between frames). ``result()``, once every byte was fed:

    - None: nothing is known (not a pxexec payload, e.g. a signed one whose signature
      frame comes first; no digests; xxhash missing or ``PXEXEC_INTEGRITY=off``);
    - True: every digest matched;
    - raises ``DeserializationError`` naming the frame whose bytes differ (or a payload
      that does not have the size its header describes).

    ``nbytes`` (the payload's size, if known) bounds the header that is collected.

    >>> digests = StreamingDigests()
    >>> digests.feed(b"not a pxexec payload"); digests.result() is None
    True
    """

    def __init__(self, nbytes: int | None = None) -> None:
        self.nbytes = nbytes
        self._active = integrity.HAVE_XXHASH  # read now: tests may switch it off
        self._head = bytearray()  # the header's bytes, until it is parsed
        #: (frame number, start, end, digest) of every frame with a digest
        self._spans: list[tuple[int, int, int, int]] | None = None
        self._expected = 0  # the payload size the header describes
        self._span = 0  # the span being hashed
        self._hasher: Any = None
        self._pos = 0  # bytes fed so far
        self._error = ""

    def feed(self, piece: Any) -> None:
        """Take the next ``piece`` of the payload (bytes-like) and hash what is in it."""
        if not self._active:
            return
        view = byte_view(piece)
        if self._spans is None:
            used = self._collect_header(view)
            self._pos += used
            view = view[used:]
            if self._spans is None or not self._active:
                return
        if view.nbytes:
            self._hash(view)
            self._pos += view.nbytes

    def result(self) -> bool | None:
        """True if every digest matched, None if nothing is known; raises on a mismatch."""
        if self._error:
            raise DeserializationError(self._error)
        if not self._active or self._spans is None:
            return None
        if self._pos != self._expected:
            raise DeserializationError(
                f"Payload has {self._pos} bytes but its header describes {self._expected}: "
                "truncated or corrupted."
            )
        self._hash(memoryview(b""))  # frames of no bytes at the very end
        if self._error:
            raise DeserializationError(self._error)
        return True if self._spans else None

    # -- the header -------------------------------------------------------------------

    def _collect_header(self, view: memoryview) -> int:
        """Take header bytes from ``view`` and parse the header once it is whole;
        return how many bytes of ``view`` were used."""
        used = 0
        if len(self._head) < _FIXED.size:
            used = self._take(view, _FIXED.size)
            if len(self._head) < _FIXED.size or not self._is_ours():
                return used
        used += self._take(view[used:], self._header_len())
        if len(self._head) == self._header_len():
            self._parse()
        return used

    def _take(self, view: memoryview, upto: int) -> int:
        """Append bytes of ``view`` to the header until it has ``upto``; how many."""
        used = max(0, min(upto - len(self._head), view.nbytes))
        self._head += view[:used]
        return used

    def _is_ours(self) -> bool:
        """Whether the fixed part of the header is pxexec's (stops checking if not)."""
        magic, version = _FIXED.unpack_from(self._head)[:2]
        if magic != MAGIC or version != VERSION:
            self._stop()  # foreign bytes, a signed payload, another format version
            return False
        if self.nbytes is not None and self._header_len() > self.nbytes:
            self._fail(f"Payload header claims {self._header_len()} bytes of a "
                       f"{self.nbytes}-byte object: corrupted.")
            return False
        return True

    def _header_len(self) -> int:
        """The header's length as its fixed part says (at least its smallest size)."""
        header_len: int = _FIXED.unpack_from(self._head)[6]
        return max(header_len, _FIXED.size + _CRC.size)

    def _parse(self) -> None:
        try:
            _codec, meta, lengths, offset = _parse_header(memoryview(self._head))
        except DeserializationError as exc:
            self._fail(str(exc))
            return
        self._head = bytearray()
        digests = meta.get(DIGESTS)
        if digests is not None and (not isinstance(digests, list)
                                    or len(digests) != len(lengths)):
            self._fail("Payload frame digests do not match its frames: corrupted.")
            return
        spans = []
        for i, length in enumerate(lengths):
            if digests is not None and digests[i] is not None:
                spans.append((i + 1, offset, offset + length, digests[i]))
            offset += length + (padding(length) if i < len(lengths) - 1 else 0)
        self._spans, self._expected = spans, offset
        if spans:
            import xxhash  # installed: HAVE_XXHASH

            self._hasher = xxhash.xxh3_64()
        else:
            self._stop()
            self._spans = []

    # -- the frames -------------------------------------------------------------------

    def _hash(self, view: memoryview) -> None:
        """Hash the parts of ``view`` (at ``self._pos``) that lie in digested frames."""
        assert self._spans is not None
        pos, end = self._pos, self._pos + view.nbytes
        while self._span < len(self._spans):
            number, start, stop, digest = self._spans[self._span]
            if start > end or (start == end and stop > start):
                return  # the next frame starts in a later piece
            low, high = max(start, pos), min(stop, end)
            if high > low:
                self._hasher.update(view[low - pos : high - pos])
            if stop > end:
                return  # the frame goes on in the next piece
            if self._hasher.intdigest() != digest:
                self._fail(f"Payload data digest (XXH3) of frame {number} "
                           f"({stop - start} bytes at offset {start}) does not match: "
                           "the bytes were corrupted (in transit or where they are stored).")
                return
            self._hasher.reset()
            self._span += 1

    def _fail(self, message: str) -> None:
        self._error = message
        self._stop()

    def _stop(self) -> None:
        self._active = False
        self._head = bytearray()
