"""Cheap estimates of an object's data size, without serializing it."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

# Containers are walked to this many items in total; the rest is extrapolated.
WALK_LIMIT = 1000

Estimator = Callable[[Any, list[int]], int]


def estimate_nbytes(obj: Any, _budget: list[int] | None = None) -> int:
    """Return an estimate, in bytes, of the data held by ``obj``.

    Exact for bytes-likes, str, numpy arrays, pandas, polars and pyarrow objects;
    for lists, tuples, sets and dicts a bounded walk of at most ``WALK_LIMIT`` items
    whose average is extrapolated to the full length. Never serializes ``obj``.
    The way to measure is chosen once per type and cached.
    """
    kind = type(obj)
    estimator = _BY_TYPE.get(kind)
    if estimator is None:
        estimator = _BY_TYPE[kind] = _choose(kind)
    return estimator(obj, _budget if _budget is not None else [WALK_LIMIT])


def _length(obj: Any, budget: list[int]) -> int:
    return len(obj)


def _memoryview(obj: Any, budget: list[int]) -> int:
    return int(obj.nbytes)


def _getsizeof(obj: Any, budget: list[int]) -> int:
    return sys.getsizeof(obj)


def _nbytes_attribute(obj: Any, budget: list[int]) -> int:
    value = getattr(obj, "nbytes", None)
    return int(value) if isinstance(value, int) else sys.getsizeof(obj)


def _pandas(obj: Any, budget: list[int]) -> int:
    try:
        usage = obj.memory_usage(deep=False, index=True)
    except (AttributeError, TypeError):
        return sys.getsizeof(obj)
    return int(usage.sum()) if hasattr(usage, "sum") else int(usage)


def _polars(obj: Any, budget: list[int]) -> int:
    size = getattr(obj, "estimated_size", None)
    return int(size()) if callable(size) else sys.getsizeof(obj)


def _choose(kind: type[Any]) -> Estimator:
    if issubclass(kind, (bytes, bytearray, str)):
        return _length  # str: its length is a good enough size to decide on proxying
    if issubclass(kind, memoryview):
        return _memoryview
    if kind is type(None) or issubclass(kind, (bool, int, float, complex)):
        return _getsizeof
    module = kind.__module__.partition(".")[0]
    if module in ("numpy", "pyarrow"):
        return _nbytes_attribute
    if module == "pandas":
        return _pandas
    if module == "polars":
        return _polars
    if issubclass(kind, (list, tuple, set, frozenset, dict)):
        return _walk
    return _getsizeof


class _Walking(threading.local):
    ids: set[int] | None = None


_WALKING = _Walking()


def _walk(obj: Any, budget: list[int]) -> int:
    # A container that holds itself (directly or further down) counts once.
    walking = _WALKING.ids
    top = walking is None
    if top:
        walking = _WALKING.ids = set()
    assert walking is not None
    if id(obj) in walking:
        return 0
    walking.add(id(obj))
    try:
        return _walk_items(obj, budget)
    except RecursionError:  # too deep to walk: the container's own size will do
        return sys.getsizeof(obj)
    finally:
        walking.discard(id(obj))
        if top:
            _WALKING.ids = None


def _walk_items(obj: Any, budget: list[int]) -> int:
    is_dict = isinstance(obj, dict)
    items: Any = obj.items() if is_dict else obj
    length = len(obj)
    total = sys.getsizeof(obj)
    seen = 0
    for item in items:
        if budget[0] <= 0:
            break
        budget[0] -= 1
        seen += 1
        if is_dict:
            key, value = item
            total += estimate_nbytes(key, budget) + estimate_nbytes(value, budget)
        else:
            total += estimate_nbytes(item, budget)
    if seen and seen < length:
        per_item = (total - sys.getsizeof(obj)) / seen
        total += int(per_item * (length - seen))
    return total


_BY_TYPE: dict[type[Any], Estimator] = {}
