"""Owned and borrowed proxies: stored objects freed automatically, exactly once.

- ``OwnedProxy[T]`` owns its stored object and frees it when dropped (garbage
  collected, ``del``, ``free()``, context-manager exit, or interpreter exit).
- ``borrow(owner) -> RefProxy[T]``: a shared, read-only borrow; any number may live.
- ``mut_borrow(owner) -> RefMutProxy[T]``: an exclusive borrow; ``update(ref)`` writes
  the changed target back under the same key.
- Sending an owner to a StoreExecutor task *moves* it: the local owner becomes
  unusable, and the object is freed when the task's future completes. Sending a
  borrow holds it until the future completes; the owner stays usable.

Rules are checked at run time: no mutable borrow while any other borrow lives, no
use of a moved or freed owner, no freeing or moving an owner while borrowed (a
borrow keeps its owner alive, so it cannot outlive it).

Ownership speaks to the rest of pxexec only through the Store's API (put, copy,
evict) and the proxy module's small API (rebind, share_target, keep, kept); leases
are held through ``pxexec.store.leases`` and end when the Store evicts an object.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, TypeVar

from pxexec.errors import OwnershipError
from pxexec.forking import on_fork_child
from pxexec.proxy import (
    Proxy,
    ProxyInfo,
    extract,
    get_factory,
    get_info,
    keep,
    kept,
    rebind,
    set_owner_lookup,
    share_target,
)
from pxexec.store.factory import StoreFactory
from pxexec.store.leases import hold as hold_leases

log = logging.getLogger("pxexec")

__all__ = ["OwnedProxy", "OwnershipError", "RefMutProxy", "RefProxy", "borrow", "clone",
           "into_owned", "keep_alive", "mut_borrow", "release", "update"]

T = TypeVar("T")


class _Dead:
    """The factory of a moved or freed owner: any use raises a clear error."""

    def __init__(self, key: str, why: str) -> None:
        self.key, self.why = key, why

    def __call__(self) -> Any:
        raise OwnershipError(
            f"This OwnedProxy of {self.key!r} was {self.why}; it can no longer be used. "
            + ("Use the proxy the task returned, or clone() before sending it."
               if self.why.startswith("moved") else "Keep the owner alive while you use it.")
        )

    def describe(self) -> str:
        return f"key={self.key!r} ({self.why})"


class _State:
    """Book-keeping shared by an owner and its borrows."""

    __slots__ = ("finalizer", "key", "lock", "mut", "pid", "shared", "status", "store")

    def __init__(self, store: Any, key: str) -> None:
        self.store = store
        self.key = key
        self.pid = os.getpid()  # ownership does not cross a fork: only this process frees
        self.shared = 0
        self.mut = False
        self.status = "live"  # live | moved | freed
        self.lock = threading.Lock()
        self.finalizer: Any = None


def _drop(state: _State) -> None:
    """Free an owner's object: runs once, on free(), garbage collection or exit."""
    state.status = "freed" if state.status == "live" else state.status
    if state.pid != os.getpid():  # a forked child's copy: the parent still owns it
        return
    # evicting ends the lease too (the Store forgets it): one forget per key
    state.store.evict_or_defer([state.key])  # a failure is logged, counted, retried


# One owner per key in a process: converting the same result twice (Dask returns a
# new object on every Future.result()) gives back the same owner.
_OWNERS: weakref.WeakValueDictionary[str, OwnedProxy[Any]] = weakref.WeakValueDictionary()
_OWNERS_LOCK = threading.Lock()


def _renew_owners_lock() -> None:
    global _OWNERS_LOCK
    _OWNERS_LOCK = threading.Lock()


class OwnedProxy(Proxy[T]):
    """A proxy that owns its stored object and frees it when dropped.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy({"a": 1})
    >>> key = owner.__px_factory__.key
    >>> owner["a"], store.exists(key)
    (1, True)
    >>> del owner                                   # the last reference: freed
    >>> store.exists(key)
    False
    """

    __slots__ = ("__px_own__",)

    def __init__(self, factory: StoreFactory, *, info: ProxyInfo | None = None) -> None:
        super().__init__(factory, info=info)
        if not isinstance(factory, StoreFactory):
            raise TypeError("An OwnedProxy needs a StoreFactory (a store and a key).")
        state = _State(factory.store(), factory.key)
        state.finalizer = weakref.finalize(self, _drop, state)
        object.__setattr__(self, "__px_own__", state)

    def free(self) -> None:
        """Free the stored object now (no error if already freed).

        >>> from pxexec import Store
        >>> from pxexec.connectors.local import LocalConnector
        >>> store = Store("own-demo", LocalConnector())
        >>> owner = store.owned_proxy("text")
        >>> owner.free()
        >>> store.exists(owner.__px_factory__.key)
        False
        """
        state: _State = self.__px_own__
        with state.lock:
            if state.shared or state.mut:
                raise OwnershipError(
                    f"Cannot free {state.key!r}: {state.shared + state.mut} borrow(s) still "
                    "live. Release them first (or let their futures complete)."
                )
            if state.status != "live":
                return
        state.finalizer()
        _kill(self, "freed")

    def __enter__(self) -> OwnedProxy[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # Ownership stays in this process: a pickled owner travels as a plain proxy.
        return plain(self).__reduce_ex__(protocol)

    def __copy__(self) -> Proxy[T]:
        return plain(self)  # a copy never owns: one owner per object


class RefProxy(Proxy[T]):
    """A shared borrow of an OwnedProxy (keeps its owner alive); made by ``borrow``.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> ref = borrow(store.owned_proxy([3, 4]))
    >>> isinstance(ref, RefProxy), ref[1]
    (True, 4)
    """

    __slots__ = ("__px_ref__",)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return plain(self).__reduce_ex__(protocol)

    def __copy__(self) -> Proxy[T]:
        return plain(self)


def plain(proxy: Proxy[T]) -> Proxy[T]:
    """A plain (non-owning, non-borrowing) proxy of the same stored object."""
    return Proxy(get_factory(proxy), info=get_info(proxy))


class RefMutProxy(RefProxy[T]):
    """An exclusive borrow of an OwnedProxy; ``update(ref)`` writes changes back.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy([1])
    >>> ref = mut_borrow(owner)
    >>> ref.append(2)
    >>> update(ref)
    >>> release(ref)
    >>> store.get(owner.__px_factory__.key)
    [1, 2]
    """

    __slots__ = ()


class _Borrow:
    __slots__ = ("finalizer", "owner", "released")

    def __init__(self, owner: OwnedProxy[Any]) -> None:
        self.owner = owner
        self.released = False
        self.finalizer: Any = None


def _kill(proxy: Proxy[Any], why: str) -> None:
    key = getattr(get_factory(proxy), "key", "?")
    rebind(proxy, _Dead(key, why), drop_target=True)


def _live(owner: OwnedProxy[Any]) -> _State:
    if not isinstance(owner, OwnedProxy):
        raise TypeError(f"Expected an OwnedProxy, got {type(owner).__name__}.")
    state: _State = owner.__px_own__
    if state.status != "live":
        raise OwnershipError(f"The OwnedProxy of {state.key!r} was {state.status}.")
    return state


def _release_borrow(state: _State, mutable: bool) -> None:
    with state.lock:
        if mutable:
            state.mut = False
        else:
            state.shared -= 1


def _make_ref(owner: OwnedProxy[T], kind: type[RefProxy[Any]], mutable: bool) -> Any:
    state = _live(owner)
    with state.lock:
        if state.mut:
            raise OwnershipError(f"{state.key!r} is mutably borrowed; release that borrow first.")
        if mutable and state.shared:
            raise OwnershipError(
                f"Cannot mutably borrow {state.key!r}: {state.shared} shared borrow(s) live."
            )
        if mutable:
            state.mut = True
        else:
            state.shared += 1
    ref = kind(get_factory(owner), info=get_info(owner))
    share_target(owner, ref)  # an already fetched target is shared
    borrow = _Borrow(owner)
    borrow.finalizer = weakref.finalize(ref, _release_borrow, state, mutable)
    object.__setattr__(ref, "__px_ref__", borrow)
    return ref


def borrow(owner: OwnedProxy[T]) -> RefProxy[T]:
    """A shared borrow of ``owner``: read it anywhere, any number at a time.

    Passed to ``StoreExecutor.submit``, the borrow lasts until the task's future
    completes; meanwhile the owner cannot be freed or mutably borrowed.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy([1, 2, 3])
    >>> first, second = borrow(owner), borrow(owner)
    >>> sum(first) + len(second)
    9
    """
    ref: RefProxy[T] = _make_ref(owner, RefProxy, False)
    return ref


def mut_borrow(owner: OwnedProxy[T]) -> RefMutProxy[T]:
    """An exclusive borrow of ``owner``: no other borrow may live meanwhile.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy({"n": 1})
    >>> ref = mut_borrow(owner)
    >>> ref["n"] = 2
    >>> update(ref)                                 # write the change back
    >>> release(ref)
    >>> store.get(owner.__px_factory__.key)
    {'n': 2}
    """
    ref: RefMutProxy[T] = _make_ref(owner, RefMutProxy, True)
    return ref


def release(ref: RefProxy[Any]) -> None:
    """End a borrow now (it also ends when the borrow is garbage collected).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy([1])
    >>> ref = borrow(owner)
    >>> release(ref)
    >>> owner.free()                                # no borrow left: allowed
    """
    borrow_state: _Borrow = ref.__px_ref__
    if not borrow_state.released:
        borrow_state.released = True
        borrow_state.finalizer()
        _kill(ref, "released")


def clone(owner: OwnedProxy[T]) -> OwnedProxy[T]:
    """A new owner of a copy of the stored object (copied as bytes, not decoded).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy([1, 2])
    >>> copy = clone(owner)
    >>> copy.__px_factory__.key != owner.__px_factory__.key, list(copy)
    (True, [1, 2])
    """
    state = _live(owner)
    info = get_info(owner)
    key = state.store.copy(state.key, obj_type=info.cls)
    return _own(state.store, key, ProxyInfo(info.cls, info.hash, info.hashable, info.nbytes,
                                            key))


def into_owned(proxy: Proxy[T]) -> OwnedProxy[T]:
    """Take ownership of the object behind a store proxy (one owner per key).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> proxy = store.proxy([1, 2])                 # a plain proxy: nobody frees it
    >>> owner = into_owned(proxy)
    >>> into_owned(proxy) is owner
    True
    >>> owner.free()
    >>> store.exists(proxy.__px_factory__.key)
    False
    """
    if isinstance(proxy, OwnedProxy):
        return proxy
    factory = get_factory(proxy)
    if not isinstance(factory, StoreFactory):
        raise TypeError("into_owned() needs a proxy made by a pxexec Store.")
    with _OWNERS_LOCK:
        owner = _OWNERS.get(factory.key)
        if owner is not None and owner.__px_own__.status == "live":
            return owner
    return _own(factory.store(), factory.key, get_info(proxy))


def _own(store: Any, key: str, info: ProxyInfo) -> OwnedProxy[Any]:
    on_fork_child(_renew_owners_lock)
    owner: OwnedProxy[Any] = OwnedProxy(StoreFactory(key, store.config(), store=store), info=info)
    with _OWNERS_LOCK:
        _OWNERS[key] = owner
    hold_leases(store, [key])
    return owner


def owned(store: Any, obj: T) -> OwnedProxy[T]:
    """Store ``obj`` and return its owner (``Store.owned_proxy``)."""
    info = ProxyInfo.of(obj)  # before any I/O: a failure here stores nothing
    key = store.put(obj)
    try:
        return _own(store, key, ProxyInfo(info.cls, info.hash, info.hashable, info.nbytes, key))
    except BaseException:
        store.evict_or_defer([key])
        raise


def take(owner: OwnedProxy[Any]) -> str:
    """Move ``owner`` out (for sending it to a task): return its key, kill the owner."""
    state = _live(owner)
    with state.lock:
        if state.shared or state.mut:
            raise OwnershipError(
                f"Cannot move {state.key!r} into a task while it is borrowed; release the "
                "borrows or send a borrow instead."
            )
        state.status = "moved"
    state.finalizer.detach()  # the executor frees it when the task completes
    _kill(owner, "moved into a task")
    return state.key


def hold(ref: RefProxy[Any]) -> _Borrow:
    """The borrow a task holds until its future completes (see ``release_held``)."""
    borrow_state: _Borrow = ref.__px_ref__
    if borrow_state.released:
        raise OwnershipError("This borrow was already released.")
    return borrow_state


def release_held(borrow_state: _Borrow) -> None:
    if not borrow_state.released:
        borrow_state.released = True
        borrow_state.finalizer()


def update(proxy: OwnedProxy[Any] | RefMutProxy[Any]) -> None:
    """Write the (changed) target of an owner or a mutable borrow back to its key.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy([1])
    >>> owner.append(5)
    >>> update(owner)
    >>> store.get(owner.__px_factory__.key)
    [1, 5]
    """
    if isinstance(proxy, RefMutProxy):
        state = _live(proxy.__px_ref__.owner)
    elif isinstance(proxy, OwnedProxy):
        state = _live(proxy)
        if state.shared or state.mut:
            raise OwnershipError(f"Cannot update {state.key!r} while it is borrowed.")
    else:
        raise OwnershipError("update() takes an OwnedProxy or a RefMutProxy (a mut_borrow).")
    store = state.store
    target = extract(proxy)
    # A new version goes under a new key: a cache anywhere (a Redis worker's LRU, a
    # mapped file) may still hold the old bytes under the old key, and must never
    # serve them as the new value. The old version is evicted.
    info = ProxyInfo.of(target, token=None)
    key = store.put(target)
    old = state.key
    info = ProxyInfo(info.cls, info.hash, info.hashable, info.nbytes, key)
    factory = StoreFactory(key, store.config(), store=store)
    holders = [proxy] if isinstance(proxy, OwnedProxy) else [proxy, proxy.__px_ref__.owner]
    hold_leases(store, [key])
    with state.lock:
        state.key = key
    for holder in holders:
        rebind(holder, factory, info=info)
    with _OWNERS_LOCK:
        owner = holders[-1]
        if _OWNERS.get(old) is owner:
            del _OWNERS[old]
        _OWNERS[key] = owner
    store.evict_or_defer([old])  # its lease ends with it


def live_owner(key: str) -> OwnedProxy[Any] | None:
    """The live owner of ``key`` in this process, if any."""
    owner = _OWNERS.get(key)
    return owner if owner is not None and owner.__px_own__.status == "live" else None


def own_key(store: Any, key: str) -> OwnedProxy[Any]:
    """The owner of ``key``: the live one of this process, or a new one."""
    return live_owner(key) or _own(store, key, ProxyInfo(token=key))


def keep_alive(holder: Proxy[Any], owner: OwnedProxy[Any]) -> None:
    """Keep ``owner`` (and so its object) alive as long as ``holder`` lives.

    >>> import gc
    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("keep-demo", LocalConnector())
    >>> owner = store.owned_proxy([1, 2])
    >>> key = owner.__px_factory__.key
    >>> holder = plain(owner)
    >>> keep_alive(holder, owner)
    >>> del owner; _ = gc.collect()
    >>> store.exists(key), holder == [1, 2]       # the holder keeps the object alive
    (True, True)
    >>> del holder; _ = gc.collect()
    >>> store.exists(key)
    False
    """
    keep(holder, owner)


def kept_by(holder: Proxy[Any]) -> list[OwnedProxy[Any]]:
    """The owners ``holder`` keeps alive."""
    return [o for o in kept(holder) if isinstance(o, OwnedProxy)]


# A store proxy unpickled in this process keeps the live owner of its key alive.
set_owner_lookup(live_owner)
