"""Dask distributed: the StoreExecutor engine (the drop-in ``Client`` is in
``pxexec.engines.dask_client``)."""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from pxexec.engines.base import Engine
from pxexec.errors import MissingDependencyError

try:
    import distributed

    from pxexec.engines.dask_results import CancelNotices, install_result_cleanup, record_created
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise MissingDependencyError("distributed", "dask", "The Dask adapter") from exc

__all__ = ["DaskEngine"]

log = logging.getLogger("pxexec")

# keyword arguments Client.submit keeps for itself
_RESERVED = {
    "key", "workers", "resources", "retries", "priority", "fifo_timeout",
    "allow_other_workers", "actor", "actors", "pure",
}


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


Outcome = tuple[bool, BaseException | None, Any]  # (cancelled, exception, result)


async def _outcome(future: Any) -> Outcome:
    """A finished Dask future's outcome, fetched in the client's event loop."""
    if future.status == "cancelled":
        return True, None, None
    try:
        return False, None, await future._result()
    except BaseException as exc:
        if future.status == "cancelled":
            return True, None, None
        return False, exc, None


class _Watcher:
    """Runs callbacks of finished Dask futures from one thread, only when wanted.

    ``Future.add_done_callback`` costs a coroutine and a thread-pool hop per future.
    Here one coroutine per future waits in the client's event loop; when the future
    finishes it asks ``wanted()`` (still in the loop: cheap, never blocks) and only
    then wakes the watcher thread. A StoreFuture that a thread is already waiting on
    in ``result()`` is completed by that thread, so waking a second thread for it
    (and the GIL hand-offs that follow) would only add latency: about 3 ms per task
    on a 2-core machine.
    """

    def __init__(self, client: Any) -> None:
        self._loop = client.loop
        self._ready: deque[tuple[Any, Callable[[Any], None], Outcome]] = deque()
        self.current: tuple[Any, Outcome] | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="pxexec-dask-watcher",
                                        daemon=True)
        self._thread.start()

    def add(self, future: Any, callback: Callable[[Any], None],
            wanted: Callable[[], bool] | None = None) -> None:
        if not hasattr(future, "_state"):  # another Dask version: its public hook
            future.add_done_callback(callback)
            return
        self._loop.add_callback(self._track, future, callback, wanted)

    async def _track(self, future: Any, callback: Callable[[Any], None],
                     wanted: Callable[[], bool] | None) -> None:
        try:
            await future._state.wait()
        except BaseException:  # cancelled or lost: the callback finds out
            pass
        try:
            if wanted is not None and not wanted():
                return
        except Exception:  # a broken predicate must not lose the callback
            pass
        # Fetch the outcome here, in the loop, as result() would: the watcher thread then
        # has it at hand instead of asking the loop for it (two more thread hand-offs).
        outcome = await _outcome(future)
        with self._cond:
            self._ready.append((future, callback, outcome))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._ready and not self._closed:
                    self._cond.wait()
                if self._closed and not self._ready:
                    return
                future, callback, outcome = self._ready.popleft()
            self.current = (future, outcome)
            try:
                callback(future)
            except Exception:
                log.exception("pxexec: a done callback raised")
            # not kept while waiting: the last finished future would stay alive (and its
            # result on a worker) until the next one finishes
            self.current = None
            del future, callback, outcome

    def prefetched(self, future: Any) -> Outcome | None:
        """The outcome fetched for ``future``, inside its callback on this thread."""
        current = self.current
        if current is not None and current[0] is future and (
                threading.current_thread() is self._thread):
            return current[1]
        return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


class _Releaser:
    """Lets go of finished Dask futures just after the next submission.

    Dropping a Dask future sends "client-releases-keys" on the client's batched stream,
    which sends at most once per 10 ms. A future dropped just before the next submit
    (a loop that rebinds its variable when the next result arrives does exactly that)
    takes the batch and holds the new task back by up to 10 ms. Released right after a
    submit, it travels in the same batch. Without a submit, a timer lets go soon after.
    """

    DELAY = 0.05

    def __init__(self, client: Any) -> None:
        self._loop = client.loop
        self._lock = threading.Lock()
        self._held: list[Any] = []
        self._timer = False

    def hold(self, future: Any) -> None:
        with self._lock:
            self._held.append(future)
            start = not self._timer
            self._timer = True
        if start:
            try:
                self._loop.add_callback(self._loop.call_later, self.DELAY, self.release)
            except RuntimeError:  # the client's loop is closed: let go now
                self.release()

    def release(self) -> None:
        with self._lock:
            held, self._held = self._held, []
            self._timer = False
        del held  # the futures go here, outside the lock


class DaskEngine(Engine):
    """StoreExecutor's glue for a Dask ``distributed.Client`` (chosen automatically).

    One engine task per submit, with ``pure=False``, as ``concurrent.futures`` does.

    >>> DaskEngine.native_futures
    True
    """

    name = "dask"
    option_names = frozenset({"workers", "resources", "retries", "priority", "key",
                              "allow_other_workers", "fifo_timeout"})
    native_futures = True
    #: decide_worker picks the only worker holding a task's dependency, whatever its size
    places_near_data = True
    #: closing the client ends its tasks: their callbacks never come
    close_cancels_tasks = True
    #: results stored by a task Dask then discards are freed on the worker
    on_created = staticmethod(record_created)

    def __init__(self, executor: Any) -> None:
        super().__init__(executor)
        self._watcher: _Watcher | None = None
        self._watcher_lock = threading.Lock()
        self._releaser = _Releaser(executor)
        self._notices = CancelNotices(executor)
        # futures with a key the caller chose: such a key may be submitted again, so a
        # late cancel notice could reach the new task; their results are not noticed
        self._named: weakref.WeakSet[Any] = weakref.WeakSet()
        install_result_cleanup(executor)

    def add_done_callback(self, future: Any, callback: Callable[[Any], None],
                          wanted: Callable[[], bool] | None = None) -> None:
        if self._watcher is None:
            with self._watcher_lock:
                if self._watcher is None:
                    self._watcher = _Watcher(self.executor)
        self._watcher.add(future, callback, wanted)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               options: dict[str, Any] | None = None) -> Any:
        options = options or {}
        if _RESERVED.isdisjoint(kwargs):
            future = self.executor.submit(fn, *args, pure=False, **options, **kwargs)
        else:  # the function's own keywords named like Dask's options reach the function
            future = self.executor.submit(_call, fn, args, kwargs, pure=False, **options)
        if "key" in options:
            self._named.add(future)
        self._releaser.release()  # futures dropped meanwhile: in the same batch
        return future

    def held_by(self, owner: Any, future: Any) -> None:
        weakref.finalize(owner, self._releaser.hold, future).atexit = False

    def is_future(self, obj: Any) -> bool:
        return isinstance(obj, distributed.Future)

    def outcome(self, future: Any) -> tuple[bool, BaseException | None, Any]:
        watcher = self._watcher
        fetched = watcher.prefetched(future) if watcher is not None else None
        if fetched is not None:
            return fetched
        outcome: Outcome = self.executor.sync(_outcome, future)
        return outcome

    def wait(self, future: Any, timeout: float | None) -> tuple[bool, BaseException | None, Any]:
        try:
            return False, None, future.result(timeout)
        except BaseException as exc:
            if future.status == "cancelled":
                return True, None, None
            if isinstance(exc, TimeoutError) and not future.done():
                raise
            return False, exc, None

    def cancel(self, future: Any) -> bool:
        if future.done():  # finished: its result is on its way to us (as in cf, no cancel)
            return bool(future.cancelled())
        try:
            future.cancel()
        except Exception:  # the client is closed: its tasks are gone already
            pass
        return True

    def discard(self, futures: list[Any]) -> None:
        # The task may have ended, and stored its result, before the cancel reached its
        # worker: the worker frees it when told (dask_results.CancelNotices).
        self._notices.add([f.key for f in futures if f not in self._named])

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self.release()
        self._notices.flush()  # before the close: the notices would be lost with it
        self.executor.close()

    def release(self) -> None:
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        self._releaser.release()
