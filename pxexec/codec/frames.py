"""The frame format of a stored object: a header, then its data buffers, aligned.

An object serialized by ``pxexec.codec.serialize`` is a list of frames: a small header
followed by raw data buffers (with alignment padding between them). The logical
payload is the concatenation of the frames; ``parse_frames`` reads the list and
``parse_buffer`` one contiguous buffer holding that concatenation (what connectors
return).

Layout of the header (little endian)::

    magic "PXF1" | version u8 | codec u8 | flags u16 | nframes u32 | meta_len u32
    | header_len u32 | nframes x u64 data-frame lengths | meta (JSON) | crc32 u32 | zero pad

The JSON meta holds the codec's fields and a CRC32 of every data frame of at most
``CHECKED_FRAME`` bytes (large raw buffers are left to signing, see ``pxexec.codec.signing``,
and to the XXH3 digests of ``pxexec.codec.integrity``).

Every data frame starts at a multiple of ``ALIGN`` bytes from the start of the
payload, so arrays deserialized from an mmap are aligned.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from pxexec.codec.bulk_copy import copy_into
from pxexec.codec.integrity import (
    DIGESTS,
    HAVE_XXHASH,
    LARGE_FRAME,
    deferring_digests,
    digest_large_frames,
    verify_large_frames,
)
from pxexec.errors import DeserializationError

MAGIC = b"PXF1"
VERSION = 1
ALIGN = 64
_FIXED = struct.Struct("<4sBBHIII")
_CRC = struct.Struct("<I")
MAX_FRAMES = 1 << 20
#: data frames up to this size carry a CRC32 in the header
CHECKED_FRAME = 64 * 1024
_CHECKS = "_crc"

# codec ids
BYTES, BYTEARRAY, STR, NDARRAY, PICKLE, CLOUDPICKLE, POLARS, MEMORYVIEW = 1, 2, 3, 4, 5, 6, 7, 8
CODEC_NAMES = {
    BYTES: "bytes",
    BYTEARRAY: "bytearray",
    STR: "str",
    NDARRAY: "ndarray",
    PICKLE: "pickle",
    CLOUDPICKLE: "cloudpickle",
    POLARS: "polars",
    MEMORYVIEW: "memoryview",
}

Frames = list[Any]  # bytes-likes: bytes, bytearray, memoryview


def byte_view(buf: Any) -> memoryview:
    view = buf.raw() if isinstance(buf, pickle.PickleBuffer) else memoryview(buf)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    return view


def padding(length: int) -> int:
    return (-length) % ALIGN


_ZEROS = bytes(ALIGN)


def make_frames(codec: int, meta: dict[str, Any] | None, data: Sequence[Any], *,
           digest: bool = True) -> Frames:
    views = [byte_view(d) for d in data]
    if any(v.nbytes <= CHECKED_FRAME for v in views):
        # Small frames (pickle streams, metadata, small arrays) carry a CRC32 so that a
        # corrupted byte is an error, never a different object. Large raw buffers are
        # not checksummed (it would cost a pass over the data); signing covers them.
        checks = [zlib.crc32(v) if v.nbytes <= CHECKED_FRAME else None for v in views]
        meta = {**(meta or {}), _CHECKS: checks}
    deferred = digest and HAVE_XXHASH and deferring_digests()
    large = [i for i, v in enumerate(views) if v.nbytes > LARGE_FRAME] if deferred else []
    pending = bool(large)
    if digest and not pending:  # frames filled in later (Store.empty) have none
        meta = digest_large_frames(meta, views)
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    if pending:  # room for the digests, filled in by copy_digesting
        meta_bytes = _with_digest_room(meta_bytes, len(views), large)
    body_len = _FIXED.size + 8 * len(views) + len(meta_bytes) + _CRC.size
    header_len = body_len + padding(body_len)
    head = bytearray(
        _FIXED.pack(MAGIC, VERSION, codec, 0, len(views), len(meta_bytes), header_len)
    )
    head += struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))
    head += meta_bytes
    head += _CRC.pack(zlib.crc32(head))
    head += _ZEROS[: header_len - len(head)]
    frames: Frames = DigestsPending(large, len(views), body_len - _CRC.size) if pending else []
    frames.append(bytes(head))
    for i, view in enumerate(views):
        frames.append(view)
        if i < len(views) - 1:
            frames.append(_ZEROS[: padding(view.nbytes)])
    return frames


#: a digest not computed yet: as wide as the widest one, so the header keeps its size
_DIGEST_WIDTH = 20
_DIGESTS_KEY = f'"{DIGESTS}":['.encode()


def _digest_list(nframes: int, large: list[int], digests: list[int]) -> bytes:
    """The digests field's items: each large frame's digest (a fixed width), else null."""
    filled = iter(digests)
    return b",".join(str(next(filled)).encode().rjust(_DIGEST_WIDTH) if i in large
                     else b"null" for i in range(nframes))


def _with_digest_room(meta_bytes: bytes, nframes: int, large: list[int]) -> bytes:
    field = _DIGESTS_KEY + _digest_list(nframes, large, [0] * len(large)) + b"]"
    return b"{" + field + b"}" if not meta_bytes else meta_bytes[:-1] + b"," + field + b"}"


class DigestsPending(list):  # type: ignore[type-arg]
    """Frames whose header has room for the XXH3 digests of its large frames, not the
    digests: ``copy_digesting`` fills them in while it copies (one pass over the data
    instead of two). Written any other way, every digest check would fail."""

    def __init__(self, large: list[int], nframes: int, body_len: int) -> None:
        super().__init__()
        self.large = large  # indexes of the data frames to digest
        self.nframes = nframes  # data frames in the payload
        self.body_len = body_len  # where the header's CRC32 goes


def copy_digesting(frames: DigestsPending, target: memoryview) -> None:
    """Copy ``frames`` into ``target`` (their payload size, writable), hashing each
    large frame piece by piece right after copying it (``copy_into``: two threads for
    large frames), then write the finished header.

    >>> import numpy as np
    >>> from pxexec.codec.integrity import defer_digests
    >>> with defer_digests():
    ...     frames = make_frames(NDARRAY, {"x": 1}, [np.arange(100_000).view(np.uint8)])
    >>> out = memoryview(bytearray(payload_size(frames)))
    >>> copy_digesting(frames, out) if isinstance(frames, DigestsPending) else None
    >>> parse_buffer(out)[1]["x"]  # parsing verified the header's CRC32 and the digests
    1
    """
    from xxhash import xxh3_64 as hasher  # present: frames with room come only with it
    digests: list[int] = []
    pos = 0
    hashed = {1 + 2 * i for i in frames.large}  # after the header, padding between
    for index, frame in enumerate(frames):
        view = byte_view(frame)
        end = pos + view.nbytes
        if index in hashed:
            digest = hasher()
            copy_into(target[pos:end], view, digest)
            digests.append(digest.intdigest())
        else:
            copy_into(target[pos:end], view)
        pos = end
    head = target[: byte_view(frames[0]).nbytes]
    _fill_digests(head, frames, digests)


def with_digests(frames: DigestsPending) -> Frames:
    """The same payload with its digests computed now, for a writer that copies the
    frames itself (below some megabytes a second pass costs less than allocating).

    >>> from pxexec.codec.integrity import defer_digests
    >>> with defer_digests():
    ...     pending = make_frames(BYTES, None, [bytes(100_000)])
    >>> done = with_digests(pending) if isinstance(pending, DigestsPending) else pending
    >>> parse_buffer(b"".join(done))[0] == BYTES
    True
    """
    head = memoryview(bytearray(frames[0]))
    fill_digests(head, frames, [frames[1 + 2 * i] for i in frames.large])
    return [bytes(head), *frames[1:]]


def pending_digests(frames: DigestsPending) -> DigestsPending:
    """What ``fill_digests`` needs of ``frames`` (a header with room for digests),
    without holding their data."""
    return DigestsPending(frames.large, frames.nframes, frames.body_len)


def fill_digests(head: Any, pending: DigestsPending, data: Sequence[Any]) -> None:
    """Write the XXH3 digests of ``data`` (the large frames, in order, once written in
    place after ``head``) into ``head``, a header made with room for them.

    >>> import numpy as np
    >>> from pxexec.codec.integrity import defer_digests
    >>> data = np.arange(100_000).view(np.uint8)
    >>> with defer_digests():
    ...     frames = make_frames(NDARRAY, {"x": 1}, [data])
    >>> head = memoryview(bytearray(frames[0]))
    >>> fill_digests(head, pending_digests(frames), [data])
    >>> parse_buffer(bytes(head) + data.tobytes())[1]["x"]  # the digest holds
    1
    """
    from xxhash import xxh3_64_intdigest  # present: headers with room come only with it

    _fill_digests(byte_view(head), pending, [xxh3_64_intdigest(byte_view(d)) for d in data])


def _fill_digests(head: memoryview, frames: DigestsPending, digests: list[int]) -> None:
    body = bytes(head[: frames.body_len])
    start = body.rindex(_DIGESTS_KEY) + len(_DIGESTS_KEY)
    room = _digest_list(frames.nframes, frames.large, digests)
    head[start : start + len(room)] = room
    head[frames.body_len : frames.body_len + _CRC.size] = _CRC.pack(
        zlib.crc32(head[: frames.body_len]))


def alloc(nbytes: int) -> memoryview:
    """A fresh writable byte buffer.

    Large buffers come from numpy when it is installed: its allocator asks for
    transparent huge pages, which makes first-touch of big buffers several times
    cheaper than ``bytearray`` on many machines.
    """
    if nbytes >= 1 << 20:
        try:
            import numpy as np
        except ImportError:
            pass
        else:
            view: memoryview = np.empty(nbytes, dtype=np.uint8).data
            return view
    return memoryview(bytearray(nbytes))


def writable_copy(view: memoryview) -> memoryview:
    """A writable copy of ``view`` (see ``alloc``)."""
    out = alloc(view.nbytes)
    copy_into(out, view)
    return out


def payload_size(frames: Sequence[Any]) -> int:
    """Total size in bytes of the payload ``frames`` describe (their concatenation)."""
    return sum(memoryview(f).nbytes for f in frames)


def join(frames: Sequence[Any]) -> bytes:
    """Concatenate frames into one ``bytes`` (only for backends that need one value)."""
    return b"".join(frames)


def check_frames(meta: dict[str, Any], frames: list[memoryview]) -> None:
    verify_large_frames(meta, frames)
    checks = meta.pop(_CHECKS, None)
    if checks is None:
        return
    if not isinstance(checks, list) or len(checks) != len(frames):
        raise DeserializationError("Payload frame checksums do not match its frames: corrupted.")
    for check, frame in zip(checks, frames):
        if check is not None and (frame.nbytes > CHECKED_FRAME or zlib.crc32(frame) != check):
            raise DeserializationError("Payload data checksum does not match: corrupted.")


def _parse_header(view: memoryview) -> tuple[int, dict[str, Any], list[int], int]:
    if view.nbytes < _FIXED.size + _CRC.size:
        raise DeserializationError(
            f"Payload of {view.nbytes} bytes is too short to be a pxexec object "
            "(truncated or not written by pxexec)."
        )
    magic, version, codec, _flags, nframes, meta_len, header_len = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise DeserializationError(
            "Payload does not start with the pxexec marker: it was not written by "
            "pxexec's serializer (a foreign value under this key) or it is corrupted."
        )
    if version != VERSION:
        raise DeserializationError(
            f"Payload has format version {version}; this pxexec reads version {VERSION}. "
            "Use the same pxexec version on every process."
        )
    if nframes > MAX_FRAMES:
        raise DeserializationError(f"Payload header claims {nframes} frames: corrupted.")
    body_len = _FIXED.size + 8 * nframes + meta_len
    if body_len + _CRC.size > view.nbytes or header_len < body_len + _CRC.size:
        raise DeserializationError("Payload header is truncated or corrupted.")
    (crc,) = _CRC.unpack_from(view, body_len)
    if zlib.crc32(view[:body_len]) != crc:
        raise DeserializationError("Payload header checksum does not match: corrupted.")
    if codec not in CODEC_NAMES:
        raise DeserializationError(f"Payload names unknown codec {codec}: corrupted.")
    lengths = list(struct.unpack_from(f"<{nframes}Q", view, _FIXED.size))
    meta_raw = bytes(view[_FIXED.size + 8 * nframes : body_len])
    meta = json.loads(meta_raw) if meta_raw else {}
    return codec, meta, lengths, header_len


def parse_buffer(data: Any) -> tuple[int, dict[str, Any], list[memoryview], bool]:
    try:
        view = byte_view(data)
    except TypeError as exc:
        raise DeserializationError(
            f"Cannot deserialize {type(data).__name__}: expected bytes-like frames."
        ) from exc
    codec, meta, lengths, offset = _parse_header(view)
    frames = []
    for i, length in enumerate(lengths):
        end = offset + length
        if end > view.nbytes:
            raise DeserializationError(
                f"Payload is truncated: {view.nbytes} bytes, header describes at least "
                f"{end}."
            )
        frames.append(view[offset:end])
        offset = end + (padding(length) if i < len(lengths) - 1 else 0)
    if offset != view.nbytes:
        raise DeserializationError(
            f"Payload has {view.nbytes - offset} unexpected trailing bytes: corrupted."
        )
    return codec, meta, frames, not view.readonly


def parse_frames(data: Sequence[Any]) -> tuple[int, dict[str, Any], list[memoryview], bool]:
    try:
        views = [byte_view(f) for f in data]
    except TypeError as exc:
        raise DeserializationError("Frames must be bytes-like objects.") from exc
    codec, meta, lengths, header_len = _parse_header(views[0])
    if views[0].nbytes != header_len:
        raise DeserializationError("First frame is not a complete pxexec header.")
    frames = views[1::2]
    if [f.nbytes for f in frames] != lengths or len(views) != max(1, 2 * len(lengths)):
        raise DeserializationError(
            "Frames do not match the lengths in their header: truncated or reordered."
        )
    # The frames may be the memory of a live object (serialize does not copy):
    # decode from them as read-only, so the result never aliases that object.
    return codec, meta, [f.toreadonly() for f in frames], False
