"""Framed, zero-copy serialization: the codec of each kind of object.

``serialize(obj)`` returns a list of frames (the format is ``pxexec.codec.frames``). No large
buffer is copied to build the list: a numpy array's frame is a view of its memory.
``deserialize`` accepts either the list or one contiguous buffer holding the
concatenation of the frames (what connectors return).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any

from pxexec.codec.frames import (
    BYTEARRAY,
    BYTES,
    CHECKED_FRAME,
    CLOUDPICKLE,
    CODEC_NAMES,
    MEMORYVIEW,
    NDARRAY,
    PICKLE,
    POLARS,
    STR,
    DigestsPending,
    Frames,
    check_frames,
    make_frames,
    parse_buffer,
    parse_frames,
    pending_digests,
    writable_copy,
)
from pxexec.codec.hugepages import bytearray_from, bytes_from
from pxexec.codec.integrity import defer_digests
from pxexec.errors import DeserializationError, SerializationError

Serializer = Callable[[Any], Sequence[Any]]
Deserializer = Callable[[Any], Any]


# -- serialize -----------------------------------------------------------------------


def serialize(obj: Any) -> Frames:
    """Serialize ``obj`` to a list of frames without copying large buffers."""
    kind = type(obj)
    if kind is bytes:
        return make_frames(BYTES, None, [obj])
    if kind is bytearray:
        return make_frames(BYTEARRAY, None, [obj])
    if kind is str:
        return make_frames(STR, None, [obj.encode("utf-8", "surrogatepass")])
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
    return make_frames(MEMORYVIEW, meta, [data.cast("B") if data.nbytes else b""])


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
        return make_frames(NDARRAY, meta, [b""])
    return make_frames(NDARRAY, meta, [data.reshape(-1).view(np.uint8)])


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
    return make_frames(POLARS, meta, [stream, *buffers])


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
    return make_frames(codec, meta, [stream, *buffers])


# -- deserialize ---------------------------------------------------------------------


def deserialize(data: Any) -> Any:
    """Rebuild an object from ``serialize``'s frames or from one buffer holding them.

    Arrays view ``data`` without a copy when it is writable (e.g. a private mmap);
    from a read-only buffer they are copied once so that they come back writable.
    """
    if isinstance(data, (list, tuple)):
        if not data:
            raise DeserializationError("Cannot deserialize an empty list of frames.")
        codec, meta, frames, writable = parse_frames(data)
    else:
        codec, meta, frames, writable = parse_buffer(data)
    check_frames(meta, frames)
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
    codec, meta, frames, _ = parse_buffer(data)
    if codec not in (NDARRAY, PICKLE, CLOUDPICKLE):
        return deserialize(data)
    check_frames(meta, frames)
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


def ndarray_header(shape: Sequence[int], dtype: Any, *, digest_room: bool = False
                   ) -> tuple[bytes, DigestsPending | None]:
    """The header ``serialize`` writes before a C-ordered array of ``shape``/``dtype``,
    and, with ``digest_room``, what ``fill_digests`` needs to put the XXH3 digest of the
    data into it once the data is written (None when there is no room: xxhash missing).

    With it a producer can write the header and then fill the data in place
    (``Store.empty``): header + data decodes to that array, for arrays of more than
    ``CHECKED_FRAME`` bytes (smaller ones carry a CRC). Without ``digest_room`` the data
    carries no XXH3 digest (``pxexec.codec.integrity``): it did not exist when the
    header was.

    >>> import numpy as np
    >>> a = np.ones((300, 300))
    >>> head, _ = ndarray_header(a.shape, a.dtype)
    >>> deserialize(head + a.tobytes()).tolist() == a.tolist()
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
    # for frames this large, the digest is left to fill_digests), so the anonymous
    # mapping costs no memory
    stand_in = mmap.mmap(-1, nbytes)
    try:
        view = memoryview(stand_in)
        if digest_room:
            with defer_digests():
                frames = make_frames(NDARRAY, meta, [view])
        else:
            frames = make_frames(NDARRAY, meta, [view], digest=False)
        head = bytes(frames[0])
        room = pending_digests(frames) if isinstance(frames, DigestsPending) else None
        del frames
        view.release()
    finally:
        stand_in.close()
    return head, room
