"""Framed, zero-copy serialization.

``serialize(obj)`` returns a list of frames: a small header followed by raw data
buffers (with alignment padding between them). No large buffer is copied to build
the list: a numpy array's frame is a view of its memory. The logical payload is the
concatenation of the frames, and ``deserialize`` accepts either the list or one
contiguous buffer holding that concatenation (what connectors return).

Layout of the header (little endian)::

    magic "PXF1" | version u8 | codec u8 | flags u16 | nframes u32 | meta_len u32
    | header_len u32 | nframes x u64 data-frame lengths | meta (JSON) | crc32 u32 | zero pad

The JSON meta holds the codec's fields and a CRC32 of every data frame of at most
``CHECKED_FRAME`` bytes (large raw buffers are left to signing, see ``pxexec.signing``).

Every data frame starts at a multiple of ``ALIGN`` bytes from the start of the
payload, so arrays deserialized from an mmap are aligned.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from pxexec.errors import DeserializationError, SerializationError
from pxexec.integrity import digest_large_frames, verify_large_frames
from pxexec.memory import bytearray_from, bytes_from

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
Serializer = Callable[[Any], Sequence[Any]]
Deserializer = Callable[[Any], Any]


def _as_bytes_view(buf: Any) -> memoryview:
    view = buf.raw() if isinstance(buf, pickle.PickleBuffer) else memoryview(buf)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    return view


def _pad(length: int) -> int:
    return (-length) % ALIGN


_ZEROS = bytes(ALIGN)


def _frame(codec: int, meta: dict[str, Any] | None, data: Sequence[Any], *,
           digest: bool = True) -> Frames:
    views = [_as_bytes_view(d) for d in data]
    if any(v.nbytes <= CHECKED_FRAME for v in views):
        # Small frames (pickle streams, metadata, small arrays) carry a CRC32 so that a
        # corrupted byte is an error, never a different object. Large raw buffers are
        # not checksummed (it would cost a pass over the data); signing covers them.
        checks = [zlib.crc32(v) if v.nbytes <= CHECKED_FRAME else None for v in views]
        meta = {**(meta or {}), _CHECKS: checks}
    if digest:  # frames filled in after the header is written (Store.empty) have none
        meta = digest_large_frames(meta, views)
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta else b""
    body_len = _FIXED.size + 8 * len(views) + len(meta_bytes) + _CRC.size
    header_len = body_len + _pad(body_len)
    head = bytearray(
        _FIXED.pack(MAGIC, VERSION, codec, 0, len(views), len(meta_bytes), header_len)
    )
    head += struct.pack(f"<{len(views)}Q", *(v.nbytes for v in views))
    head += meta_bytes
    head += _CRC.pack(zlib.crc32(head))
    head += _ZEROS[: header_len - len(head)]
    frames: Frames = [bytes(head)]
    for i, view in enumerate(views):
        frames.append(view)
        if i < len(views) - 1:
            frames.append(_ZEROS[: _pad(view.nbytes)])
    return frames


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
    out[:] = view
    return out


def payload_size(frames: Sequence[Any]) -> int:
    """Total size in bytes of the payload ``frames`` describe (their concatenation)."""
    return sum(memoryview(f).nbytes for f in frames)


def join(frames: Sequence[Any]) -> bytes:
    """Concatenate frames into one ``bytes`` (only for backends that need one value)."""
    return b"".join(frames)


# -- serialize -----------------------------------------------------------------------


def serialize(obj: Any) -> Frames:
    """Serialize ``obj`` to a list of frames without copying large buffers."""
    kind = type(obj)
    if kind is bytes:
        return _frame(BYTES, None, [obj])
    if kind is bytearray:
        return _frame(BYTEARRAY, None, [obj])
    if kind is str:
        return _frame(STR, None, [obj.encode("utf-8", "surrogatepass")])
    if kind is memoryview:
        return _serialize_memoryview(obj)
    module = kind.__module__.partition(".")[0]
    if module == "numpy" and kind.__name__ == "ndarray" and _plain_dtype(obj.dtype):
        return _serialize_ndarray(obj)
    if module == "polars" and kind.__name__ in ("DataFrame", "Series"):
        return _serialize_polars(obj)
    if module == "numpy" and getattr(obj, "flags", None) is not None and not obj.flags.writeable:
        # pickle drops the read-only flag of some arrays (empty ones, subclasses)
        return _serialize_pickle(obj, {"readonly": True})
    return _serialize_pickle(obj)


def _serialize_memoryview(view: memoryview) -> Frames:
    # the bytes, with the format, shape and read-only flag to rebuild the same view
    meta = {"format": view.format, "shape": list(view.shape or ()), "readonly": view.readonly}
    data = view if view.c_contiguous else memoryview(view.tobytes())
    return _frame(MEMORYVIEW, meta, [data.cast("B") if data.nbytes else b""])


def _decode_memoryview(meta: dict[str, Any], frame: memoryview) -> memoryview:
    view = memoryview(bytearray_from(frame))
    shape = [int(n) for n in meta["shape"]]
    fmt = str(meta["format"])
    if view.nbytes and (fmt != "B" or len(shape) != 1):
        view = view.cast(fmt, shape)  # type: ignore[call-overload]
    return view.toreadonly() if meta.get("readonly") else view


def _plain_dtype(dtype: Any) -> bool:
    # structured, sub-array and object dtypes go through pickle (still out-of-band)
    # (so are dtypes carrying metadata, which dtype.str would drop)
    return (not dtype.hasobject and dtype.fields is None and dtype.subdtype is None
            and dtype.metadata is None)


def _serialize_ndarray(arr: Any) -> Frames:
    import numpy as np

    if arr.flags.c_contiguous:
        order, data = "C", arr
    elif arr.flags.f_contiguous:
        order, data = "F", arr.T
    else:
        order, data = "C", np.ascontiguousarray(arr)
    meta: dict[str, Any] = {"dtype": arr.dtype.str, "shape": list(arr.shape), "order": order}
    if not arr.flags.writeable:
        meta["readonly"] = True
    if data.size == 0:
        return _frame(NDARRAY, meta, [b""])
    return _frame(NDARRAY, meta, [data.reshape(-1).view(np.uint8)])


def _serialize_polars(obj: Any) -> Frames:
    # Zero-copy through Arrow when every column has an exact Arrow form; the polars
    # schema (Enum categories, Series name) travels with it and is restored on decode.
    # Object columns (Arrow would hold raw pointers) and types Arrow lacks take
    # polars' own pickle path, in-band.
    if not _arrow_exact(obj):
        return _serialize_pickle(_PolarsColumns(obj))
    try:
        table = obj.to_arrow()
    except Exception:  # a type with no Arrow form (Int128 on some versions, ...)
        return _serialize_pickle(obj)
    schema = dict(obj.schema) if type(obj).__name__ == "DataFrame" else {obj.name: obj.dtype}
    stream, buffers = _pickle_oob((table, schema), pickle.dumps)
    meta = {"kind": type(obj).__name__}
    return _frame(POLARS, meta, [stream, *buffers])


class _PolarsColumns:
    """A polars frame or series with Object columns, pickled column by column.

    Polars cannot serialize Object columns and Arrow would hold their raw pointers:
    their values are pickled as Python objects, the other columns as polars does.
    """

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce__(self) -> tuple[Any, ...]:
        import polars as pl

        obj = self.obj
        series = obj.get_columns() if type(obj).__name__ == "DataFrame" else [obj]
        columns = []
        for col in series:
            if col.dtype == pl.Object:
                columns.append((col.name, True, col.to_list()))
            elif not _arrow_exact(col):
                raise SerializationError(
                    f"Column {col.name!r} has type {col.dtype}, which nests Python objects; "
                    "polars cannot serialize it. Store its values as a plain Object column "
                    "or convert them to a native polars type."
                )
            else:
                columns.append((col.name, False, col))
        return (_rebuild_polars, (type(obj).__name__, columns))


def _rebuild_polars(kind: str, columns: list[tuple[str, bool, Any]]) -> Any:
    import polars as pl

    series = [pl.Series(name, values, dtype=pl.Object) if objects else values
              for name, objects, values in columns]
    return series[0] if kind == "Series" else pl.DataFrame(series)


def _arrow_exact(obj: Any) -> bool:
    """Whether no column of a polars frame or series holds Python objects."""
    import polars as pl

    dtypes = obj.dtypes if type(obj).__name__ == "DataFrame" else [obj.dtype]
    stack = list(dtypes)
    while stack:
        dtype = stack.pop()
        if dtype == pl.Object:
            return False
        inner = getattr(dtype, "inner", None)
        if inner is not None:
            stack.append(inner)
        stack.extend(f.dtype for f in getattr(dtype, "fields", None) or ())
    return True


def _pickle_oob(obj: Any, dumps: Callable[..., bytes]) -> tuple[bytes, list[Any]]:
    buffers: list[Any] = []
    stream = dumps(obj, protocol=5, buffer_callback=buffers.append)
    return stream, buffers


def _serialize_pickle(obj: Any, meta: dict[str, Any] | None = None) -> Frames:
    try:
        stream, buffers = _pickle_oob(obj, pickle.dumps)
        codec = PICKLE
    except (pickle.PicklingError, TypeError, AttributeError) as first:
        import cloudpickle

        try:
            stream, buffers = _pickle_oob(obj, cloudpickle.dumps)
        except Exception as exc:
            raise SerializationError(
                f"Cannot serialize an object of type {type(obj).__qualname__}: pickle "
                f"failed ({first}) and cloudpickle failed ({exc}). Make the object "
                "picklable or pass a custom serializer to the Store."
            ) from exc
        codec = CLOUDPICKLE
    return _frame(codec, meta, [stream, *buffers])


# -- deserialize ---------------------------------------------------------------------


def deserialize(data: Any) -> Any:
    """Rebuild an object from ``serialize``'s frames or from one buffer holding them.

    Arrays view ``data`` without a copy when it is writable (e.g. a private mmap);
    from a read-only buffer they are copied once so that they come back writable.
    """
    if isinstance(data, (list, tuple)):
        if not data:
            raise DeserializationError("Cannot deserialize an empty list of frames.")
        codec, meta, frames, writable = _parse_frames(data)
    else:
        codec, meta, frames, writable = _parse_buffer(data)
    _check_frames(meta, frames)
    return _decoding(codec, lambda: _decode(codec, meta, frames, writable))


def _decoding(codec: int, decode: Callable[[], Any]) -> Any:
    """Run ``decode``; any failure becomes a DeserializationError that says why."""
    try:
        return decode()
    except DeserializationError:
        raise
    except ModuleNotFoundError as exc:
        raise DeserializationError(
            f"The stored object needs module {exc.name!r}, which this process cannot "
            "import. Install it where the object is resolved."
        ) from exc
    except Exception as exc:
        raise DeserializationError(
            f"Stored {CODEC_NAMES.get(codec, '?')} payload could not be decoded "
            f"({type(exc).__name__}: {exc}); it is corrupted or was written by "
            "an incompatible serializer."
        ) from exc


def _check_frames(meta: dict[str, Any], frames: list[memoryview]) -> None:
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


def _parse_buffer(data: Any) -> tuple[int, dict[str, Any], list[memoryview], bool]:
    try:
        view = _as_bytes_view(data)
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
        offset = end + (_pad(length) if i < len(lengths) - 1 else 0)
    if offset != view.nbytes:
        raise DeserializationError(
            f"Payload has {view.nbytes - offset} unexpected trailing bytes: corrupted."
        )
    return codec, meta, frames, not view.readonly


def _parse_frames(data: Sequence[Any]) -> tuple[int, dict[str, Any], list[memoryview], bool]:
    try:
        views = [_as_bytes_view(f) for f in data]
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


def _decode(codec: int, meta: dict[str, Any], frames: list[memoryview], writable: bool) -> Any:
    if codec in (BYTES, BYTEARRAY, STR, MEMORYVIEW) and len(frames) != 1:
        raise DeserializationError("A bytes/str payload must have exactly one frame.")
    if codec == MEMORYVIEW:
        return _decode_memoryview(meta, frames[0])
    if codec == BYTES:
        return bytes_from(frames[0])
    if codec == BYTEARRAY:
        return bytearray_from(frames[0])
    if codec == STR:
        return str(frames[0], "utf-8", "surrogatepass")
    if codec == NDARRAY:
        return _decode_ndarray(meta, frames)
    if not frames:
        raise DeserializationError("A pickled payload has no frames.")
    buffers: list[Any] = frames[1:] if writable else [writable_copy(f) for f in frames[1:]]
    obj = pickle.loads(frames[0], buffers=buffers)
    if codec == POLARS:
        return _decode_polars(meta, obj)
    if meta.get("readonly") and getattr(obj, "flags", None) is not None:
        obj.flags.writeable = False
    return obj


def _decode_polars(meta: dict[str, Any], obj: Any) -> Any:
    import polars as pl

    table, schema = obj
    result = pl.from_arrow(table)
    if not isinstance(result, pl.DataFrame):
        (name,) = schema
        result = result.alias(name).to_frame()
    if dict(result.schema) != schema:
        result = result.cast(schema)  # Enum, Categorical and friends, exactly
    if meta.get("kind") == "Series":
        return result.to_series()
    return result


def _decode_ndarray(meta: dict[str, Any], frames: list[memoryview]) -> Any:
    import numpy as np

    if len(frames) != 1:
        raise DeserializationError("An ndarray payload must have exactly one frame.")
    dtype = np.dtype(str(meta["dtype"]))
    shape = tuple(int(n) for n in meta["shape"])
    order = meta["order"]
    if order not in ("C", "F"):
        raise DeserializationError(f"Unknown array order {order!r}: corrupted.")
    count = 1
    for n in shape:
        count *= n
    frame = frames[0]
    if frame.nbytes != count * dtype.itemsize:
        raise DeserializationError(
            f"Array payload holds {frame.nbytes} bytes; shape {shape} of {dtype} needs "
            f"{count * dtype.itemsize}: corrupted or truncated."
        )
    readonly = bool(meta.get("readonly", False))
    if count == 0:
        arr = np.empty(shape, dtype=dtype, order=order)
    else:
        flat = np.frombuffer(frame, dtype=dtype)
        if frame.readonly:
            flat = flat.copy()
        arr = flat.reshape(shape[::-1]).T if order == "F" else flat.reshape(shape)
    if readonly:
        arr.flags.writeable = False  # as it was stored
    return arr


# -- zero-copy decoding of immutable shared buffers ----------------------------------


def deserialize_views(data: Any) -> Any:
    """Like ``deserialize``, but arrays view a read-only buffer instead of copying it.

    For connectors whose buffers are immutable shared memory (the node store): the
    arrays that come back are read-only views, valid while they are held.

    >>> import numpy as np
    >>> payload = bytes(b"".join(bytes(f) for f in serialize(np.arange(3))))
    >>> out = deserialize_views(payload)
    >>> out.tolist(), out.flags.writeable
    ([0, 1, 2], False)
    """
    if isinstance(data, (list, tuple)):
        return deserialize(data)
    codec, meta, frames, _ = _parse_buffer(data)
    if codec not in (NDARRAY, PICKLE, CLOUDPICKLE):
        return deserialize(data)
    _check_frames(meta, frames)
    if codec == NDARRAY:
        return _decoding(codec, lambda: _view_ndarray(meta, frames))
    return _decoding(codec, lambda: pickle.loads(frames[0], buffers=frames[1:]))


def _view_ndarray(meta: dict[str, Any], frames: list[memoryview]) -> Any:
    import numpy as np

    if len(frames) != 1 or not frames[0].readonly:
        return _decode_ndarray(meta, frames)
    dtype = np.dtype(str(meta["dtype"]))
    shape = tuple(int(n) for n in meta["shape"])
    count = 1
    for n in shape:
        count *= n
    if count == 0 or frames[0].nbytes != count * dtype.itemsize or meta["order"] not in ("C", "F"):
        return _decode_ndarray(meta, frames)  # its checks and errors
    flat = np.frombuffer(frames[0], dtype=dtype)
    return flat.reshape(shape[::-1]).T if meta["order"] == "F" else flat.reshape(shape)


def ndarray_header(shape: Sequence[int], dtype: Any) -> bytes:
    """The header ``serialize`` writes before a C-ordered array of ``shape``/``dtype``.

    With it a producer can write the header and then fill the data in place
    (``Store.empty``): header + data decodes to that array, for arrays of more than
    ``CHECKED_FRAME`` bytes (smaller ones carry a CRC). Data written after the header
    carries no XXH3 digest (``pxexec.integrity``): it did not exist when the header was.

    >>> import numpy as np
    >>> a = np.ones((300, 300))
    >>> deserialize(ndarray_header(a.shape, a.dtype) + a.tobytes()).tolist() == a.tolist()
    True
    """
    import numpy as np

    dt = np.dtype(dtype)
    nbytes = dt.itemsize
    for n in shape:
        nbytes *= int(n)
    if nbytes <= CHECKED_FRAME:
        raise ValueError(f"ndarray_header is for arrays over {CHECKED_FRAME} bytes.")
    meta = {"dtype": dt.str, "shape": [int(n) for n in shape], "order": "C"}
    import mmap

    # a stand-in data frame of the right length: its pages are never touched (no CRC
    # for frames this large), so the anonymous mapping costs no memory
    stand_in = mmap.mmap(-1, nbytes)
    try:
        view = memoryview(stand_in)
        head = bytes(_frame(NDARRAY, meta, [view], digest=False)[0])
        view.release()
    finally:
        stand_in.close()
    return head
