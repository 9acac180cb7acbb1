"""Store: a serializer, a cache and a connector behind put/get/proxy.

A store is rebuilt in any process from its config (``Store.from_config``), once per
process, through the registry (``pxexec.store.registry``); workers never receive a
live store, only its config inside each proxy's factory.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pxexec.codec.frames import (
    CHECKED_FRAME,
    DigestsPending,
    copy_digesting,
    fill_digests,
    payload_size,
    with_digests,
)
from pxexec.codec.integrity import HAVE_XXHASH, defer_digests
from pxexec.codec.serialize import (
    Deserializer,
    Serializer,
    deserialize,
    deserialize_views,
    ndarray_header,
    serialize,
)
from pxexec.codec.signing import FRAME_SIZE, Signer
from pxexec.connectors.base import (
    AllocatesInPlace,
    ChoosesKeys,
    IdentifiesContent,
    Replaces,
    RoutesObjects,
    flag,
    require,
)
from pxexec.errors import ConfigError, MissingKeyError, SignatureError
from pxexec.forking import renew_locks_after_fork, restart_after_fork
from pxexec.proxy import Proxy, ProxyInfo
from pxexec.recent import Recent
from pxexec.store.checked import CheckedPayloads
from pxexec.store.evictions import FailedEvictions
from pxexec.store.factory import StoreFactory
from pxexec.store.leases import forget as forget_leases
from pxexec.store.registry import fingerprint, get_or_create_store, unregister
from pxexec.store.registry import register as register_store

__all__ = ["Store", "StoreMetrics"]

if TYPE_CHECKING:
    from pxexec.connectors.base import Connector
    from pxexec.store.ownership import OwnedProxy

T = TypeVar("T")

log = logging.getLogger("pxexec")

_MISSING: Any = object()
#: a failed eviction is retried by the next eviction at least this many seconds later
RETRY_AFTER = 1.0
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
    #: evictions that raised (each is logged and retried; see pxexec.store.evictions)
    evict_failures: int = 0
    evict_retries: int = 0
    evictions_given_up: int = 0
    bytes_put: int = 0
    bytes_got: int = 0
    put_seconds: float = 0.0
    get_seconds: float = 0.0
    #: evictions that raised (each attempt counts); their keys are retried later
    failed_evictions: int = 0
    #: keys whose eviction failed and waits for a retry (``Store.retry_evictions``)
    deferred_evictions: int = 0

    def as_dict(self) -> dict[str, float]:
        """The counters as a plain dict."""
        return asdict(self)


#: payloads from this size are put into allocated space, hashed while copied (below it,
#: the allocation's extra index write costs more than the second pass over the data)
FUSED_PUT = 16 << 20


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
        connector: Connector,
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
        self.connector: Connector = connector
        self.serializer: Serializer = serializer or serialize
        self.deserializer: Deserializer = deserializer or deserialize
        self.cache_size = cache_size
        self.secret_env = secret_env
        self._signer = Signer(_read_secret(secret_env)) if secret_env else None
        self._cache: Recent[str, memoryview] | None = (
            Recent(cache_size) if cache_size and _cacheable(connector) else None)
        self._routes = isinstance(connector, RoutesObjects)
        #: large puts go into allocated space, their digests computed while copying
        self._builds_in_place = (isinstance(connector, AllocatesInPlace) and not self._routes
                                 and serializer is None and secret_env is None
                                 and HAVE_XXHASH)
        #: reads name the stored bytes: each payload's digests are verified once here
        self._identifies = isinstance(connector, IdentifiesContent)
        self._checked = CheckedPayloads()
        #: decodes buffers: zero-copy read-only views where the connector's are immutable
        self._decode: Deserializer = (
            deserialize_views
            if deserializer is None and flag(connector, "readonly_views")
            else self.deserializer
        )
        #: a connector whose keys say which backend's views are read-only (MultiConnector)
        views_for = getattr(connector, "readonly_views_for", None)
        self._views_for: Callable[[str], bool] | None = (
            views_for if deserializer is None and callable(views_for) else None)
        #: arrays handed out by ``empty`` and not sealed yet: data address -> allocation
        self._building: dict[int, tuple[str, int, int, Any, DigestsPending | None]] = {}
        self._metrics = StoreMetrics()
        self._metrics_lock = threading.Lock()
        #: the newest version of each replaced object this process wrote or read:
        #: an older one read later is a rollback (objects never replaced: not kept)
        self._versions: dict[str, int] = {}
        renew_locks_after_fork(self, "_metrics_lock")
        renew_locks_after_fork(self._checked, "_lock")
        if self._cache is not None:
            renew_locks_after_fork(self._cache, "_lock")
        self._deferred: set[str] = set()  # keys whose eviction failed
        self._retry_at = 0.0
        restart_after_fork(self, "_forget_deferred")  # a child leaves them to the parent
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
            register_store(self)

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
        if self._building and self._is_building(obj):
            return self.seal(obj)
        start = time.perf_counter()
        if self._builds_in_place:
            with defer_digests():  # room for them: hashed while copied, in one pass
                frames = self.serializer(obj)
        else:
            frames = self.serializer(obj)
        route = {"obj_type": type(obj), "tags": tuple(tags)} if self._routes else {}
        if isinstance(frames, DigestsPending) and payload_size(frames) < FUSED_PUT:
            frames = with_digests(frames)
        if isinstance(frames, DigestsPending):
            key = self._put_digesting(frames)
        elif self._signer is not None:
            key, frames = self._put_signed(frames, route)
        elif self._routes:
            key = self.connector.put(frames, **route)
        else:
            key = self.connector.put(frames)
        self._count(puts=1, bytes_put=payload_size(frames), put_seconds=time.perf_counter() - start)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("pxexec: stored %s (a %s, %d bytes) in store %r", key,
                      type(obj).__qualname__, payload_size(frames), self.name)
        return key

    def _put_digesting(self, frames: DigestsPending) -> str:
        """Write ``frames`` into space the connector allocates, digesting as it copies."""
        allocating: Any = self.connector
        key, buffer = allocating.allocate(payload_size(frames))
        try:
            copy_digesting(frames, memoryview(buffer).cast("B"))
            allocating.seal(key)
        finally:
            del buffer  # unsealed: its space goes back
        object_id = getattr(self.connector, "object_id", None) if self._identifies else None
        try:
            ident = object_id(str(key)) if callable(object_id) else None
        except Exception:  # only a saving: the object is stored, a read will verify it
            ident = None
        if ident is not None:
            # this process hashed these bytes as they landed: like a first read here,
            # that verified them (readers in other processes still check the digests)
            self._checked.remember(str(key), ident)
        return str(key)

    def _put_signed(self, frames: Any, route: dict[str, Any]) -> tuple[str, Any]:
        """Write a signed object, binding its key when the connector lets one choose it."""
        assert self._signer is not None
        reserve = self.connector.new_key if isinstance(self.connector, ChoosesKeys) else None
        key = reserve(FRAME_SIZE + payload_size(frames), **route) if callable(reserve) else None
        if key is None:  # the connector picks the key while writing: sign without it
            signed = [self._signer.sign(frames, store=self.name, key="", version=1,
                                        bound=False), *frames]
            put_key: str = self.connector.put(signed, **route)
            return put_key, signed
        signed = [self._signer.sign(frames, store=self.name, key=key, version=1), *frames]
        require(self.connector, ChoosesKeys, "write under a chosen key").put_at(key, signed)
        return key, signed
    def empty(self, shape: int | Sequence[int], dtype: Any = "float64") -> Any:
        """A new writable numpy array that already lives in the store.

        Fill it (``np.add(a, b, out=arr)``), then ``seal(arr)`` or ``put(arr)``: the
        object is published without a copy. Connectors that cannot allocate in place
        (and arrays of at most 64 kB) get a plain ``np.empty``, which ``put`` copies.
        An array dropped unsealed gives its space back.

        >>> import tempfile
        >>> from pxexec.connectors.node import NodeConnector
        >>> store = Store("empty-demo", NodeConnector(tempfile.mkdtemp(), chunk=1 << 20))
        >>> arr = store.empty((100, 1000))
        >>> arr[:] = 2.0
        >>> key = store.seal(arr)
        >>> float(store.get(key).sum())
        200000.0
        >>> store.evict(key)
        """
        import numpy as np

        dt = np.dtype(dtype)
        dims = (int(shape),) if isinstance(shape, int) else tuple(int(n) for n in shape)
        nbytes = dt.itemsize * int(np.prod(dims, dtype=np.int64))
        allocate = self.connector.allocate if isinstance(self.connector, AllocatesInPlace) else None
        if allocate is None or self._routes or nbytes <= CHECKED_FRAME or dt.hasobject:
            return np.empty(dims, dtype=dt)
        header, room = ndarray_header(dims, dt, digest_room=True)
        sig = FRAME_SIZE if self._signer is not None else 0
        key, buffer = allocate(sig + len(header) + nbytes)
        buffer[sig : sig + len(header)] = np.frombuffer(header, dtype=np.uint8)
        arr = buffer[sig + len(header) :].view(dt).reshape(dims)
        address = _address(arr)
        building = self._building

        def forget(ref: Any) -> None:  # dropped unsealed: the connector frees the space
            if building.get(address, (None, 0, 0, None, None))[3] is ref:
                building.pop(address, None)

        building[address] = (key, sig, len(header), weakref.ref(buffer, forget), room)
        return arr

    def _is_building(self, obj: Any) -> bool:
        entry = self._building.get(_address(obj))
        if entry is None:
            return False
        buffer = entry[3]()
        return (buffer is not None and getattr(obj, "flags", None) is not None
                and obj.flags.c_contiguous and obj.nbytes == buffer.nbytes - entry[1] - entry[2])

    def seal(self, arr: Any) -> str:
        """Publish an array from ``empty`` (no copy); return its key. Others are put."""
        entry = self._building.pop(_address(arr), None)
        if entry is None:
            return self.put(arr)
        key, sig, header_len, ref, room = entry
        buffer = ref()
        if buffer is None:  # pragma: no cover - arr keeps its buffer alive
            raise ValueError("This array's store allocation is gone; put() a copy of it.")
        if arr.nbytes != buffer.nbytes - sig - header_len or not arr.flags.c_contiguous:
            self._building[_address(arr)] = entry
            raise ValueError(
                "Store.seal takes the whole array that Store.empty returned (same shape, "
                "C order); seal that array, or put() a copy of this one."
            )
        start = time.perf_counter()
        if room is not None:  # the data's XXH3 digest, now that it is written
            fill_digests(buffer[sig : sig + header_len], room, [buffer[sig + header_len :]])
        if self._signer is not None:
            body = buffer[sig:]
            bound = _binds_keys(self.connector, key)
            buffer[:sig] = memoryview(self._signer.sign(
                [body], store=self.name, key=key if bound else "", version=1, bound=bound))
        require(self.connector, AllocatesInPlace, "seal objects").seal(key)
        arr.flags.writeable = False  # sealed objects are immutable
        self._count(puts=1, bytes_put=buffer.nbytes, put_seconds=time.perf_counter() - start)
        return key

    def put_batch(self, objs: Iterable[Any]) -> list[str]:
        """Store several objects with one batched backend call where it has one."""
        start = time.perf_counter()
        if self._signer is not None:  # each key is chosen first and signed with it
            written = [self._put_signed(self.serializer(obj), {}) for obj in objs]
            self._count(puts=len(written), bytes_put=sum(payload_size(p) for _, p in written),
                        put_seconds=time.perf_counter() - start)
            return [key for key, _ in written]
        payloads = [self.serializer(obj) for obj in objs]
        keys: list[str] = self.connector.put_batch(payloads)
        log.debug("pxexec: stored %s in store %r", keys, self.name)
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
        fetched = self._fetch(key, missing_ok=default is not _MISSING)
        if fetched is None:
            return default
        buffer, hit, ident, checked = fetched
        decode = self._decoder(key)
        obj = decode(buffer) if ident is None else self._checked.decode(
            key, ident, decode, buffer, checked=checked)
        self._count(
            gets=1,
            cache_hits=int(hit),
            bytes_got=memoryview(buffer).nbytes,
            get_seconds=time.perf_counter() - start,
        )
        return obj

    def _fetch(self, key: str, missing_ok: bool, cache: bool = True
               ) -> tuple[Any, bool, Hashable | None, bool] | None:
        """``key``'s verified buffer, whether the cache had it, the connector's id of
        the stored bytes (``IdentifiesContent``, else None) and whether the connector
        verified their digests itself; None if missing and ``missing_ok`` (else
        MissingKeyError). ``cache``: remember what was fetched."""
        buffer = self._cache.get(key) if self._cache is not None else None
        if buffer is not None:
            return buffer, True, None, False
        ident: Hashable | None = None
        checked = False
        if self._identifies:
            got = self.connector.get_identified(key)  # type: ignore[attr-defined]
            buffer, ident, checked = (None, None, False) if got is None else got
        else:
            buffer = self.connector.get(key)
        if buffer is None:
            self._count(misses=1)
            if missing_ok:
                return None
            raise MissingKeyError(key, self.name, self._missing_detail(key))
        buffer = self._verify(key, buffer)
        return (self._remember(key, buffer) if cache else buffer), False, ident, checked

    def _decoder(self, key: str) -> Deserializer:
        """How to decode ``key``'s buffer: zero-copy views where its backend's are immutable."""
        if self._views_for is not None and self._views_for(key):
            return deserialize_views
        return self._decode

    def get_batch(self, keys: Sequence[str], default: Any = _MISSING) -> list[Any]:
        """The objects under ``keys``, fetched in one batched backend call if possible."""
        buffers = self.connector.get_batch(list(keys))
        result = []
        for key, buffer in zip(keys, buffers):
            if buffer is None:
                if default is _MISSING:
                    raise MissingKeyError(key, self.name, self._missing_detail(key))
                result.append(default)
                continue
            result.append(self._decoder(key)(self._remember(key, self._verify(key, buffer))))
        self._count(gets=len(result), bytes_got=sum(memoryview(b).nbytes for b in buffers if b))
        return result

    def _missing_detail(self, key: str) -> str:
        """Why ``key`` may be missing (the connector's word: an evicting Redis, the
        host a node-local object lived on), or ""."""
        detail = getattr(self.connector, "missing_detail", None)
        said = [str(detail(key))] if callable(detail) else []
        said.append(_where_from(self.connector, key))
        return " ".join(d for d in said if d)

    def _next_version(self, key: str) -> int:
        """One more than the version under ``key`` (as stored, or as last seen here)."""
        assert self._signer is not None
        current = 1
        buffer = self.connector.get(key)
        if buffer is not None:
            verified = self._signer.verify(buffer, store=self.name, key=key,
                                           unbound_ok=not _binds_keys(self.connector, key))
            current = verified[1] if verified is not None else 1
        with self._metrics_lock:
            return max(current, self._versions.get(key, 1)) + 1

    def _verify(self, key: str, buffer: Any) -> Any:
        """The payload behind a verified signature; nothing is decoded before this."""
        signer = self._signer
        if signer is None:
            return buffer
        if not signer.is_signed(buffer):
            why = ("it was signed by an older pxexec whose signatures do not bind the key "
                   "and store; store it again" if signer.old_format(buffer) else
                   "it was written by a writer without the secret")
            raise SignatureError(
                f"Object {key!r} in store {self.name!r} is not signed, but this store "
                f"requires signatures: {why}. Nothing was deserialized."
            )
        verified = signer.verify(buffer, store=self.name, key=key,
                                 unbound_ok=not _binds_keys(self.connector, key))
        if verified is None:
            raise SignatureError(
                f"Object {key!r} in store {self.name!r} failed signature verification: "
                "it was written or changed by someone without this store's secret, or "
                "copied from another key or another store. Nothing was deserialized."
            )
        payload, version = verified
        with self._metrics_lock:
            latest = self._versions.get(key, 1)
            if version > latest:
                self._versions[key] = version
        if version < latest:
            raise SignatureError(
                f"Object {key!r} in store {self.name!r} is version {version}, older than "
                f"version {latest} this process already wrote or read: an old copy was "
                "restored (a rollback). Nothing was deserialized."
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
        """Overwrite the object under ``key`` (readers that resolve later see it).

        Another process that cached the old bytes under ``key`` (a Redis store's LRU)
        may still serve them; ``pxexec.store.ownership.update`` stores a new version under a
        new key instead, which no cache can confuse with the old one.
        """
        frames = self.serializer(obj)
        if self._signer is not None:
            version = self._next_version(key)
            bound = _binds_keys(self.connector, key)
            frames = [self._signer.sign(frames, store=self.name, key=key if bound else "",
                                        version=version, bound=bound), *frames]
            with self._metrics_lock:
                self._versions[key] = version
        require(self.connector, Replaces, "replace objects").replace(key, frames)
        if self._cache is not None:
            self._cache.pop(key)
        self._count(puts=1, bytes_put=payload_size(frames))

    def copy(self, key: str, *, obj_type: type[Any] | None = None,
             tags: Iterable[str] = ()) -> str:
        """Store a copy of the object under ``key`` (as bytes, not decoded); return the
        new key.

        The copy goes the way of any put: counted in ``metrics``, routed by
        ``obj_type`` and ``tags`` where the connector routes objects, signed for its
        own key; the original is read through the cache and verified first.

        >>> from pxexec.connectors.local import LocalConnector
        >>> store = Store("copy-demo", LocalConnector())
        >>> key = store.put([1, 2])
        >>> other = store.copy(key)
        >>> other != key, store.get(other), store.metrics.puts
        (True, [1, 2], 2)
        """
        start = time.perf_counter()
        fetched = self._fetch(key, missing_ok=False, cache=False)
        assert fetched is not None  # a missing key raised
        buffer, hit, _, _ = fetched
        self._count(gets=1, cache_hits=int(hit), bytes_got=memoryview(buffer).nbytes)
        frames = [buffer]
        route = {"obj_type": obj_type, "tags": tuple(tags)} if self._routes else {}
        if self._signer is not None:
            new_key, frames = self._put_signed(frames, route)
        else:
            new_key = self.connector.put(frames, **route)
        self._count(puts=1, bytes_put=payload_size(frames),
                    put_seconds=time.perf_counter() - start)
        return new_key

    def exists(self, key: str) -> bool:
        """Whether ``key`` is in the store."""
        return bool(self.connector.exists(key))

    def evict(self, key: str | Proxy[Any]) -> None:
        """Remove an object, named by its key or by a proxy of it (no error if gone).

        An owned proxy is freed as its owner (``owner.free()``: the ownership rules
        apply); a borrow cannot evict what it borrows.

        >>> from pxexec.connectors.local import LocalConnector
        >>> store = Store("evict-demo", LocalConnector())
        >>> data = store.proxy([1, 2, 3])
        >>> store.evict(data)                       # same as store.evict(<its key>)
        >>> store.exists(data.__px_factory__.key)
        False
        """
        if not isinstance(key, str):
            named = self._key_of(key)
            if named is None:
                return
            key = named
        if self._cache is not None:
            self._cache.pop(key)
        forget_leases(self, [key])
        self._versions.pop(key, None)
        self.connector.evict(key)
        self._count(evictions=1)
        log.debug("pxexec: evicted %s from store %r", key, self.name)

    def _key_of(self, proxy: Any) -> str | None:
        """The key of a proxy of this store (None: an owner, freed instead)."""
        from pxexec.store.ownership import OwnedProxy, OwnershipError, RefProxy

        if not isinstance(proxy, Proxy):
            raise TypeError(f"Store.evict() takes a key or a proxy, not a "
                            f"{type(proxy).__name__}.")
        if isinstance(proxy, RefProxy):
            raise OwnershipError("A borrow cannot evict what it borrows: let the borrow "
                                 "end, then free the owner (owner.free()).")
        if isinstance(proxy, OwnedProxy):
            OwnedProxy.free(proxy)
            return None
        factory = proxy.__px_factory__
        key = getattr(factory, "key", None)
        if not isinstance(key, str):
            raise TypeError("This proxy does not come from a store (its factory has no "
                            "key): there is nothing to evict.")
        owner_store = getattr(factory, "store_config", {}).get("name")
        if owner_store is not None and owner_store != self.name:
            raise MissingKeyError(key, self.name, f"The proxy belongs to store "
                                  f"{owner_store!r}: evict it through that store.")
        return key

    def evict_batch(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if self._cache is not None:
            for key in keys:
                self._cache.pop(key)
        forget_leases(self, keys)
        self.connector.evict_batch(keys)
        self._count(evictions=len(keys))
        log.debug("pxexec: evicted %s from store %r", keys, self.name)

    def evict_or_defer(self, keys: Iterable[str]) -> bool:
        """Evict ``keys`` and never raise; on failure log it, count it and retry later.

        Freeing paths (owners dropped, completed tasks) use this: an eviction that
        fails (the backend is down, a key on another host's route) is never silently
        lost. The batch is logged and counted in ``metrics.failed_evictions``; the other
        keys of the batch are still freed one by one; each key that fails is counted in
        ``metrics.evict_failures`` and retried in the background after 0.5, 1, 2, 4, 8
        and 16 s (``pxexec.store.evictions``; one that can never succeed from this host is
        given up, ``metrics.evictions_given_up``), and also by the next eviction at
        least ``RETRY_AFTER`` seconds later, by ``retry_evictions()`` and by ``close()``
        (``metrics.deferred_evictions``). Returns whether everything asked (and retried)
        was evicted.
        """
        keys = list(keys)
        with self._metrics_lock:
            if self._deferred and time.monotonic() >= self._retry_at:
                keys.extend(self._deferred - set(keys))
                self._deferred.clear()
                self._metrics.deferred_evictions = 0
        if not keys:
            return True
        try:
            self.evict_batch(keys)
        except Exception as exc:
            log.warning("pxexec: could not evict %d object(s) from %r (%s: %s); will retry.",
                        len(keys), self, type(exc).__name__, exc)
            self._count(failed_evictions=1)
        else:
            return True
        failed: list[str] = []
        for key in keys:  # find which keys fail: the others are freed now
            try:
                self.connector.evict(key)
            except Exception as exc:
                failed.append(key)
                if self.failed_evictions.failed(key, exc):
                    continue  # given up: never retried
                with self._metrics_lock:
                    self._deferred.add(key)
            else:
                self._count(evictions=1)
        with self._metrics_lock:
            self._metrics.deferred_evictions = len(self._deferred)
            self._retry_at = time.monotonic() + RETRY_AFTER
        return not failed

    def _forget_deferred(self) -> None:
        """In a forked child (no lock taken: the child has one thread): the evictions
        that failed are the parent's to retry."""
        self._deferred = set()
        self._retry_at = 0.0
        self._metrics.deferred_evictions = 0

    def _evicted_on_retry(self, key: str) -> None:
        """A background retry freed ``key``: it no longer waits for one."""
        with self._metrics_lock:
            self._deferred.discard(key)
            self._metrics.deferred_evictions = len(self._deferred)

    def retry_evictions(self) -> bool:
        """Retry the evictions that failed earlier now; True if none is left."""
        with self._metrics_lock:
            self._retry_at = 0.0
        return self.evict_or_defer(())

    def free(self, keys: Iterable[str]) -> None:
        """Evict ``keys`` and never raise (``evict_or_defer``): what fails is logged,
        counted in ``metrics.evict_failures`` and retried in the background
        (``pxexec.store.evictions``).

        >>> from pxexec.connectors.local import LocalConnector
        >>> store = Store("free-demo", LocalConnector())
        >>> store.free([store.put(b"x")]); store.metrics.evictions
        1
        """
        self.evict_or_defer(keys)

    # -- proxies ----------------------------------------------------------------------

    def proxy(
        self, obj: T, *, populate_target: bool = False, tags: Iterable[str] = ()
    ) -> Proxy[T]:
        """Store ``obj`` and return a lazy proxy that resolves to it anywhere.

        What the proxy knows of ``obj`` is read before anything is stored, and if
        making the proxy fails after the put, the object is evicted again: nothing
        stays stored unless its proxy is handed out.
        """
        info = ProxyInfo.of(obj)
        key = self.put(obj, tags=tags)
        return self._guarded_proxy(key, obj, info, populate_target)

    def proxy_batch(self, objs: Sequence[T], *, populate_target: bool = False) -> list[Proxy[T]]:
        """Store several objects (batched) and return a proxy for each."""
        infos = [ProxyInfo.of(o) for o in objs]
        keys = self.put_batch(objs)
        try:
            return [self._guarded_proxy(k, o, i, populate_target)
                    for k, o, i in zip(keys, objs, infos)]
        except BaseException:
            self.evict_or_defer(keys)
            raise

    def _guarded_proxy(self, key: str, obj: T, info: ProxyInfo, populate: bool) -> Proxy[T]:
        try:
            return self._make_proxy(key, obj, populate, info)
        except BaseException:
            self.evict_or_defer([key])
            raise

    def owned_proxy(self, obj: T) -> OwnedProxy[T]:
        """Store ``obj`` and return its owner: freed when dropped (see pxexec.store.ownership)."""
        from pxexec.store.ownership import owned

        return owned(self, obj)

    def proxy_from_key(self, key: str) -> Proxy[Any]:
        """A proxy of an object already in the store (its metadata comes on resolve)."""
        return Proxy(StoreFactory(key, self._config, store=self), info=ProxyInfo(token=key))

    def _make_proxy(self, key: str, obj: T, populate_target: bool,
                    info: ProxyInfo | None = None) -> Proxy[T]:
        info = ProxyInfo.of(obj) if info is None else info
        info = ProxyInfo(info.cls, info.hash, info.hashable, info.nbytes, key)
        proxy: Proxy[T] = Proxy(StoreFactory(key, self._config, store=self), info=info)
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
        if self._deferred:
            self.retry_evictions()
        unregister(self)
        self.connector.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.name!r}, {self.connector!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (get_or_create_store, (self._config,))


def _address(obj: Any) -> int:
    """The data address of a numpy array (0 for anything else)."""
    interface = getattr(obj, "__array_interface__", None)
    return int(interface["data"][0]) if isinstance(interface, dict) else 0


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


def _binds_keys(connector: Any, key: str) -> bool:
    """Whether signatures of ``key`` in ``connector`` bind the key (it can choose keys)."""
    binds = getattr(connector, "binds_keys", None)
    if callable(binds):
        return bool(binds(key))
    return isinstance(connector, ChoosesKeys)


def _cacheable(connector: Any) -> bool:
    # Local payloads are already in memory and file/shm reads map the page cache:
    # caching helps only backends behind a network.
    return flag(connector, "cacheable")
