"""Evictions that failed: logged, counted and retried, never silently dropped.

Owners free their objects from places that cannot raise to anyone (garbage
collection, a background freeing thread, interpreter exit). When such a free fails,
``Store.free`` hands the keys to the store's ``FailedEvictions``: each failure is
logged with the key and the cause, counted in ``store.metrics``, and retried from a
background thread after 0.5, 1, 2, 4, 8 and 16 s. A key whose eviction can never
succeed from this host (it lives in another host's node-local store, no transfer) is
given up at once, with an error log saying where it lives; keys still failing after
the last retry are given up likewise. An object given up expires by its lease if its
store has one. A forked child starts with none of its parent's failures (the parent
retries them).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Any

from pxexec.errors import ConfigError, ObjectOnOtherHostError
from pxexec.forking import restart_after_fork

log = logging.getLogger("pxexec")

__all__ = ["RETRY_DELAYS", "FailedEvictions"]

#: seconds before each retry of a failed eviction
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
_PERMANENT = (ObjectOnOtherHostError, ConfigError)


class FailedEvictions:
    """The retry queue of one store (``store.failed_evictions``).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("failed-demo", LocalConnector())
    >>> store.failed_evictions.pending()
    0
    """

    def __init__(self, store: Any, delays: tuple[float, ...] = RETRY_DELAYS) -> None:
        self.store = store
        self.delays = delays
        self._start_empty()
        restart_after_fork(self, "_start_empty")

    def _start_empty(self) -> None:
        # (again in a forked child: the parent's retries, thread and lock stay the parent's)
        self._queue: list[tuple[float, int, str, int]] = []  # (due, seq, key, attempt)
        self._seq = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._retrying = 0  # retries taken from the queue and not finished yet

    def pending(self) -> int:
        """Keys waiting for a retry."""
        with self._cond:
            return len(self._queue)

    def failed(self, key: str, exc: BaseException, attempt: int = 0) -> bool:
        """Record that evicting ``key`` failed with ``exc`` (after ``attempt`` retries);
        True if it is given up (never retried)."""
        self.store._count(evict_failures=1)
        if isinstance(exc, _PERMANENT) or attempt >= len(self.delays):
            self.store._count(evictions_given_up=1)
            log.error("pxexec: gave up freeing %r in %r after %d attempt(s): %s; it stays "
                      "until its lease expires (if the store has one) or it is freed where "
                      "it lives", key, self.store, attempt + 1, exc)
            discard = getattr(self.store, "_evicted_on_retry", None)
            if discard is not None:
                discard(key)
            return True
        log.warning("pxexec: could not free %r in %r (%s); retrying in %g s", key,
                    self.store, exc, self.delays[attempt])
        with self._cond:
            self._seq += 1
            heapq.heappush(self._queue,
                           (time.monotonic() + self.delays[attempt], self._seq, key, attempt))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="pxexec-evict-retry")
                self._thread.start()
            self._cond.notify()
        return False

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue or self._queue[0][0] > time.monotonic():
                    wait = self._queue[0][0] - time.monotonic() if self._queue else None
                    self._cond.wait(wait)
                _, _, key, attempt = heapq.heappop(self._queue)
                self._retrying += 1
            try:
                self._retry(key, attempt)
            finally:
                with self._cond:
                    self._retrying -= 1

    def _retry(self, key: str, attempt: int) -> None:
        self.store._count(evict_retries=1)
        try:
            self.store.connector.evict(key)
        except Exception as exc:
            self.failed(key, exc, attempt + 1)
        else:
            self.store._count(evictions=1)
            discard = getattr(self.store, "_evicted_on_retry", None)
            if discard is not None:
                discard(key)
            log.info("pxexec: freed %r in %r on retry %d", key, self.store, attempt + 1)

    def wait(self, timeout: float) -> bool:
        """Wait until no retry is pending or under way (or ``timeout`` seconds); True if
        none is."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if not self._queue and not self._retrying:
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
