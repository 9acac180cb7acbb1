"""Large ``bytes`` and ``bytearray`` objects backed by transparent huge pages.

Filling a new 100 MB ``bytes`` costs more in page faults than in copying: the
kernel maps it 4 kB at a time. numpy asks for huge pages on its large arrays
(``madvise(MADV_HUGEPAGE)``); Python's ``bytes`` cannot. Here a ``bytes`` of the
final size is created uninitialised (as ``os.read`` does in C), its pages are
advised before the first write, and the caller fills it through a writable view
before the object is shared with anyone. Where this is not available (not
CPython on Linux, or ``madvise`` refused) the plain constructors are used.
"""

from __future__ import annotations

import ctypes
import mmap
import sys
from collections.abc import Callable
from typing import Any

from pxexec.codec.bulk_copy import copy_into

__all__ = ["HUGE_MIN", "bytearray_from", "bytes_from"]

#: below this size the plain constructors are as fast
HUGE_MIN = 4 << 20
_MADV_HUGEPAGE = 14
_PAGE = mmap.PAGESIZE


def _load() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any],
                     Callable[..., Any]] | None:
    if sys.platform != "linux" or sys.implementation.name != "cpython":
        return None
    try:
        api = ctypes.pythonapi
        new_bytes = api.PyBytes_FromStringAndSize
        new_bytes.restype, new_bytes.argtypes = ctypes.py_object, (ctypes.c_void_p,
                                                                   ctypes.c_ssize_t)
        bytes_addr = api.PyBytes_AsString
        bytes_addr.restype, bytes_addr.argtypes = ctypes.c_void_p, (ctypes.py_object,)
        new_array = api.PyByteArray_FromStringAndSize
        new_array.restype, new_array.argtypes = ctypes.py_object, (ctypes.c_void_p,
                                                                   ctypes.c_ssize_t)
        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.restype, madvise.argtypes = ctypes.c_int, (ctypes.c_void_p, ctypes.c_size_t,
                                                           ctypes.c_int)
    except (AttributeError, OSError):
        return None
    return new_bytes, bytes_addr, new_array, madvise


_API = _load()


def _advise(address: int, nbytes: int) -> None:
    assert _API is not None
    start = (address + _PAGE - 1) & ~(_PAGE - 1)
    end = (address + nbytes) & ~(_PAGE - 1)
    if end > start:
        _API[3](start, end - start, _MADV_HUGEPAGE)  # a refusal only costs speed


def _flat(view: memoryview) -> memoryview:
    """``view`` as contiguous unsigned bytes (what a byte-wise slice copy needs)."""
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def bytes_from(view: memoryview) -> bytes:
    """``bytes(view)``, faster for large views where huge pages are available.

    >>> bytes_from(memoryview(b"abc"))
    b'abc'
    >>> big = bytes(range(256)) * (HUGE_MIN // 256 + 1)
    >>> bytes_from(memoryview(big)) == big
    True
    """
    nbytes = view.nbytes
    if _API is None or nbytes < HUGE_MIN:
        return bytes(view)
    out: bytes = _API[0](None, nbytes)
    address: int = _API[1](out)
    _advise(address, nbytes)
    # the new object is not shared yet: writing into it is what its C constructors do
    target = memoryview((ctypes.c_char * nbytes).from_address(address)).cast("B")
    copy_into(target, _flat(view))
    target.release()
    return out


def bytearray_from(view: memoryview) -> bytearray:
    """``bytearray(view)``, faster for large views where huge pages are available.

    >>> bytearray_from(memoryview(b"abc"))
    bytearray(b'abc')
    """
    nbytes = view.nbytes
    if _API is None or nbytes < HUGE_MIN:
        return bytearray(view)
    out: bytearray = _API[2](None, nbytes)
    target = memoryview(out)
    _advise(ctypes.addressof(ctypes.c_char.from_buffer(out)), nbytes)
    copy_into(target, _flat(view))
    target.release()
    return out
