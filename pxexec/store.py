"""Store: a serializer, a cache and a connector behind put/get/proxy.

A store is rebuilt in any process from its config (``Store.from_config``), once per
process, through a registry; workers never receive a live store, only its config
inside each proxy's factory.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pxexec.connectors import connector_from_config
from pxexec.errors import ConfigError, MissingKeyError, SignatureError
from pxexec.evictions import FailedEvictions
from pxexec.factory import StoreFactory
from pxexec.lease import keeper, lease_of
from pxexec.proxy import Proxy, ProxyInfo
from pxexec.serialize import Deserializer, Serializer, deserialize, payload_size, serialize
from pxexec.signing import Signer

__all__ = ["Store", "StoreMetrics", "clear_registry", "registered_stores"]

if TYPE_CHECKING:
    from pxexec.ownership import OwnedProxy

T = TypeVar("T")

_MISSING: Any = object()
#: objects larger than this are never cached (they are returned zero-copy instead)
CACHE_OBJECT_LIMIT = 16 * 1024 * 1024


@dataclass
class StoreMetrics:
    """Counters of one store in this process (``store.metrics``).

    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("metrics-demo", LocalConnector())
    >>> store.get(store.put(b"abc"))
    b'abc'
    >>> store.metrics.puts, store.metrics.gets
    (1, 1)
    """

    puts: int = 0
    gets: int = 0
    cache_hits: int = 0
    misses: int = 0
    evictions: int = 0
    #: evictions that raised (each is logged and retried; see pxexec.evictions)
    evict_failures: int = 0
    evict_retries: int = 0
    evictions_given_up: int = 0
    bytes_put: int = 0
    bytes_got: int = 0
    put_seconds: float = 0.0
    get_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The counters as a plain dict."""
        return asdict(self)


class _LRU:
    """A small LRU of read-only payload buffers; its lock never covers I/O."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[str, memoryview] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> memoryview | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: memoryview) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def pop(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)


class Store:
    """Puts objects into a connector's backend and hands out proxies to them.

    >>> from pxexec.connectors.local import LocalConnector
    >>> with Store("demo", LocalConnector()) as store:
    ...     key = store.put([1, 2, 3])
    ...     store.get(key)
    [1, 2, 3]
    """

    def __init__(
        self,
        name: str,
        connector: Any,
        *,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        cache_size: int = 16,
        register: bool = True,
        secret_env: str | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ConfigError("A store needs a non-empty name.")
        if cache_size < 0:
            raise ConfigError("cache_size must be zero or positive.")
        self.name = name
        self.connector = connector
        self.serializer: Serializer = serializer or serialize
        self.deserializer: Deserializer = deserializer or deserialize
        self.cache_size = cache_size
        self.secret_env = secret_env
        self._signer = Signer(_read_secret(secret_env)) if secret_env else None
        self._cache = _LRU(cache_size) if cache_size and _cacheable(connector) else None
        self._routes = bool(getattr(connector, "routes_objects", False))
        self._metrics = StoreMetrics()
        self._metrics_lock = threading.Lock()
        self._config: dict[str, Any] = {
            "name": name,
            "connector": connector.config(),
            "serializer": serializer,
            "deserializer": deserializer,
            "cache_size": cache_size,
            "secret_env": secret_env,
        }
        self._fingerprint = fingerprint(self._config)
        #: evictions that failed, waiting for a retry (see ``free``)
        self.failed_evictions = FailedEvictions(self)
        if register:
            _register(self)

    # -- config -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """A picklable description from which any process rebuilds this store."""
        return self._config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Store:
        """This process's store for ``config``, created on first use."""
        return get_or_create_store(config)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    # -- objects ----------------------------------------------------------------------

    def put(self, obj: Any, *, tags: Iterable[str] = ()) -> str:
        """Store ``obj``; return its key.

        ``tags`` (and the object's type) reach connectors that route objects, such
        as the MultiConnector.
        """
        start = time.perf_counter()
        frames = self._sign(self.serializer(obj))
        if self._routes:
            key: str = self.connector.put(frames, obj_type=type(obj), tags=tuple(tags))
        else:
            key = self.connector.put(frames)
        self._count(puts=1, bytes_put=payload_size(frames), put_seconds=time.perf_counter() - start)
        return key

    def put_batch(self, objs: Iterable[Any]) -> list[str]:
        """Store several objects with one batched backend call where it has one."""
        start = time.perf_counter()
        payloads = [self._sign(self.serializer(obj)) for obj in objs]
        keys: list[str] = self.connector.put_batch(payloads)
        self._count(
            puts=len(keys),
            bytes_put=sum(payload_size(p) for p in payloads),
            put_seconds=time.perf_counter() - start,
        )
        return keys

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The object stored under ``key``.

        A missing key raises ``MissingKeyError`` (a ``KeyError``) unless a
        ``default`` is given.
        """
        start = time.perf_counter()
        buffer = self._cache.get(key) if self._cache is not None else None
        hit = buffer is not None
        if buffer is None:
            buffer = self.connector.get(key)
            if buffer is None:
                self._count(misses=1)
                if default is _MISSING:
                    raise MissingKeyError(key, self.name, _where_from(self.connector, key))
                return default
            buffer = self._remember(key, self._verify(key, buffer))
        obj = self.deserializer(buffer)
        self._count(
            gets=1,
            cache_hits=int(hit),
            bytes_got=memoryview(buffer).nbytes,
            get_seconds=time.perf_counter() - start,
        )
        return obj

    def get_batch(self, keys: Sequence[str], default: Any = _MISSING) -> list[Any]:
        """The objects under ``keys``, fetched in one batched backend call if possible."""
        buffers = self.connector.get_batch(list(keys))
        result = []
        for key, buffer in zip(keys, buffers):
            if buffer is None:
                if default is _MISSING:
                    raise MissingKeyError(key, self.name, _where_from(self.connector, key))
                result.append(default)
                continue
            result.append(self.deserializer(self._remember(key, self._verify(key, buffer))))
        self._count(gets=len(result), bytes_got=sum(memoryview(b).nbytes for b in buffers if b))
        return result

    def _sign(self, frames: Any) -> Any:
        """With a secret: prepend a 64-byte frame that authenticates the payload."""
        if self._signer is None:
            return frames
        return [self._signer.sign(frames), *frames]

    def _verify(self, key: str, buffer: Any) -> Any:
        """The payload behind a verified signature; nothing is decoded before this."""
        if self._signer is None:
            return buffer
        if not self._signer.is_signed(buffer):
            raise SignatureError(
                f"Object {key!r} in store {self.name!r} is not signed, but this store "
                "requires signatures: it was written by a writer without the secret. "
                "Nothing was deserialized."
            )
        payload = self._signer.verify(buffer)
        if payload is None:
            raise SignatureError(
                f"Object {key!r} in store {self.name!r} failed signature verification: "
                "it was written or changed by someone without this store's secret. "
                "Nothing was deserialized."
            )
        return payload

    def _remember(self, key: str, buffer: Any) -> Any:
        if self._cache is not None:
            view = memoryview(buffer)
            if view.nbytes <= CACHE_OBJECT_LIMIT:
                view = view.toreadonly()  # shared by readers: each decodes its own copy
                self._cache.put(key, view)
                return view
        return buffer

    def replace(self, key: str, obj: Any) -> None:
        """Overwrite the object under ``key`` (readers that resolve later see it)."""
        frames = self._sign(self.serializer(obj))
        self.connector.replace(key, frames)
        if self._cache is not None:
            self._cache.pop(key)
        self._count(puts=1, bytes_put=payload_size(frames))

    def exists(self, key: str) -> bool:
        """Whether ``key`` is in the store."""
        return bool(self.connector.exists(key))

    def evict(self, key: str) -> None:
        """Remove ``key`` from the store (no error if it is already gone)."""
        if self._cache is not None:
            self._cache.pop(key)
        if lease_of(self.connector) is not None:
            keeper().forget(self, [key])
        self.connector.evict(key)
        self._count(evictions=1)

    def evict_batch(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if self._cache is not None:
            for key in keys:
                self._cache.pop(key)
        if lease_of(self.connector) is not None:
            keeper().forget(self, keys)
        self.connector.evict_batch(keys)
        self._count(evictions=len(keys))

    def free(self, keys: Iterable[str]) -> None:
        """Evict ``keys`` and never raise: what fails is logged, counted in
        ``metrics.evict_failures`` and retried in the background (``pxexec.evictions``).

        >>> from pxexec.connectors.local import LocalConnector
        >>> store = Store("free-demo", LocalConnector())
        >>> store.free([store.put(b"x")]); store.metrics.evictions
        1
        """
        keys = list(keys)
        try:
            self.evict_batch(keys)
            return
        except Exception:
            pass  # find which keys fail: the others are freed now
        for key in keys:
            try:
                self.connector.evict(key)
            except Exception as exc:
                self.failed_evictions.failed(key, exc)

    # -- proxies ----------------------------------------------------------------------

    def proxy(
        self, obj: T, *, populate_target: bool = False, tags: Iterable[str] = ()
    ) -> Proxy[T]:
        """Store ``obj`` and return a lazy proxy that resolves to it anywhere."""
        key = self.put(obj, tags=tags)
        return self._make_proxy(key, obj, populate_target)

    def proxy_batch(self, objs: Sequence[T], *, populate_target: bool = False) -> list[Proxy[T]]:
        """Store several objects (batched) and return a proxy for each."""
        keys = self.put_batch(objs)
        return [self._make_proxy(k, o, populate_target) for k, o in zip(keys, objs)]

    def owned_proxy(self, obj: T) -> OwnedProxy[T]:
        """Store ``obj`` and return its owner: freed when dropped (see pxexec.ownership)."""
        from pxexec.ownership import owned

        return owned(self, obj)

    def proxy_from_key(self, key: str) -> Proxy[Any]:
        """A proxy of an object already in the store (its metadata comes on resolve)."""
        return Proxy(StoreFactory(key, self._config, store=self), info=ProxyInfo(token=key))

    def _make_proxy(self, key: str, obj: T, populate_target: bool) -> Proxy[T]:
        proxy: Proxy[T] = Proxy(
            StoreFactory(key, self._config, store=self), info=ProxyInfo.of(obj, token=key)
        )
        if populate_target:
            object.__setattr__(proxy, "__px_target__", obj)
        return proxy

    # -- housekeeping -----------------------------------------------------------------

    @property
    def metrics(self) -> StoreMetrics:
        """A snapshot of this store's counters in this process."""
        with self._metrics_lock:
            return StoreMetrics(**self._metrics.as_dict())  # type: ignore[arg-type]

    def _count(self, **deltas: float) -> None:
        with self._metrics_lock:
            for name, delta in deltas.items():
                setattr(self._metrics, name, getattr(self._metrics, name) + delta)

    def close(self) -> None:
        """Close the connector's client and forget this store in this process."""
        _unregister(self)
        self.connector.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.name!r}, {self.connector!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_or_create_store, (self._config,))


def _where_from(connector: Any, key: str) -> str:
    """What the connector knows of where a missing key lived (node-local stores)."""
    describe = getattr(connector, "describe_key", None)
    return str(describe(key)) if callable(describe) else ""


def _read_secret(variable: str) -> bytes:
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(
            f"This store signs its objects with the secret in the environment variable "
            f"{variable!r}, which is not set in this process. Set it (the same value) in "
            "every process that uses the store."
        )
    return value.encode()


def _cacheable(connector: Any) -> bool:
    # Local payloads are already in memory and file/shm reads map the page cache:
    # caching helps only backends behind a network.
    return bool(getattr(connector, "cacheable", True))


# -- per-process registry ------------------------------------------------------------

_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


def fingerprint(config: dict[str, Any]) -> str:
    """A stable identity of a store config (name, connector and codecs)."""
    return json.dumps(config, sort_keys=True, default=_describe_callable)


def _describe_callable(value: Any) -> str:
    return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"


def _register(store: Store) -> None:
    with _STORES_LOCK:
        _STORES.setdefault(store.fingerprint, store)


def _unregister(store: Store) -> None:
    with _STORES_LOCK:
        if _STORES.get(store.fingerprint) is store:
            del _STORES[store.fingerprint]


def get_or_create_store(config: dict[str, Any], fp: str | None = None) -> Store:
    """This process's store for ``config``: reused if already built, else created."""
    fp = fp or fingerprint(config)
    store = _STORES.get(fp)
    if store is not None:
        return store
    with _STORES_LOCK:
        store = _STORES.get(fp)
        if store is None:
            try:
                options = {k: config[k] for k in ("serializer", "deserializer", "cache_size")}
                options["secret_env"] = config.get("secret_env")
                store = Store(
                    config["name"],
                    connector_from_config(config["connector"]),
                    register=False,
                    **options,
                )
            except KeyError as exc:
                raise ConfigError(f"Store config lacks the key {exc.args[0]!r}.") from None
            _STORES[fp] = store
    return store


def registered_stores() -> list[Store]:
    """The stores this process has built or registered.

    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("registry-demo", LocalConnector())
    >>> store in registered_stores()
    True
    """
    with _STORES_LOCK:
        return list(_STORES.values())


def clear_registry(close: bool = True) -> None:
    """Forget (and by default close) every registered store of this process.

    Workers rebuild a store from a proxy's config once per process; tests that change a
    store's location call this to start afresh.

    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("clear-demo", LocalConnector())
    >>> clear_registry(close=False)
    >>> store in registered_stores()
    False
    """
    with _STORES_LOCK:
        stores = list(_STORES.values())
        _STORES.clear()
    if close:
        for store in stores:
            store.connector.close()
