"""Crash-safe leases: what this process owns stays alive while it lives.

A process holds the objects it owns (OwnedProxy objects and the inputs
StoreExecutor stored for running tasks). File and shm stores record them under the
process (owner records, see ``pxexec.connectors.owners``): when it dies, even by
SIGKILL, the next pxexec process on the host that opens the store (or ``pxexec
gc``) removes them. At interpreter exit (a normal exit, or Ctrl-C's
KeyboardInterrupt) the process frees what it still holds itself.

With a lease period set on a connector (``ttl`` for Redis, ``lease`` for file and
shm), the holder also renews all of them with one batched call per store every
``lease / 3`` seconds from a background thread; if renewal stops, the objects
expire: every Redis object natively by its key TTL, and held file and shm objects
through the reaper (run by every live keeper, on store start-up, and by ``pxexec
gc``) on any host that shares the directory.

This module is the one place that holds or forgets a lease: ``hold`` when this
process takes charge of an object (StoreExecutor storing a task's input, an
OwnedProxy made or updated, the drop-in Dask Client storing an argument), and
``forget`` when the Store evicts it (``Store.evict``/``evict_batch``: evicting is
what ends a hold, so nobody else forgets a lease of an evicted object) or when its
charge passes to someone else (a Dask result's new owner).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from pxexec.connectors.base import Leases
from pxexec.connectors.owners import process_owner
from pxexec.exit_hooks import at_exit_once
from pxexec.forking import on_fork_child

log = logging.getLogger("pxexec")


__all__ = ["LeaseKeeper", "forget", "hold", "keeper", "lease_of", "reset_keeper",
           "tracks_owners"]


def lease_of(connector: Any) -> float | None:
    """The connector's lease period in seconds (None: objects never expire).

    >>> from pxexec.connectors.local import LocalConnector
    >>> from pxexec.connectors.shm import SharedMemoryConnector
    >>> lease_of(LocalConnector()) is None
    True
    >>> lease_of(SharedMemoryConnector(namespace="lease-demo", lease=30))
    30.0
    """
    value = connector.lease_seconds if isinstance(connector, Leases) else None
    return float(value) if value else None


def tracks_owners(connector: Any) -> bool:
    """Whether the connector records which process holds an object (a lease or
    owner liveness, as file and shm stores do by default).

    >>> from pxexec.connectors.local import LocalConnector
    >>> from pxexec.connectors.shm import SharedMemoryConnector
    >>> tracks_owners(LocalConnector()), tracks_owners(SharedMemoryConnector(namespace="t"))
    (False, True)
    """
    return isinstance(connector, Leases) and (lease_of(connector) is not None
                                              or connector.tracks_owners)


class LeaseKeeper:
    """Holds and renews this process's leases (one per process; see ``keeper()``).

    StoreExecutor and OwnedProxy hold keys here; holding keys of a store without a
    lease costs nothing.

    >>> isinstance(keeper(), LeaseKeeper)
    True
    """

    def __init__(self) -> None:
        self.owner = process_owner()
        self.pid = os.getpid()
        self._held: dict[str, tuple[Any, set[str]]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.renewals = 0
        self.last_renewal_seconds = 0.0

    def hold(self, store: Any, keys: list[str]) -> None:
        """Keep ``keys`` of ``store`` alive while this process lives."""
        if not keys or not tracks_owners(store.connector):
            return
        store.connector.adopt(self.owner, keys)
        at_exit_once(_exit_handler)
        with self._lock:
            entry = self._held.setdefault(store.fingerprint, (store, set()))
            entry[1].update(keys)
            if self._thread is None and lease_of(store.connector) is not None:
                self._thread = threading.Thread(target=self._run, name="pxexec-lease",
                                                daemon=True)
                self._thread.start()

    def forget(self, store: Any, keys: list[str]) -> None:
        """Stop holding ``keys`` (they are being evicted, or handed to someone else)."""
        if not tracks_owners(store.connector):
            return
        with self._lock:
            entry = self._held.get(store.fingerprint)
            if entry is not None:
                entry[1].difference_update(keys)

    def held(self, store: Any) -> set[str]:
        with self._lock:
            entry = self._held.get(store.fingerprint)
            return set(entry[1]) if entry else set()

    def renew_now(self) -> None:
        """Renew every held lease once (what the background thread does)."""
        with self._lock:
            entries = [(store, list(keys)) for store, keys in self._held.values()]
        start = time.perf_counter()
        for store, keys in entries:
            lease = lease_of(store.connector)
            if lease is None:
                continue
            try:
                store.connector.renew(self.owner, keys, lease)
            except Exception:
                log.exception("pxexec: could not renew leases in %r", store)
        self.last_renewal_seconds = time.perf_counter() - start
        self.renewals += 1

    def _interval(self) -> float:
        with self._lock:
            leases = [lease_of(s.connector) for s, _ in self._held.values()]
        return max(0.05, min((x for x in leases if x), default=30.0) / 3)

    def _run(self) -> None:
        last_reap = time.monotonic()
        while not self._stopped:
            self._wake.wait(self._interval())
            if self._stopped:
                return
            self.renew_now()
            if time.monotonic() - last_reap > self._interval() * 3:
                last_reap = time.monotonic()
                self._reap()

    def _reap(self) -> None:
        with self._lock:
            stores = [s for s, _ in self._held.values()]
        for store in stores:
            try:
                store.connector.reap()
            except Exception:
                log.exception("pxexec: reaping expired objects in %r failed", store)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    def free_all(self) -> int:
        """Evict every object this process still holds (at interpreter exit)."""
        with self._lock:
            entries, self._held = list(self._held.values()), {}
        freed = 0
        for store, keys in entries:
            try:
                store.connector.evict_batch(sorted(keys))
                freed += len(keys)
            except Exception:  # the backend is gone: its lease or the reaper cleans up
                log.debug("pxexec: could not free held objects of %r at exit", store)
        return freed


_KEEPER: LeaseKeeper | None = None
_KEEPER_LOCK = threading.Lock()


def _renew_keeper_lock() -> None:
    global _KEEPER_LOCK
    _KEEPER_LOCK = threading.Lock()


def _exit_handler() -> None:
    current = _KEEPER
    if current is not None and current.pid == os.getpid():  # never a parent's, after fork
        current.stop()
        current.free_all()


def hold(store: Any, keys: list[str]) -> None:
    """Keep ``keys`` of ``store`` alive while this process lives (free for stores that
    record no owner).

    >>> from pxexec import Store
    >>> from pxexec.connectors.shm import SharedMemoryConnector
    >>> store = Store("hold-demo", SharedMemoryConnector(namespace="hold-demo"))
    >>> key = store.put(b"x")
    >>> hold(store, [key]); key in keeper().held(store)
    True
    >>> store.evict(key); key in keeper().held(store)   # evicting ends the hold
    False
    """
    if keys and tracks_owners(store.connector):
        keeper().hold(store, keys)


def forget(store: Any, keys: list[str]) -> None:
    """Stop holding ``keys`` of ``store`` (the Store calls it as it evicts them).

    >>> from pxexec import Store
    >>> from pxexec.connectors.shm import SharedMemoryConnector
    >>> store = Store("forget-demo", SharedMemoryConnector(namespace="forget-demo"))
    >>> key = store.put(b"x")
    >>> hold(store, [key]); forget(store, [key]); key in keeper().held(store)
    False
    >>> store.evict(key)
    """
    if keys and tracks_owners(store.connector):
        keeper().forget(store, keys)


def keeper() -> LeaseKeeper:
    """This process's lease keeper (a new one after fork).

    >>> keeper() is keeper()
    True
    """
    global _KEEPER
    current = _KEEPER
    if current is None or current.pid != os.getpid():
        on_fork_child(_renew_keeper_lock)
        with _KEEPER_LOCK:
            if _KEEPER is None or _KEEPER.pid != os.getpid():
                _KEEPER = LeaseKeeper()
            current = _KEEPER
    return current


def reset_keeper() -> None:
    """Stop this process's keeper and forget its holdings (tests).

    >>> first = keeper()
    >>> reset_keeper()
    >>> keeper() is first
    False
    """
    global _KEEPER
    with _KEEPER_LOCK:
        if _KEEPER is not None:
            _KEEPER.stop()
        _KEEPER = None
