"""Lazy, transparent proxies.

A ``Proxy`` wraps a factory (a self-contained callable returning the target) and
forwards every operation to the target, which it fetches on first use, once per
process, under a lock (N threads touching one unresolved proxy cause one fetch).

Metadata that execution engines inspect (``isinstance``/``__class__``, ``hash``,
``__module__``, byte size, Dask token) is answered from values cached when the proxy
was made, without resolving. Pickling a proxy pickles only its factory and those
cached values.
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union

from pxexec.sizing import estimate_nbytes

__all__ = [
    "Proxy",
    "ProxyInfo",
    "ProxyOr",
    "extract",
    "get_factory",
    "get_info",
    "is_proxy",
    "is_resolved",
    "resolve",
]

T = TypeVar("T")

_UNSET: Any = object()
# Hashing large strings and bytes is O(n); their hash is computed on demand instead.
EAGER_HASH_LIMIT = 1 << 20


@dataclass(frozen=True)
class ProxyInfo:
    """What a proxy knows about its target without fetching it.

    >>> from pxexec import Store
    >>> from pxexec.proxy import get_info
    >>> from pxexec.connectors.local import LocalConnector
    >>> info = get_info(Store("info-demo", LocalConnector()).proxy(bytes(1000)))
    >>> info.cls, info.nbytes
    (<class 'bytes'>, 1000)
    """

    cls: type[Any] | None = None
    hash: int | None = None
    hashable: bool | None = None  # None: unknown, resolve to find out
    nbytes: int | None = None
    token: str | None = None

    @classmethod
    def of(cls, obj: Any, token: str | None = None) -> ProxyInfo:
        target_cls = obj.__class__
        value: int | None = None
        hashable: bool | None
        if isinstance(obj, (str, bytes)) and len(obj) > EAGER_HASH_LIMIT:
            hashable = None
        else:
            try:
                value, hashable = hash(obj), True
            except (TypeError, ValueError):  # ValueError: a writable memoryview
                hashable = False
        return cls(target_cls, value, hashable, estimate_nbytes(obj), token)

    def portable(self) -> ProxyInfo:
        """A copy safe to pickle: drops classes other processes could not import."""
        c = self.cls
        if c is None or (c.__module__ != "__main__" and "<locals>" not in c.__qualname__):
            return self
        return ProxyInfo(None, self.hash, self.hashable, self.nbytes, self.token)


def _target(proxy: Proxy[Any]) -> Any:
    target = proxy.__px_target__
    if target is _UNSET:
        with proxy.__px_lock__:
            target = proxy.__px_target__
            if target is _UNSET:
                target = proxy.__px_factory__()
                object.__setattr__(proxy, "__px_target__", target)
    return target


class _Collector(threading.local):
    keys: list[str] | None = None


#: while a list is set here, every store proxy pickled in this thread adds its key
COLLECTOR = _Collector()
#: key -> the live owner of that key in this process (set by pxexec.store.ownership)
owner_of: Callable[[str], Any] | None = None


def _rebuild(factory: Callable[[], Any], info: ProxyInfo | None, kind: type[Any]) -> Any:
    proxy = kind(factory, info=info)
    find = owner_of
    key = getattr(factory, "key", None)
    if find is not None and type(key) is str:
        # A proxy arriving in the process that owns its object keeps the owner alive
        # (a task that returned its input inside a container, a downstream result
        # holding an upstream one): whatever still references an object keeps it.
        owner = find(key)
        if owner is not None:
            object.__setattr__(proxy, "__px_keep__", owner)
    return proxy


class _ProxyType(type):
    # ``Proxy.__module__`` on the class stays this module (pickle, typing, repr need it);
    # on an instance it is the target's module (engines' serializers read it).
    @property
    def __module__(cls) -> str:  # type: ignore[override]
        return "pxexec.proxy"

    def __repr__(cls) -> str:
        if "__px_kind__" in cls.__dict__:  # made for a target class: say what C code needs
            return (f"<class 'pxexec.proxy.{cls.__qualname__}' (pass pxexec.extract(proxy) "
                    "where the exact object is needed)>")
        return f"<class 'pxexec.proxy.{cls.__qualname__}'>"


class Proxy(Generic[T], metaclass=_ProxyType):
    """A lazy stand-in for the object its factory returns.

    >>> p = Proxy(lambda: [1, 2, 3])
    >>> len(p), p[0], isinstance(p, list)
    (3, 1, True)
    """

    __slots__ = (
        "__px_factory__", "__px_info__", "__px_keep__", "__px_lock__", "__px_target__",
        "__weakref__",
    )

    def __new__(cls, factory: Callable[[], T], *args: Any, info: ProxyInfo | None = None,
                **kwargs: Any) -> Proxy[T]:  # (subclasses may take more arguments)
        # an instance of the subclass with exactly the target class's special methods
        target_cls = info.cls if info is not None else None
        kind = SPECIALIZED.get((cls, target_cls)) or specialize(cls, target_cls)
        proxy: Proxy[T] = object.__new__(kind)
        return proxy

    def __init__(self, factory: Callable[[], T], *, info: ProxyInfo | None = None) -> None:
        if not callable(factory):
            raise TypeError(f"A proxy needs a callable factory, got {type(factory).__name__}.")
        object.__setattr__(self, "__px_factory__", factory)
        object.__setattr__(self, "__px_info__", info or ProxyInfo())
        object.__setattr__(self, "__px_lock__", threading.Lock())
        object.__setattr__(self, "__px_target__", _UNSET)
        object.__setattr__(self, "__px_keep__", None)  # what must outlive this proxy

    # -- metadata answered without resolving ------------------------------------------

    @property  # type: ignore[misc]
    def __class__(self) -> type[Any]:  # type: ignore[override]
        cls = self.__px_info__.cls
        return cls if cls is not None else type(_target(self))

    @property  # type: ignore[misc]
    def __module__(self) -> str:  # type: ignore[override]
        return str(self.__class__.__module__)

    def __hash__(self) -> int:
        info = self.__px_info__
        if info.hashable is True and info.hash is not None:
            return int(info.hash)
        if info.hashable is False:
            cls = info.cls.__name__ if info.cls else "object"
            raise TypeError(f"unhashable type: '{cls}'")
        return hash(_target(self))

    def __sizeof__(self) -> int:
        nbytes = self.__px_info__.nbytes
        return nbytes if nbytes is not None else sys.getsizeof(_target(self))

    @property
    def __pxexec_nbytes__(self) -> int:
        """The target's data size in bytes (for engines' memory accounting)."""
        return self.__sizeof__()

    def __dask_tokenize__(self) -> Any:
        token = self.__px_info__.token
        if token is not None:
            return ("pxexec.Proxy", token)
        from dask.base import normalize_token  # only reached from inside dask

        return normalize_token(_target(self))

    def __repr__(self) -> str:
        info = self.__px_info__
        name = info.cls.__qualname__ if info.cls is not None else "?"
        describe = getattr(self.__px_factory__, "describe", None)
        where = describe() if callable(describe) else repr(self.__px_factory__)
        state = "resolved" if self.__px_target__ is not _UNSET else "unresolved"
        return f"<Proxy[{name}] {state} {where}>"

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        factory = self.__px_factory__
        keys = COLLECTOR.keys
        if keys is not None and type(getattr(factory, "key", None)) is str:
            keys.append(factory.key)
        return (_rebuild, (factory, self.__px_info__.portable(), kind_of(type(self))))

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__reduce_ex__(2)

    def __copy__(self) -> Proxy[T]:
        return type(self)(self.__px_factory__, info=self.__px_info__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(_target(self), memo)

    # -- attribute access -------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            # Engines probe dunders (``__dask_graph__``, ...): answer from the class
            # when the target's class does not define them, without resolving.
            cls = self.__px_info__.cls
            if name in HIDDEN:
                raise AttributeError(
                    f"A proxy does not forward {name!r} (numpy would read it without the "
                    "dtype's details); np.asarray(proxy) uses __array__, which is exact."
                )
            if cls is not None and not hasattr(cls, name):
                raise AttributeError(f"{cls.__qualname__!r} object has no attribute {name!r}")
        return getattr(_target(self), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__orig_class__":  # set by typing on Proxy[T](...); not the target's
            return
        setattr(_target(self), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(_target(self), name)

    def __dir__(self) -> list[str]:
        return dir(_target(self))

    # -- conversions every object has (the rest: pxexec.proxy_protocols) -------------

    def __str__(self) -> str:
        return str(_target(self))

    def __bool__(self) -> bool:
        return bool(_target(self))

    def __format__(self, spec: str) -> str:
        return format(_target(self), spec)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        """Exactly ``np.asarray(target)`` (numpy asks this of any object)."""
        import numpy as np

        target = _target(self)
        if copy is None:
            return np.asarray(target, dtype=dtype)
        return np.array(target, dtype=dtype, copy=copy)

    # -- comparisons ------------------------------------------------------------------

    def __eq__(self, other: object) -> Any:
        return _target(self) == other

    def __ne__(self, other: object) -> Any:
        return _target(self) != other

    def __lt__(self, other: Any) -> Any:
        return _target(self) < other

    def __le__(self, other: Any) -> Any:
        return _target(self) <= other

    def __gt__(self, other: Any) -> Any:
        return _target(self) > other

    def __ge__(self, other: Any) -> Any:
        return _target(self) >= other

    if TYPE_CHECKING:  # forwarded where the target's class has them (proxy_protocols)

        def __len__(self) -> int: ...
        def __iter__(self) -> Any: ...
        def __getitem__(self, key: Any) -> Any: ...
        def __setitem__(self, key: Any, value: Any) -> None: ...
        def __contains__(self, item: Any) -> bool: ...
        def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
        def __add__(self, other: Any) -> Any: ...
        def __mul__(self, other: Any) -> Any: ...


ProxyOr = Union[T, Proxy[T]]  # noqa: UP007 - an alias must work on Python 3.10 too
"""A value that may be given either as itself or as a proxy of it."""


def forget_target(proxy: Proxy[Any]) -> None:
    """Drop the proxy's resolved target; the next use fetches it again (internal).

    Nothing else changes: references to the target (or to arrays viewing it) that
    code still holds keep it alive.
    """
    with proxy.__px_lock__:
        object.__setattr__(proxy, "__px_target__", _UNSET)


def rebind(proxy: Proxy[Any], factory: Callable[[], Any], *, info: ProxyInfo | None = None,
           drop_target: bool = False) -> None:
    """Point ``proxy`` at another factory (and metadata); optionally drop its target
    (internal: ownership moves, frees and updates proxies with it)."""
    with proxy.__px_lock__:
        object.__setattr__(proxy, "__px_factory__", factory)
        if info is not None:
            object.__setattr__(proxy, "__px_info__", info)
        if drop_target:
            object.__setattr__(proxy, "__px_target__", _UNSET)


def share_target(source: Proxy[Any], dest: Proxy[Any]) -> None:
    """Give ``dest`` the target ``source`` already fetched, if any (internal)."""
    target = source.__px_target__
    if target is not _UNSET:
        object.__setattr__(dest, "__px_target__", target)


def keep(holder: Proxy[Any], obj: Any) -> None:
    """Keep ``obj`` alive as long as ``holder`` lives (internal: an owner kept by the
    proxies that reference its object)."""
    if holder is obj:
        return
    kept = holder.__px_keep__
    if kept is None:
        object.__setattr__(holder, "__px_keep__", obj)
    elif isinstance(kept, list):
        if not any(k is obj for k in kept):
            kept.append(obj)
    elif kept is not obj:
        object.__setattr__(holder, "__px_keep__", [kept, obj])


def kept(holder: Proxy[Any]) -> list[Any]:
    """What ``holder`` keeps alive (see ``keep``)."""
    value = holder.__px_keep__
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def set_owner_lookup(find: Callable[[str], Any] | None) -> None:
    """Install the function that finds this process's live owner of a key: a store
    proxy unpickled here keeps that owner alive (pxexec.store.ownership installs it)."""
    global owner_of
    owner_of = find


def is_resolved(obj: Any) -> bool:
    """Whether a proxy has fetched its target in this process (non-proxies: True).

    >>> p = Proxy(lambda: "target")
    >>> is_resolved(p)
    False
    >>> p.upper()
    'TARGET'
    >>> is_resolved(p)
    True
    """
    return not isinstance(obj, Proxy) or obj.__px_target__ is not _UNSET


def resolve(obj: Any) -> None:
    """Fetch a proxy's target now (for example to overlap I/O before first use).

    >>> p = Proxy(lambda: [1, 2])
    >>> resolve(p)
    >>> is_resolved(p)
    True
    """
    if isinstance(obj, Proxy):
        _target(obj)


def extract(obj: ProxyOr[T]) -> T:
    """The target of a proxy, resolving it if needed; a non-proxy is returned as is.

    Use it where C code needs the exact object (``np.frombuffer``, ``struct``...).

    >>> target = [1, 2]
    >>> extract(Proxy(lambda: target)) is target, extract(target) is target
    (True, True)
    """
    return _target(obj) if isinstance(obj, Proxy) else obj


def get_factory(proxy: Proxy[T]) -> Callable[[], T]:
    """The factory a proxy resolves through (for a store proxy: its key and store).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("factory-demo", LocalConnector())
    >>> factory = get_factory(store.proxy({"a": 1}))
    >>> factory() == {"a": 1}, store.exists(factory.key)
    (True, True)
    """
    if not isinstance(proxy, Proxy):
        raise TypeError(f"get_factory() needs a Proxy, got {type(proxy).__name__}.")
    factory: Callable[[], T] = proxy.__px_factory__
    return factory


def get_info(proxy: Proxy[Any]) -> ProxyInfo:
    """The metadata a proxy answers without resolving (see ``ProxyInfo``).

    >>> get_info(Proxy(lambda: 1)).cls is None    # a hand-made proxy knows nothing
    True
    """
    info: ProxyInfo = proxy.__px_info__
    return info


def is_proxy(obj: Any) -> bool:
    """Whether ``obj`` is a proxy (without resolving it).

    >>> is_proxy(Proxy(lambda: 1)), is_proxy(1)
    (True, False)
    """
    return isinstance(obj, Proxy)


from pxexec.proxy_protocols import (  # noqa: E402 - needs Proxy
    HIDDEN,
    SPECIALIZED,
    kind_of,
    specialize,
)
