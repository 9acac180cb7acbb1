"""Dask: results stored by tasks that Dask discards are freed on the worker.

A Dask task cancelled while it runs (``future.cancel()``, a client that closes or
disconnects) keeps running; when it ends, Dask throws its result away. A result the
task stored in a pxexec store would stay there: nobody will ever receive its proxy.
Each worker process keeps the store keys of the results its running tasks stored,
per Dask key; ``FreeDiscardedResults`` (a worker plugin) evicts them when the worker
drops a task that ended cancelled, and forgets them once the result was kept.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["FreeDiscardedResults", "install_result_cleanup", "record_created"]

log = logging.getLogger("pxexec")

_CREATED: dict[Any, tuple[Any, list[str]]] = {}
_DISCARDED: set[Any] = set()  # keys whose task ended cancelled: its result is dropped
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


class FreeDiscardedResults(WorkerPlugin):  # type: ignore[misc]
    """Evicts what a task stored when Dask discards its result (see the module doc)."""

    idempotent = True
    name = "pxexec-free-discarded-results"

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        # A task cancelled while it ran ends "cancelled -> memory" and its result is
        # dropped right after (then "released -> forgotten"): free what it stored then.
        # Any other way into memory keeps the result: whoever receives it owns it.
        if finish == "memory":
            with _LOCK:
                if start == "cancelled":
                    if key in _CREATED:
                        _DISCARDED.add(key)
                else:
                    _CREATED.pop(key, None)
            return
        if finish == "error":
            with _LOCK:
                _CREATED.pop(key, None)
            return
        if finish not in ("released", "forgotten"):
            return
        with _LOCK:
            if key not in _DISCARDED:
                return
            _DISCARDED.discard(key)
            entry = _CREATED.pop(key, None)
        if entry is not None:
            store, keys = entry
            threading.Thread(target=store.evict_or_defer, args=(keys,),
                             name="pxexec-free-discarded", daemon=True).start()


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
