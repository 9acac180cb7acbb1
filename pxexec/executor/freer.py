"""The background freer: evicts what completed tasks stored, off the task path.

Threads: any thread may ``put`` keys (the winner of a future's completion race
does); one daemon thread per freer evicts them; ``flush`` waits from any thread.
At interpreter exit every freer still alive is flushed (the exit hook is
registered when the first freer is made, not on import). A forked child inherits
no freer thread and locks its parent's thread may hold: its copies start empty,
and its exit flushes only what it queued itself (the parent frees the rest).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING

from pxexec.exit_hooks import at_exit_once
from pxexec.forking import restart_after_fork

if TYPE_CHECKING:
    from pxexec.store.store import Store

__all__ = ["Freer"]

log = logging.getLogger("pxexec")

_FREERS: weakref.WeakSet[Freer] = weakref.WeakSet()


class Freer:
    """Evicts keys from a background thread, so freeing never delays the task path.

    Keys queued by completing futures are evicted in batches; ``flush`` waits until
    everything queued so far is gone (``shutdown`` and interpreter exit flush too).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("freer-demo", LocalConnector())
    >>> freer = Freer(store)
    >>> key = store.put(b"x")
    >>> freer.put([key]); freer.flush(timeout=10), store.exists(key)
    (True, False)
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._start_empty()
        restart_after_fork(self, "_start_empty")
        _register(self)

    def _start_empty(self) -> None:
        # (again in a forked child: the parent's queue, thread and lock stay the parent's)
        self._queue: list[str] = []
        self._cond = threading.Condition()
        self._queued = 0
        self._done = 0
        self._thread: threading.Thread | None = None

    def put(self, keys: list[str]) -> None:
        if not keys:
            return
        with self._cond:
            self._queue.extend(keys)
            self._queued += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pxexec-freer",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        # Lowest CPU priority for this thread (Linux): freeing uses idle cycles and
        # never competes with the tasks' own work; it catches up when the CPU is free.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                keys, self._queue = self._queue, []
                batches = self._queued - self._done
            try:  # a failure is logged, counted in store.metrics and retried later
                self.store.evict_or_defer(keys)
            except Exception:  # never lose the freer thread
                log.exception("pxexec: evicting %d object(s) from %r failed", len(keys),
                              self.store)
            with self._cond:
                self._done += batches
                self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every key queued so far is evicted; False on timeout."""
        with self._cond:
            target = self._queued
            return self._cond.wait_for(lambda: self._done >= target, timeout)


def _register(freer: Freer) -> None:
    _FREERS.add(freer)
    at_exit_once(_flush_all)


def _flush_all() -> None:
    for freer in list(_FREERS):
        freer.flush(timeout=10)
        if freer.store.metrics.deferred_evictions:
            freer.store.retry_evictions()  # a last try of evictions that failed earlier
