"""Dask: results stored by tasks whose result nobody will receive are freed on the worker.

A Dask task cancelled while it runs (``future.cancel()``, a client that closes or
disconnects) keeps running; when it ends, Dask throws its result away. A result the
task stored in a pxexec store would stay there: nobody will ever receive its proxy.
Each worker process keeps the store keys of the results its tasks stored, per Dask
key, for as long as the key is in the worker's memory. ``FreeDiscardedResults`` (a
worker plugin) evicts them when the worker drops a task that ended cancelled.

A cancel can also reach the worker just after the task ended: the key is then in
memory (not cancelled) when the scheduler releases it, and only the client knows that
it never received the result. StoreExecutor then tells the workers
(``CancelNotices``, one broadcast per batch of keys, asynchronous): a worker evicts
what the task stored when the key leaves its memory, or at once if it left already
(released keys are remembered for ``GRACE`` seconds for a notice still on its way).
A key released without a notice was received: its entry is dropped silently.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["CancelNotices", "FreeDiscardedResults", "discard_cancelled",
           "install_result_cleanup", "record_created"]

log = logging.getLogger("pxexec")

#: seconds a worker remembers the results of released keys, for a late cancel notice
GRACE = 30.0
#: worker states in which a task has not ended yet (its result may still come)
_RUNNING = frozenset({"waiting", "ready", "constrained", "executing", "long-running",
                      "cancelled", "resumed"})

Entry = tuple[Any, list[str]]  # (store, keys the task stored)

_CREATED: dict[Any, Entry] = {}  # tasks that stored results, while the key is here
_RELEASED: OrderedDict[Any, tuple[Any, list[str], float]] = OrderedDict()  # + deadline
_NOTICED: set[Any] = set()  # keys cancelled by the client: free at release
_LOCK = threading.Lock()


def record_created(store: Any, keys: list[str]) -> None:
    """On a Dask worker: remember the results the current task stored."""
    try:
        from distributed import get_worker

        key = get_worker().get_current_task()
    except (ValueError, AttributeError):  # not inside a Dask task
        return
    with _LOCK:
        _CREATED[key] = (store, list(keys))


def _evict(entries: list[Entry]) -> None:
    # off the worker's event loop: an eviction may wait on the network
    for store, keys in entries:
        threading.Thread(target=store.evict_or_defer, args=(keys,),
                         name="pxexec-free-discarded", daemon=True).start()


def _expire(now: float) -> None:
    while _RELEASED:
        key, (_, _, deadline) = next(iter(_RELEASED.items()))
        if deadline > now:
            return
        del _RELEASED[key]


def discard_cancelled(keys: Iterable[Any], dask_worker: Any = None) -> int:
    """On a Dask worker (``client.run``): the client cancelled ``keys`` without
    receiving their results. Evicts what their tasks stored here: now if the key was
    released already, else when it leaves this worker. Returns how many were freed now."""
    states = getattr(getattr(dask_worker, "state", None), "tasks", {})
    now_free: list[Entry] = []
    with _LOCK:
        _expire(time.monotonic())
        for key in keys:
            released = _RELEASED.pop(key, None)
            if released is not None:
                now_free.append((released[0], released[1]))
                continue
            ts = states.get(key)
            if key in _CREATED or (ts is not None and ts.state in _RUNNING):
                _NOTICED.add(key)  # consumed when the key leaves (every way out pops it)
    _evict(now_free)
    return len(now_free)


class FreeDiscardedResults(WorkerPlugin):  # type: ignore[misc]
    """Evicts what a task stored when Dask discards its result (see the module doc)."""

    idempotent = True
    name = "pxexec-free-discarded-results"

    def __init__(self) -> None:
        self.worker: Any = None

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def _state(self, key: Any) -> str:
        tasks = getattr(getattr(self.worker, "state", None), "tasks", None)
        if tasks is None:  # not set up (an old distributed): go by the transition
            return ""
        ts = tasks.get(key)
        return "forgotten" if ts is None else str(ts.state)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if key not in _CREATED and key not in _NOTICED:
            return
        state = self._state(key) or finish
        if state in _RUNNING or state == "memory":
            return  # running (a cancelled one may resume), or kept: nothing yet
        with _LOCK:
            noticed = key in _NOTICED
            _NOTICED.discard(key)
            entry = _CREATED.pop(key, None)
            if entry is None:
                return
            # A task that ended cancelled ("cancelled -> memory" drops its result) or
            # failed after storing, or a key the client cancelled: nobody receives it.
            if noticed or start in ("cancelled", "executing", "long-running", "resumed"):
                discard = True
            else:  # left memory: received, unless a cancel notice is still on its way
                discard = False
                now = time.monotonic()
                _expire(now)
                _RELEASED[key] = (entry[0], entry[1], now + GRACE)
        if discard:
            _evict([entry])


_INSTALLED: set[str] = set()


def install_result_cleanup(client: Any) -> None:
    """Register ``FreeDiscardedResults`` on the client's workers (once per scheduler)."""
    try:
        address = str(client.scheduler.address)
    except AttributeError:
        address = str(id(client))
    if address in _INSTALLED or getattr(client, "asynchronous", False):
        return
    try:
        client.register_plugin(FreeDiscardedResults())
    except Exception as exc:  # an old scheduler or a closed client: results stay owned
        log.warning("pxexec: could not register the Dask worker plugin that frees "
                    "discarded results (%s); cancelled tasks may leave results.", exc)
        return
    _INSTALLED.add(address)


class CancelNotices:
    """On the client: tells the workers the Dask keys whose results it will never read.

    ``add`` returns at once; the keys added meanwhile go in one ``client.run``
    broadcast from the client's event loop. ``flush`` waits until all were delivered
    (before the client closes).
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._keys: list[Any] = []
        self._scheduled = False
        self._sending: set[asyncio.Future[Any]] = set()

    def add(self, keys: list[Any]) -> None:
        if not keys or getattr(self._client, "asynchronous", False):
            return
        with self._lock:
            self._keys.extend(keys)
            start = not self._scheduled
            self._scheduled = True
        if start:
            try:
                self._client.loop.add_callback(self._send)
            except (RuntimeError, AttributeError):  # the client's loop is gone, and its tasks
                with self._lock:
                    self._keys.clear()
                    self._scheduled = False

    async def _send(self) -> None:
        with self._lock:
            keys, self._keys = list(dict.fromkeys(self._keys)), []
            self._scheduled = False
        if not keys:
            return
        task = asyncio.ensure_future(self._client._run(discard_cancelled, keys,
                                                       on_error="ignore"))
        self._sending.add(task)
        try:
            await task
        except Exception as exc:  # a closed client, a lost scheduler
            log.info("pxexec: could not tell the Dask workers of %d cancelled task(s) "
                     "(%s); results they stored before the cancel may stay.", len(keys), exc)
        finally:
            self._sending.discard(task)

    async def _drain(self) -> None:
        await self._send()
        while self._sending:
            await asyncio.wait(list(self._sending))

    def flush(self, timeout: float = 10.0) -> None:
        """Deliver the notices not sent yet, waiting up to ``timeout`` seconds."""
        with self._lock:
            idle = not self._keys and not self._sending
        if idle or getattr(self._client, "asynchronous", False):
            return
        try:
            self._client.sync(self._drain, callback_timeout=timeout)
        except Exception as exc:
            log.info("pxexec: cancel notices to the Dask workers were not delivered (%s).",
                     exc)


def _store_key(proxy: Any) -> str | None:
    from pxexec.store.factory import StoreFactory

    factory = getattr(proxy, "__px_factory__", None)
    return factory.key if type(factory) is StoreFactory else None


def run_owned(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any], own: tuple[str, ...],
              topic: str) -> Any:
    """Run a drop-in ``Client`` task on a worker and hand its objects to the client.

    ``own`` are the inputs the client stored for this call. Those the result does not
    reference are evicted here, now; the result's own stored objects and the inputs
    it references (at any depth, or from inside a stored result) are reported to the
    client on ``topic`` (a Dask event, ahead of the task's completion on the same
    stream): the client owns them from then on, for as long as Dask keeps the key or
    anything in the client references them.
    """
    from distributed import get_worker

    from pxexec.store.reachable import keys_of, proxies_in

    result, refs, created = task.run(args, kwargs)
    reached = keys_of(proxies_in(result), _store_key) | set(refs)
    mine = set(own)
    unreferenced = sorted(mine - reached)
    if unreferenced:
        store = task_store(task)
        store.evict_or_defer(unreferenced)
    owned = sorted((reached & mine) | set(created))
    others = sorted(reached - mine - set(created))
    if owned or others:
        worker = get_worker()
        worker.log_event(topic, {"key": worker.get_current_task(), "own": owned,
                                 "refs": others})
    return result


def task_store(task: Any) -> Any:
    from pxexec.store.registry import get_or_create_store

    return get_or_create_store(task.store_config, task.store_fp)


def as_key(value: Any) -> Any:
    """A Dask key back from an event message (msgpack turns tuples into lists)."""
    if isinstance(value, list):
        return tuple(as_key(v) for v in value)
    return value
