"""StoreExecutor: any concurrent.futures-style engine, with large data passed by proxy."""

from __future__ import annotations

import atexit
import collections
import concurrent.futures as cf
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from pxexec.adapters.base import Engine, engine_for
from pxexec.adapters.future_interop import await_future, refuse_dask_graph
from pxexec.factory import StoreFactory
from pxexec.lease import hold as hold_leases
from pxexec.ownership import (
    OwnedProxy,
    RefProxy,
    hold,
    into_owned,
    keep_alive,
    kept_by,
    live_owner,
    own_key,
    plain,
    release_held,
    take,
)
from pxexec.policies import SizeAtLeast
from pxexec.proxy import Proxy
from pxexec.reachable import keys_of, proxies_in
from pxexec.store import Store
from pxexec.task import Boxed, ProxyTask, check_policy, tags_for

__all__ = ["DEFAULT_THRESHOLD", "EngineOptions", "StoreExecutor", "StoreFuture"]

log = logging.getLogger("pxexec")

#: default should_proxy: objects of at least this many bytes go by proxy
DEFAULT_THRESHOLD = 1_000_000
#: how many functions' task wrappers a StoreExecutor keeps for reuse
_RECENT_TASKS = 32


def proxy_key(obj: Any) -> str | None:
    """The store key behind a proxy made by a store (None for anything else)."""
    if isinstance(obj, Proxy):
        factory = obj.__px_factory__
        if type(factory) is StoreFactory:
            return factory.key
    return None


def _keys_in(value: Any) -> set[str]:
    """Keys of store proxies at the top level of ``value`` or one container below."""
    return keys_of(_proxies_in(value), proxy_key)


def _proxies_in(value: Any) -> list[Proxy[Any]]:
    """Proxies at the top level of ``value`` or one container below."""
    if isinstance(value, Proxy):
        return [value]
    kind = type(value)
    items: Iterable[Any] = ()
    if kind is list or kind is tuple:
        items = value
    elif kind is dict:
        items = value.values()
    return [v for v in items if isinstance(v, Proxy)]


def _owned_results(value: Any, foreign: set[str]) -> Any:
    """Results with the store proxies this run made turned into owners."""

    def own(item: Any) -> Any:
        key = proxy_key(item)
        return into_owned(item) if key is not None and key not in foreign else item

    kind = type(value)
    if kind is list or kind is tuple:
        return kind(own(v) for v in value)
    if kind is dict:
        return {k: own(v) for k, v in value.items()}
    return own(value)


class StoreFuture(cf.Future):  # type: ignore[type-arg]
    """The future StoreExecutor returns: a real ``concurrent.futures.Future``.

    It mirrors the engine's future; ``engine_future`` is that future (for example a
    Dask future), and passing a StoreFuture to another ``submit`` makes it a
    dependency.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec.connectors.local import LocalConnector
    >>> with StoreExecutor(ThreadPoolExecutor(2), Store("future-demo", LocalConnector()),
    ...                    should_proxy=lambda obj: isinstance(obj, list)) as ex:
    ...     numbers = ex.submit(list, range(5))          # a list result: stored, proxied
    ...     total = ex.submit(sum, numbers)              # a dependency on any engine
    ...     total.result(), type(numbers.result()).__name__.partition("[")[0]
    (10, 'OwnedProxy')
    """

    def __init__(self, executor: StoreExecutor) -> None:
        super().__init__()
        self._px_executor = executor
        self.engine_future: Any = None
        self.input_keys: list[str] = []  # objects this task's submission stored
        self.foreign_keys: set[str] = set()  # proxies the caller passed in (not ours)
        self.borrows: list[Any] = []  # borrows held until this future completes
        self.upstream: list[StoreFuture] = []  # futures whose results this task reads
        self.abandoned = False  # nobody will read the result: free it on completion
        self._finishing = False
        self._finish_lock = threading.Lock()
        self._drivers = 0  # threads blocked on the engine future in result()
        self.engine_options: dict[str, Any] | None = None  # StoreExecutor.options

    def _claim(self) -> bool:
        """True for the first caller only: one thread completes this future."""
        with self._finish_lock:
            if self._finishing:
                return False
            self._finishing = True
            return True

    def cancel(self) -> bool:
        engine_future = self.engine_future
        if engine_future is not None and not self._px_executor._engine.cancel(engine_future):
            return False
        if not super().cancel():
            return False
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
        return (f"<StoreFuture {self._state.lower()} on {self._px_executor._engine.name} "
                "(a concurrent.futures.Future: use concurrent.futures.wait/as_completed "
                "or await it)>")

    def _drive(self, timeout: float | None) -> None:
        # Block on the engine's own future and complete this one in the waiting
        # thread: no extra hop through the engine's callback thread (and TaskVine
        # progresses only while someone waits).
        engine_future = self.engine_future
        if self.done() or engine_future is None:
            return
        executor = self._px_executor
        with self._finish_lock:
            self._drivers += 1
        try:
            outcome = executor._engine.wait(engine_future, timeout)
        except BaseException:
            with self._finish_lock:
                self._drivers -= 1
            if engine_future.done():  # the callback stood aside for us: complete now
                executor._on_engine_done(self, engine_future)
            raise
        with self._finish_lock:
            self._drivers -= 1
        executor._on_engine_done(self, engine_future, outcome)


class _Freer:
    """Evicts keys from a background thread, so freeing never delays the task path.

    Keys queued by completing futures are evicted in batches; ``flush`` waits until
    everything queued so far is gone (``shutdown`` and interpreter exit flush too).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: list[str] = []
        self._cond = threading.Condition()
        self._queued = 0
        self._done = 0
        self._thread: threading.Thread | None = None
        _FREERS.add(self)

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


_FREERS: weakref.WeakSet[_Freer] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for freer in list(_FREERS):
        freer.flush(timeout=10)
        if freer.store.metrics.deferred_evictions:
            freer.store.retry_evictions()  # a last try of evictions that failed earlier


class StoreExecutor(cf.Executor):
    """Wraps an engine so that large arguments and results travel by proxy.

    ``executor`` is a Dask ``distributed.Client``, a Parsl executor, TaskVine's
    ``FuturesExecutor``, or a ``concurrent.futures`` pool. ``should_proxy`` is any
    callable ``obj -> bool`` (default: ``SizeAtLeast(1_000_000)``), applied to each
    argument on the client and to each result on the worker.

    With ``ownership=True`` (the default) the objects a task's submission stored are
    evicted right after its future completes (success, exception or cancellation),
    from a background thread (``flush()`` waits for it; ``shutdown`` flushes), except
    those the task returned. Results come back as ``OwnedProxy`` objects, freed when
    dropped; ``free(result)`` frees one now. ``proxy_containers=True`` also considers
    the items of list, tuple and dict arguments and results. ``close_engine`` makes
    ``shutdown`` shut the engine down too (a Dask client is closed, not its cluster).

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("doc", LocalConnector())
    >>> big = lambda obj: isinstance(obj, list) and len(obj) > 100
    >>> with StoreExecutor(ThreadPoolExecutor(2), store, should_proxy=big) as ex:
    ...     ex.submit(sum, list(range(1000))).result()      # the list went by proxy
    499500
    """

    def __init__(
        self,
        executor: Any,
        store: Store,
        should_proxy: Callable[[Any], bool] | None = None,
        *,
        ownership: bool = True,
        proxy_containers: bool = False,
        proxy_results: bool = True,
        close_engine: bool = True,
        engine: str | None = None,
    ) -> None:
        if should_proxy is None:
            should_proxy = SizeAtLeast(DEFAULT_THRESHOLD)
        if not callable(should_proxy):
            raise TypeError(
                f"should_proxy must be a callable obj -> bool, got "
                f"{type(should_proxy).__name__}. Use e.g. pxexec.policies.SizeAtLeast(1_000_000)."
            )
        if not isinstance(store, Store):
            raise TypeError(f"store must be a pxexec.Store, got {type(store).__name__}.")
        self.executor = executor
        self.store = store
        self.should_proxy = should_proxy
        self.ownership = ownership
        self.proxy_containers = proxy_containers
        self.proxy_results = proxy_results
        self.close_engine = close_engine
        self._engine: Engine = engine_for(executor, engine)
        #: recent wrappers, one per function (engines that cache per function stay
        #: small); bounded, so that callables are not kept once their tasks are done
        self._tasks: collections.OrderedDict[Any, ProxyTask] = collections.OrderedDict()
        self._tasks_lock = threading.Lock()
        self._pending: set[StoreFuture] = set()
        self._lock = threading.Lock()
        self._shutdown = False
        self._freer = _Freer(store)

    @classmethod
    def from_config(cls, executor: Any, path: str | None = None, **overrides: Any
                    ) -> StoreExecutor:
        """A StoreExecutor whose store, policy and options come from a TOML file
        (without ``path``: the one ``PXEXEC_CONFIG`` names; see ``pxexec.config.load``)."""
        from pxexec.config import load

        config = load(path)
        options = {**config.executor_options, **overrides}
        return cls(executor, config.store, config.policy, **options)

    # -- submission -------------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> StoreFuture:
        """Run ``fn(*args, **kwargs)``; every keyword reaches the function (engine
        options go through ``options``)."""
        return self._submit(fn, args, kwargs, None)

    def options(self, **engine_options: Any) -> EngineOptions:
        """This executor with submit options for the engine, never for the function.

        ``ex.options(workers=["tcp://10.0.0.2:40000"], retries=2).submit(f, x)`` gives
        Dask ``workers``/``resources``/``retries``/``priority``/``key``/
        ``allow_other_workers``/``fifo_timeout``; Parsl ``resources`` (its
        ``parsl_resource_specification``), ``priority``, ``walltime``; TaskVine
        ``cores``/``memory``/``disk``/``gpus``/``retries``/``priority``. An option the
        engine does not take raises ``EngineOptionError`` at once.

        >>> from concurrent.futures import ThreadPoolExecutor
        >>> from pxexec.connectors.local import LocalConnector
        >>> with StoreExecutor(ThreadPoolExecutor(1), Store("o", LocalConnector())) as ex:
        ...     ex.options().submit(max, 1, 2).result()
        2
        """
        return EngineOptions(self, self._engine.check_options(engine_options))

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                options: dict[str, Any] | None) -> StoreFuture:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = StoreFuture(self)
        future.engine_options = options
        try:
            new_args = tuple(self._prepare(a, future) for a in args)
            new_kwargs = {k: self._prepare(v, future) for k, v in kwargs.items()}
        except BaseException:
            self._free(future.input_keys)
            raise
        with self._lock:
            self._pending.add(future)
        deps = [a for a in (*new_args, *new_kwargs.values()) if isinstance(a, cf.Future)]
        if deps and not self._engine.native_futures:
            self._submit_after(deps, future, fn, new_args, new_kwargs)
            return future
        try:
            self._launch(future, fn, new_args, new_kwargs)
        except BaseException:
            self._free(future.input_keys)
            with self._lock:
                self._pending.discard(future)
            raise
        return future

    def _task(self, fn: Callable[..., Any]) -> ProxyTask:
        # One wrapper per function: engines that cache per function (Parsl) stay small.
        try:
            with self._tasks_lock:
                task = self._tasks.get(fn)
                if task is not None:
                    self._tasks.move_to_end(fn)
        except TypeError:  # unhashable callable
            task = None
        if task is None:
            task = ProxyTask(
                fn,
                self.store,
                self.should_proxy if self.proxy_results else None,
                containers=self.proxy_containers or isinstance(fn, _Chunk),
                box_result=True,
                note_traceback=not self._engine.keeps_tracebacks,
                on_created=getattr(self._engine, "on_created", None),
            )
            try:
                with self._tasks_lock:
                    self._tasks[fn] = task
                    while len(self._tasks) > _RECENT_TASKS:
                        self._tasks.popitem(last=False)
            except TypeError:
                pass
        return task

    def _prepare(self, value: Any, future: StoreFuture) -> Any:
        kind = type(value)
        if kind is StoreFuture:
            # the upstream result (an owner) must outlive this task, which reads it
            future.upstream.append(value)
            if self._engine.native_futures and value.engine_future is not None:
                return value.engine_future
            return value
        if isinstance(value, Proxy):
            return self._pass_proxy(value, future)
        if self._engine.is_future(value):
            return value
        if self.proxy_containers and (kind is list or kind is tuple or kind is dict):
            return self._prepare_items(value, future)
        if check_policy(self.should_proxy, value):
            return self._store_input(value, future)
        return value

    def _store_input(self, value: Any, future: StoreFuture) -> Boxed:
        proxy = self.store.proxy(value, tags=tags_for(self.should_proxy, value))
        key = proxy.__px_factory__.key
        future.input_keys.append(key)
        if self.ownership:
            hold_leases(self.store, [key])  # alive while this process lives
        return Boxed(proxy)

    def _pass_proxy(self, value: Proxy[Any], future: StoreFuture) -> Boxed:
        if isinstance(value, OwnedProxy):  # moved into the task: freed when it completes
            sent = plain(value)
            future.input_keys.append(take(value))
            return Boxed(sent)
        if isinstance(value, RefProxy):  # borrowed until the future completes
            future.borrows.append(hold(value))
            return Boxed(plain(value))
        key = proxy_key(value)
        if key is not None:
            future.foreign_keys.add(key)
        return Boxed(value)

    def _prepare_items(self, value: Any, future: StoreFuture) -> Any:
        def one(item: Any) -> Any:
            if isinstance(item, Proxy):
                return self._pass_proxy(item, future)
            if type(item) is StoreFuture or self._engine.is_future(item):
                return item
            if check_policy(self.should_proxy, item):
                return self._store_input(item, future)
            return item

        if type(value) is dict:
            return {k: one(v) for k, v in value.items()}
        return type(value)(one(v) for v in value)

    def _launch(
        self, future: StoreFuture, fn: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        engine_future = self._engine.submit(self._task(fn), args, kwargs,
                                            future.engine_options)
        future.engine_future = engine_future
        self._engine.held_by(future, engine_future)
        # A weak reference: an engine that holds callbacks for a while must not keep a
        # completed future (and its owned result) alive. Pending futures stay alive
        # in self._pending until they complete.
        ref = weakref.ref(future)

        def on_done(ef: Any) -> None:
            f = ref()
            if f is not None:
                self._on_callback(f, ef)

        def wanted() -> bool:  # a thread waiting in result() completes it itself
            f = ref()
            return f is not None and not f._drivers and not f.done()

        self._engine.add_done_callback(engine_future, on_done, wanted)

    def _submit_after(
        self, deps: list[cf.Future], future: StoreFuture, fn: Callable[..., Any],  # type: ignore[type-arg]
        args: tuple[Any, ...], kwargs: dict[str, Any],
    ) -> None:
        """For engines whose tasks cannot take futures: submit once the deps are done."""
        # The callbacks stay registered on the finished deps; the state they need lives
        # in ``pending`` and is dropped at launch, so no reference cycle keeps a dep (and
        # its owned result) alive until the garbage collector runs.
        pending: dict[str, Any] = {"deps": deps, "args": args, "kwargs": kwargs,
                                   "future": future, "left": len(deps)}
        lock = threading.Lock()

        def substitute(value: Any) -> Any:
            # The engine may keep a task's arguments for as long as it likes (Parsl keeps
            # task records): it gets plain proxies, never owners, so an upstream result
            # is freed when its StoreFuture goes, not when the engine forgets the task.
            kind = type(value)
            if isinstance(value, Proxy):
                return Boxed(plain(value) if isinstance(value, OwnedProxy) else value)
            if kind is list or kind is tuple:
                return kind(plain(v) if isinstance(v, OwnedProxy) else v for v in value)
            if kind is dict:
                return {k: plain(v) if isinstance(v, OwnedProxy) else v for k, v in value.items()}
            return value

        def on_dep_done(_: Any) -> None:
            with lock:
                pending["left"] -= 1
                if pending["left"]:
                    return
                state = dict(pending)
                pending.clear()
            target: StoreFuture = state["future"]
            if target.cancelled():
                if target._claim():
                    self._finish(target, True, None, None)
                return
            for dep in state["deps"]:
                error = dep.exception() if not dep.cancelled() else cf.CancelledError()
                if error is not None:
                    if target._claim():
                        self._finish(target, False, error, None)
                    return
            resolved_args = tuple(
                substitute(a.result()) if isinstance(a, cf.Future) else a for a in state["args"]
            )
            resolved_kwargs = {
                k: substitute(v.result()) if isinstance(v, cf.Future) else v
                for k, v in state["kwargs"].items()
            }
            del state
            try:
                self._launch(target, fn, resolved_args, resolved_kwargs)
            except BaseException as exc:
                if target._claim():
                    self._finish(target, False, exc, None)

        for dep in deps:
            dep.add_done_callback(on_dep_done)

    # -- completion -------------------------------------------------------------------

    def _on_callback(self, future: StoreFuture, engine_future: Any) -> None:
        # A thread waiting in result() completes the future itself, with the outcome
        # it already holds; fetching it again here would only add latency.
        if future._drivers:
            return
        self._on_engine_done(future, engine_future)

    def _on_engine_done(
        self, future: StoreFuture, engine_future: Any,
        outcome: tuple[bool, BaseException | None, Any] | None = None,
    ) -> None:
        if not future._claim():
            return
        cancelled, exc, result = outcome or self._engine.outcome(engine_future)
        refs: tuple[str, ...] = ()
        if type(result) is Boxed:
            result, refs = result.value, result.refs
        self._finish(future, cancelled, exc, result, refs)

    def _finish(
        self, future: StoreFuture, cancelled: bool, exc: BaseException | None, result: Any,
        refs: tuple[str, ...] = (),
    ) -> None:
        # Inputs are freed before the future completes: once result() returns, the
        # store holds only what the caller owns.
        try:
            future.upstream = []
            for borrowed in future.borrows:
                release_held(borrowed)
            if self.ownership:
                ok = not cancelled and exc is None
                # Inputs may hide anywhere in the result (a dataclass, a list three
                # levels down, a stored container: its refs): look everywhere then.
                found = (proxies_in(result) if future.input_keys else _proxies_in(result)
                         ) if ok else []
                returned = keys_of(found, proxy_key) | set(refs) if ok else set()
                if future.abandoned:  # not what another owner here holds (an upstream's)
                    mine = {k for k in returned if live_owner(k) is None}
                    self._free(sorted((mine | set(future.input_keys)) - future.foreign_keys))
                else:
                    self._free([k for k in future.input_keys if k not in returned])
                    if returned - future.foreign_keys:
                        result = _owned_results(result, future.foreign_keys)
                        self._keep_referenced(result, found, returned, future)
        finally:
            with self._lock:
                self._pending.discard(future)
            try:
                if cancelled:
                    future.cancel()
                elif not future.done():
                    if exc is not None:
                        future.set_exception(exc)
                    else:
                        future.set_result(result)
            except cf.InvalidStateError:  # cancelled by the caller meanwhile
                pass
            if future.abandoned and self.ownership and not cancelled and exc is None:
                # map() gave up on this future while it ran: free what it returned
                self._free_unread(future)

    def _keep_referenced(self, result: Any, found: list[Proxy[Any]], returned: set[str],
                         future: StoreFuture) -> None:
        """Keep alive, as long as the result, the objects it references below the top.

        Owners at the top level (or one container below) were made by
        ``_owned_results``; an input found deeper, or referenced from inside a stored
        result (``returned`` holds its refs), gets an owner that the proxies holding
        it, and the result's owners, keep alive.
        """
        tops = [p for p in _proxies_in(result) if isinstance(p, OwnedProxy)]
        top_keys = keys_of(list(tops), proxy_key)
        inputs = set(future.input_keys)
        for key in sorted(returned - top_keys - future.foreign_keys):
            owner = own_key(self.store, key) if key in inputs else live_owner(key)
            if owner is None:
                continue
            for proxy in found:
                if proxy_key(proxy) == key and not isinstance(proxy, OwnedProxy):
                    keep_alive(proxy, owner)
            for top in tops:
                keep_alive(top, owner)

    def _free_unread(self, future: StoreFuture) -> None:
        """Free a result nobody will read (of an abandoned map)."""
        result = future.result()
        found = proxies_in(result)
        for item in found:
            for owner in [*kept_by(item), item]:
                if isinstance(owner, OwnedProxy):
                    owner.free()
        self._free(sorted(keys_of(found, proxy_key) - future.foreign_keys))

    def _free(self, keys: list[str]) -> None:
        self._freer.put(keys)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until the objects of completed tasks are evicted (they are freed in the
        background right after each future completes). False if ``timeout`` passed."""
        return self._freer.flush(timeout)

    def free(self, result: Any) -> None:
        """Free the stored objects behind a result (a proxy or a container of them).

        Owned results are also freed when dropped; this frees them now.
        """
        found = proxies_in(result)
        for item in found:
            for owner in [*kept_by(item), item]:
                if isinstance(owner, OwnedProxy):
                    owner.free()
        keys = sorted(keys_of(found, proxy_key))
        if keys:
            self.store.evict_batch(keys)  # now, as asked

    # -- map and shutdown -------------------------------------------------------------

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like ``Executor.map``: results in order, one element at a time.

        ``chunksize`` > 1 runs that many calls per task. ``buffersize`` bounds the
        number of tasks in flight (submitting lazily as results are consumed). An
        iterator abandoned half-way cancels what has not run and frees what the
        executor stored for the elements it did not yield.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be >= 1")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls: Iterator[tuple[Any, ...]] = zip(*iterables)
        chunks = _chunks(calls, chunksize)

        def submit() -> StoreFuture | None:
            if chunksize == 1:
                args = next(calls, None)
                return None if args is None else self.submit(fn, *args)
            return self._submit_chunk(fn, chunks)

        return self._results(submit, deadline, buffersize, chunked=chunksize > 1)

    def _submit_chunk(
        self, fn: Callable[..., Any], chunks: Iterator[list[tuple[Any, ...]]]
    ) -> StoreFuture | None:
        chunk = next(chunks, None)
        if chunk is None:
            return None
        width = len(chunk[0])
        flat = [a for call in chunk for a in call]
        return self.submit(_Chunk(fn, width), *flat)

    def _results(
        self, submit: Callable[[], StoreFuture | None], deadline: float | None,
        buffersize: int | None, chunked: bool,
    ) -> Iterator[Any]:
        futures: collections.deque[StoreFuture] = collections.deque()
        exhausted = False

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and (buffersize is None or len(futures) < buffersize):
                f = submit()
                if f is None:
                    exhausted = True
                else:
                    futures.append(f)

        fill()
        try:
            while futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                result = futures[0].result(remaining)
                futures.popleft()
                fill()
                if chunked:
                    yield from result
                else:
                    yield result
        finally:
            for f in futures:  # abandoned, timed out or failed: nobody reads these
                f.abandoned = True  # completing, it frees what it stored (_finish)
                if self._engine.cancel_may_drop_results and not f.done():
                    continue
                if not f.cancel() and f.done() and not f.cancelled() and f.exception() is None:
                    self._free_unread(f)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        with self._tasks_lock:
            self._tasks.clear()  # running tasks keep their own wrapper
        with self._lock:
            pending = list(self._pending)
        if cancel_futures:
            for f in pending:
                f.cancel()
        if wait:
            for f in pending:
                try:
                    f.exception()
                except cf.CancelledError:
                    pass
        if wait:
            self.flush()
        if self.close_engine:
            self._engine.shutdown(wait, cancel_futures)
            if not wait and getattr(self._engine, "close_cancels_tasks", False):
                # the engine's tasks ended with it: no completion will come to free
                # what their submissions stored
                for f in pending:
                    if f._claim():
                        self._finish(f, True, None, None)
        else:
            self._engine.release()


class EngineOptions:
    """``StoreExecutor.options(...)``: submit and map with engine options.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec.connectors.local import LocalConnector
    >>> with StoreExecutor(ThreadPoolExecutor(1), Store("eo", LocalConnector())) as ex:
    ...     list(ex.options().map(abs, [-1, -2]))
    [1, 2]
    """

    def __init__(self, executor: StoreExecutor, options: dict[str, Any]) -> None:
        self.executor = executor
        self.engine_options = options

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> StoreFuture:
        return self.executor._submit(fn, args, kwargs, self.engine_options)

    def map(self, fn: Callable[..., Any], *iterables: Any) -> Iterator[Any]:
        return (f.result() for f in [self.submit(fn, *call) for call in zip(*iterables)])


class _Chunk:
    """Runs ``fn`` over a chunk of calls passed flat (so dependencies stay top level)."""

    def __init__(self, fn: Callable[..., Any], width: int) -> None:
        self.fn = fn
        self.width = width
        self.__name__ = f"chunk_{getattr(fn, '__name__', 'call')}"

    def __call__(self, *flat: Any) -> list[Any]:
        w = self.width
        return [self.fn(*flat[i : i + w]) for i in range(0, len(flat), w)] if w else [self.fn()]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Chunk) and other.fn == self.fn and other.width == self.width

    def __hash__(self) -> int:
        return hash((_Chunk, self.width))


def _chunks(calls: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        chunk = [c for _, c in zip(range(size), calls)]
        if not chunk:
            return
        yield chunk
