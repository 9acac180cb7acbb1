"""A small thread-safe mapping that keeps only its most recently used entries.

The store's read cache, the payloads a process has verified, the node store's objects
checked on arrival and the functions whose results were proxies are each bounded
this way: a lookup or a write makes an entry the newest; past ``size`` the oldest go.

>>> recent: Recent[str, int] = Recent(2)
>>> recent.put("a", 1); recent.put("b", 2); _ = recent.get("a"); recent.put("c", 3)
>>> "a" in recent, "b" in recent, recent.get("c"), len(recent)
(True, False, 3, 2)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Recent"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """The last ``size`` entries put or looked up; its lock never covers I/O.

    >>> seen: Recent[int, None] = Recent(1)
    >>> seen.put(1, None); seen.put(2, None); 1 in seen, 2 in seen
    (False, True)
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value under ``key`` (now the newest), or None."""
        with self._lock:
            value = self._data.get(key)
            if value is not None or key in self._data:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Set ``key`` to ``value``, the newest entry; the oldest beyond ``size`` go."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def pop(self, key: K) -> None:
        """Forget ``key`` (nothing if it is not there)."""
        with self._lock:
            self._data.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            if key not in self._data:
                return False
            self._data.move_to_end(key)  # type: ignore[arg-type]
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
