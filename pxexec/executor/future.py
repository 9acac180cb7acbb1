"""StoreFuture and its completion race: one thread completes each future.

**Which thread may run what.** A StoreFuture mirrors one engine future. Three kinds
of thread may try to complete it: a thread blocked in ``result()``/``exception()``
(it waits on the engine future itself, so no hop through a callback thread is
needed), the engine's callback thread, and (for engines whose tasks cannot take
futures) a dependency's callback thread. Each calls ``claim()`` first; the one
that wins runs the completion (``StoreExecutor``'s ``_complete``: freeing, owning
results, setting the state) and no other thread touches the task's ledger after
that. ``_lock`` guards only the race (``_finishing``) and the count of threads
driving it (``_drivers``: while one waits in ``result()``, callbacks stand aside).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from pxexec.engines.future_interop import await_future, refuse_dask_graph

if TYPE_CHECKING:
    from pxexec.engines.base import Engine

__all__ = ["StoreFuture"]

#: (cancelled, exception, result) of a finished engine future
Outcome = tuple[bool, BaseException | None, Any]
Complete = Callable[["StoreFuture", Any, "Outcome | None"], None]


class StoreFuture(cf.Future):  # type: ignore[type-arg]
    """The future StoreExecutor returns: a real ``concurrent.futures.Future``.

    It mirrors the engine's future; ``engine_future`` is that future (for example a
    Dask future), and passing a StoreFuture to another ``submit`` makes it a
    dependency.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec import Store, StoreExecutor
    >>> from pxexec.connectors.local import LocalConnector
    >>> with StoreExecutor(ThreadPoolExecutor(2), Store("future-demo", LocalConnector()),
    ...                    should_proxy=lambda obj: isinstance(obj, list)) as ex:
    ...     numbers = ex.submit(list, range(5))          # a list result: stored, proxied
    ...     total = ex.submit(sum, numbers)              # a dependency on any engine
    ...     total.result(), type(numbers.result()).__name__.partition("[")[0]
    (10, 'OwnedProxy')
    """

    def __init__(self, engine: Engine, complete: Complete) -> None:
        super().__init__()
        self._px_engine = engine
        self._px_complete = complete  # runs the completion (the race's winner only)
        self.engine_future: Any = None
        self._finishing = False
        self._lock = threading.Lock()
        self._drivers = 0  # threads blocked on the engine future in result()

    def claim(self) -> bool:
        """True for the first caller only: one thread completes this future."""
        with self._lock:
            if self._finishing:
                return False
            self._finishing = True
            return True

    def driven(self) -> bool:
        """Whether a thread waiting in ``result()`` will complete this future itself."""
        return bool(self._drivers)

    def cancel(self) -> bool:
        engine_future = self.engine_future
        if engine_future is not None and not self._px_engine.cancel(engine_future):
            return False
        if not super().cancel():
            return False
        if engine_future is not None:  # its result, if the task stored one, is nobody's
            self._px_engine.discard([engine_future])
        with self._condition:
            if self._state == "CANCELLED":  # wake up wait()/as_completed() waiters
                self.set_running_or_notify_cancel()
        return True

    def result(self, timeout: float | None = None) -> Any:
        self._drive(timeout)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._drive(timeout)
        return super().exception(timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future``: the result, without blocking the event loop."""
        return await_future(self)

    def __dask_graph__(self) -> Any:
        """Dask's helpers (``distributed.wait``, ``compute``) get a TypeError saying what
        to use instead of skipping a StoreFuture silently."""
        return refuse_dask_graph(self)

    def __repr__(self) -> str:
        return (f"<StoreFuture {self._state.lower()} on {self._px_engine.name} "
                "(a concurrent.futures.Future: use concurrent.futures.wait/as_completed "
                "or await it)>")

    def _drive(self, timeout: float | None) -> None:
        # Block on the engine's own future and complete this one in the waiting
        # thread: no extra hop through the engine's callback thread (and TaskVine
        # progresses only while someone waits).
        engine_future = self.engine_future
        if self.done() or engine_future is None:
            return
        with self._lock:
            self._drivers += 1
        try:
            outcome = self._px_engine.wait(engine_future, timeout)
        except BaseException:
            with self._lock:
                self._drivers -= 1
            if engine_future.done():  # the callback stood aside for us: complete now
                self._px_complete(self, engine_future, None)
            raise
        with self._lock:
            self._drivers -= 1
        self._px_complete(self, engine_future, outcome)
