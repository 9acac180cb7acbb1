"""The store proxies an object references, at any depth, without resolving any.

A task may return its proxied input inside anything: a dict, a tuple, a dataclass,
a list three levels down, or inside a container that is itself stored and proxied.
Whatever a result references must stay alive, so the executor needs every proxy
the result reaches. ``proxies_in`` walks an object the way pickle does (so it sees
inside any picklable object) without writing anything: large buffers are skipped
and proxies are reported, not entered. ``keys_pickled_by`` collects the keys of the
proxies that a store put (its serializer) pickled.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from pxexec.proxy import COLLECTOR, Proxy

__all__ = ["collect_pickled_keys", "proxies_in", "shallow_items", "shallow_map",
           "shallow_proxies"]

log = logging.getLogger("pxexec")

_ATOMIC = (bytes, bytearray, str, memoryview, int, float, complex, bool, type(None))


class _Sink:
    """A file that forgets what is written to it."""

    def write(self, data: Any) -> int:
        return len(memoryview(data))


def _nothing() -> None:
    return None


class _Walker(pickle.Pickler):
    def __init__(self) -> None:
        super().__init__(_Sink(), protocol=5, buffer_callback=_skip)
        self.found: list[Proxy[Any]] = []

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Proxy):
            self.found.append(obj)
            return (_nothing, ())
        if isinstance(obj, _ATOMIC):
            return (_nothing, ())
        dtype = getattr(obj, "dtype", None)
        if type(obj).__name__ == "ndarray" and getattr(dtype, "hasobject", True) is False:
            return (_nothing, ())  # plain numbers: no proxy inside, no pass over the data
        return NotImplemented


def _atomic(obj: Any) -> bool:
    """Holds no proxy: a plain str, bytes, number... (a proxy of one says it is one)."""
    return isinstance(obj, _ATOMIC) and not isinstance(obj, Proxy)


def _skip(buffer: Any) -> bool:
    return False  # out-of-band: never copied into the (discarded) stream


def proxies_in(obj: Any) -> list[Proxy[Any]]:
    """Every proxy ``obj`` references (itself, or at any depth inside it).

    >>> from pxexec.proxy import Proxy
    >>> p = Proxy(lambda: 1)
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Box:
    ...     items: list
    >>> proxies_in({"a": [Box([p])]}) == [p]
    True
    """
    if isinstance(obj, Proxy):
        return [obj]
    if isinstance(obj, _ATOMIC):
        return []
    kind = type(obj)
    if kind is list or kind is tuple or kind is dict or kind is set:
        items = obj.values() if kind is dict else obj
        if all(_atomic(v) for v in items) and (kind is not dict or all(map(_atomic, obj))):
            return []
    walker = _Walker()
    try:
        walker.dump(obj)
    except Exception as exc:  # not picklable (a thread pool's result): walk what we can
        log.debug("pxexec: walking a %s for proxies by pickle failed (%s)", kind.__name__, exc)
        try:
            return walker.found + _walk_containers(obj, set())
        except RecursionError:  # nested deeper than Python can walk: what was found
            return walker.found
    return walker.found


def shallow_items(value: Any) -> Iterable[Any]:
    """The items of a list, tuple or dict value; anything else is its own one item.

    "The top level or one container below" is where pxexec looks for arguments and
    results to proxy, boxes to open and proxies to own (``proxies_in`` looks
    everywhere).

    >>> list(shallow_items([1, 2])), list(shallow_items({"a": 3})), list(shallow_items(4))
    ([1, 2], [3], [4])
    """
    kind = type(value)
    if kind is list or kind is tuple:
        items: Iterable[Any] = value
        return items
    if kind is dict:
        values: Iterable[Any] = value.values()
        return values
    return (value,)


def shallow_map(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to each of its ``shallow_items`` (same container).

    >>> shallow_map([1, 2], str), shallow_map({"a": 1}, str), shallow_map(3, str)
    (['1', '2'], {'a': '1'}, '3')
    """
    kind = type(value)
    if kind is list or kind is tuple:
        return kind(fn(v) for v in value)
    if kind is dict:
        return {k: fn(v) for k, v in value.items()}
    return fn(value)


def shallow_proxies(value: Any) -> list[Proxy[Any]]:
    """Proxies at the top level of ``value`` or one container below.

    >>> from pxexec.proxy import Proxy
    >>> p = Proxy(lambda: 1)
    >>> shallow_proxies(p) == [p], shallow_proxies((p, 2)) == [p], shallow_proxies([[p]])
    (True, True, [])
    """
    if isinstance(value, Proxy):
        return [value]
    return [v for v in shallow_items(value) if isinstance(v, Proxy)]


def _walk_containers(obj: Any, seen: set[int]) -> list[Proxy[Any]]:
    if isinstance(obj, Proxy):
        return [obj]
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    items: Any
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        items = list(vars(obj).values())
    else:
        return []
    found: list[Proxy[Any]] = []
    for item in items:
        found.extend(_walk_containers(item, seen))
    return found


@contextlib.contextmanager
def collect_pickled_keys() -> Iterator[list[str]]:
    """Within the block, the keys of all store proxies pickled in this thread.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("collect-demo", LocalConnector())
    >>> inner = store.proxy([1, 2])
    >>> with collect_pickled_keys() as keys:
    ...     outer = store.proxy({"inner": inner})      # the dict is stored: inner pickled
    >>> keys == [inner.__px_factory__.key]
    True
    """
    previous = COLLECTOR.keys
    keys: list[str] = []
    COLLECTOR.keys = keys
    try:
        yield keys
    finally:
        COLLECTOR.keys = previous
        if previous is not None:
            previous.extend(keys)


def keys_of(proxies: list[Proxy[Any]], key: Callable[[Any], str | None]) -> set[str]:
    """The keys of ``proxies`` as ``key`` reads them (None: not a store proxy)."""
    return {k for k in map(key, proxies) if k is not None}
