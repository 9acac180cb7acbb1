"""Consumers of proxied results on engines that run a task where its inputs are (Dask).

Dask's scheduler sends a task to the worker that holds its dependency whenever only
one worker does (``decide_worker``), whatever the dependency's size. For a result
passed by proxy that is the wrong choice: the proxy is a few hundred bytes and every
worker reads the stored object as cheaply (shared memory on one node, Redis, a shared
file system), yet all consumers of one result queue up on one worker. So, where the
store's reads cost the same on every node (its connector is not ``located``), a
consumer gets the upstream result itself when it is a proxy: at once if the upstream
future is done, or, if the upstream's last like task returned a proxy, once it is done
(the submission waits on the client: one notification per graph level). Tasks are
alike when they run the same function and both read stored objects or neither does
(a warm-up on small inputs says nothing of a run on large ones); for a kind not seen
yet, a task that reads stored objects is expected to return one. Dask then places
the consumer by occupancy, as it places a task without dependencies. Anything else
(a result that is not a proxy, a function not seen yet, a ``located`` store on
several nodes, where running beside the data saves a transfer) goes to the engine as
its own future, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pxexec.connectors.base import flag
from pxexec.executor.dependencies import proxied_result
from pxexec.proxy import Proxy
from pxexec.recent import Recent

__all__ = ["Placement"]

#: how many functions' last result kinds are remembered
_RECENT = 256


class Placement:
    """What a StoreFuture argument becomes on the engine (see the module doc).

    >>> from pxexec.engines.base import Engine
    >>> from pxexec.connectors.local import LocalConnector
    >>> Placement(Engine(None), LocalConnector()).active
    False
    """

    def __init__(self, engine: Any, connector: Any) -> None:
        self.active = bool(engine.places_near_data) and not flag(connector, "located")
        self._native = bool(engine.native_futures)
        self._proxies: Recent[Any, bool] = Recent(_RECENT)

    def learn(self, ledger: Any, result: Any) -> None:
        """The task of ``ledger`` returned ``result`` (the next consumers of tasks like
        it are placed by it)."""
        if not self.active:
            return
        try:
            self._proxies.put((ledger.fn, ledger.fed), isinstance(result, Proxy))
        except TypeError:  # an unhashable callable: nothing learned
            pass

    def argument(self, future: Any, ledger: Any) -> Any:
        """What to pass for the StoreFuture ``future`` (its task's ``ledger``, None if
        unknown): its proxied result, its engine future, or ``future`` itself (submit
        once it is done: ``pxexec.executor.dependencies``)."""
        engine_future = future.engine_future
        if not self._native:
            return future
        if not self.active:
            return engine_future if engine_future is not None else future
        if future.done():
            if not future.cancelled() and future.exception() is None:
                proxied = proxied_result(future.result())
                if proxied is not None:
                    return proxied
            return engine_future if engine_future is not None else future
        if engine_future is None or (ledger is not None and self._expects_proxy(ledger)):
            return future
        return engine_future

    def _expects_proxy(self, ledger: Any) -> bool:
        try:
            known = self._proxies.get((ledger.fn, ledger.fed))
        except TypeError:  # an unhashable callable
            return False
        return bool(ledger.fed) if known is None else bool(known)

    def native(self) -> Callable[[Any], Any] | None:
        """For a waited-on future whose result is not a proxy: its engine future
        (the engine moves that result between its workers), or None (by value)."""
        return (lambda f: f.engine_future) if self._native else None
