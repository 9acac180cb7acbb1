"""Cheap estimates of an object's data size, without serializing it."""

from __future__ import annotations

import sys
from typing import Any

# Containers are walked to this many items in total; the rest is extrapolated.
WALK_LIMIT = 1000


def estimate_nbytes(obj: Any, _budget: list[int] | None = None) -> int:
    """Return an estimate, in bytes, of the data held by ``obj``.

    Exact for bytes-likes, str, numpy arrays, pandas, polars and pyarrow objects;
    for lists, tuples, sets and dicts a bounded walk of at most ``WALK_LIMIT`` items
    whose average is extrapolated to the full length. Never serializes ``obj``.
    """
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if isinstance(obj, str):
        return len(obj)  # ascii size; good enough to decide on proxying
    if isinstance(obj, memoryview):
        return obj.nbytes
    if obj is None or isinstance(obj, (bool, int, float, complex)):
        return sys.getsizeof(obj)
    nbytes = _native_nbytes(obj)
    if nbytes is not None:
        return nbytes
    if isinstance(obj, (list, tuple, set, frozenset, dict)):
        return _walk(obj, _budget if _budget is not None else [WALK_LIMIT])
    return sys.getsizeof(obj)


def _native_nbytes(obj: Any) -> int | None:
    module = type(obj).__module__.partition(".")[0]
    if module == "numpy":
        value = getattr(obj, "nbytes", None)
        return int(value) if isinstance(value, int) else None
    if module == "pandas":
        try:
            usage = obj.memory_usage(deep=False, index=True)
        except (AttributeError, TypeError):
            return None
        return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
    if module == "polars":
        size = getattr(obj, "estimated_size", None)
        return int(size()) if callable(size) else None
    if module == "pyarrow":
        value = getattr(obj, "nbytes", None)
        return int(value) if isinstance(value, int) else None
    return None


def _walk(obj: Any, budget: list[int]) -> int:
    items: Any = obj.items() if isinstance(obj, dict) else obj
    length = len(obj)
    total = sys.getsizeof(obj)
    seen = 0
    for item in items:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        seen += 1
        if isinstance(obj, dict):
            key, value = item
            total += estimate_nbytes(key, budget) + estimate_nbytes(value, budget)
        else:
            total += estimate_nbytes(item, budget)
    if seen and seen < length:
        per_item = (total - sys.getsizeof(obj)) / seen
        total += int(per_item * (length - seen))
    return total
