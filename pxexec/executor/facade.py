"""StoreExecutor: any concurrent.futures-style engine, with large data passed by proxy.

The facade: ``submit`` prepares the arguments (``pxexec.executor.arguments``, recorded in a
``pxexec.executor.ledger.Ledger``), launches the task on the engine (now, or after its
dependencies: ``pxexec.executor.dependencies``) and completes the StoreFuture once
(``pxexec.executor.future``: the completion race; ``pxexec.executor.results``: what is freed, what
is owned); freeing runs in the background (``pxexec.executor.freer``); ``map`` is written
on ``submit`` (``pxexec.executor.mapping``). Which thread runs what is written in
``pxexec.executor.ledger`` and ``pxexec.executor.future``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, runtime_checkable

from pxexec.engines.base import Engine, engine_for
from pxexec.executor.arguments import Arguments
from pxexec.executor.dependencies import submit_after
from pxexec.executor.freer import Freer
from pxexec.executor.future import Outcome, StoreFuture
from pxexec.executor.ledger import Ledger, proxy_key
from pxexec.executor.mapping import Chunk, map_on_submit
from pxexec.executor.placement import Placement
from pxexec.executor.results import free_owners, settle, unread
from pxexec.executor.worker import Boxed, ProxyTask
from pxexec.policies.apply import DEFAULT_THRESHOLD, default_policy
from pxexec.store.store import Store

__all__ = ["DEFAULT_THRESHOLD", "EngineOptions", "ExecutorLike", "StoreExecutor",
           "StoreFuture", "proxy_key"]

#: how many functions' task wrappers a StoreExecutor keeps for reuse
_RECENT_TASKS = 32


@runtime_checkable
class ExecutorLike(Protocol):
    """What StoreExecutor wraps: anything with a concurrent.futures-style ``submit``
    (a Dask ``Client``, a Parsl executor, TaskVine's ``FuturesExecutor``, a pool), or
    an ``Engine``.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> isinstance(ThreadPoolExecutor(1), ExecutorLike), isinstance(object(), ExecutorLike)
    (True, False)
    """

    def submit(self, *args: Any, **kwargs: Any) -> Any: ...


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
        executor: ExecutorLike | Engine,
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
            should_proxy = default_policy()
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
        #: where consumers of proxied results run (engines that place by data: Dask)
        self._placement = Placement(self._engine, store.connector)
        self._arguments = Arguments(
            store, should_proxy, containers=proxy_containers, hold_inputs=ownership,
            is_future=self._engine.is_future, native_futures=self._engine.native_futures,
            dependency=self._dependency if self._placement.active else None,
        )
        #: one lock for this executor's own tables (the task wrappers and the pending
        #: futures); never held while calling the engine or the store
        self._lock = threading.Lock()
        #: recent wrappers, one per function (engines that cache per function stay
        #: small); bounded, so that callables are not kept once their tasks are done
        self._tasks: collections.OrderedDict[Any, ProxyTask] = collections.OrderedDict()
        #: pending futures (kept alive until they complete) and their ledgers
        self._pending: dict[StoreFuture, Ledger] = {}
        #: every future's ledger, as long as the future lives (the user holds it)
        self._ledgers: weakref.WeakKeyDictionary[StoreFuture, Ledger] = (
            weakref.WeakKeyDictionary())
        self._shutdown = False
        self._freer = Freer(store)

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
        future = StoreFuture(self._engine, self._on_engine_done)
        ledger = Ledger()
        ledger.fn = fn
        try:
            new_args, new_kwargs = self._arguments.all(args, kwargs, ledger)
        except BaseException:
            self._free(ledger.input_keys)
            raise
        ledger.fed = ledger.reads_stored()
        with self._lock:
            self._pending[future] = ledger
            self._ledgers[future] = ledger
        native = self._engine.native_futures
        # futures to wait for here: every Future on an engine that takes none; on one
        # that does, the StoreFutures it cannot be given yet (pxexec.executor.placement)
        deps = [a for a in (*new_args, *new_kwargs.values()) if isinstance(a, cf.Future)
                and (not native or type(a) is StoreFuture)]
        if deps:
            def launch(a: tuple[Any, ...], k: dict[str, Any]) -> None:
                self._launch(future, fn, a, k, options)

            def fail(error: BaseException | None) -> None:
                if future.claim():
                    self._complete(future, (error is None, error, None))

            submit_after(deps, future, new_args, new_kwargs, launch, fail,
                         self._placement.native())
            return future
        try:
            self._launch(future, fn, new_args, new_kwargs, options)
        except BaseException:
            self._free(ledger.input_keys)
            with self._lock:
                self._pending.pop(future, None)
            raise
        return future

    def _dependency(self, upstream: StoreFuture) -> Any:
        """What the StoreFuture argument ``upstream`` becomes (see ``Placement``)."""
        ledger = self._ledgers.get(upstream)
        return self._placement.argument(upstream, ledger)

    def _task(self, fn: Callable[..., Any]) -> ProxyTask:
        # One wrapper per function: engines that cache per function (Parsl) stay small.
        try:
            with self._lock:
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
                containers=self.proxy_containers or isinstance(fn, Chunk),
                box_result=True,
                note_traceback=not self._engine.keeps_tracebacks,
                on_created=self._engine.on_created,
            )
            try:
                with self._lock:
                    self._tasks[fn] = task
                    while len(self._tasks) > _RECENT_TASKS:
                        self._tasks.popitem(last=False)
            except TypeError:
                pass
        return task

    def _launch(
        self, future: StoreFuture, fn: Callable[..., Any], args: tuple[Any, ...],
        kwargs: dict[str, Any], options: dict[str, Any] | None,
    ) -> None:
        engine_future = self._engine.submit(self._task(fn), args, kwargs, options)
        future.engine_future = engine_future
        self._engine.held_by(future, engine_future)
        # A weak reference: an engine that holds callbacks for a while must not keep a
        # completed future (and its owned result) alive. Pending futures stay alive
        # in self._pending until they complete.
        ref = weakref.ref(future)

        def on_done(ef: Any) -> None:
            f = ref()
            # a thread waiting in result() completes the future itself, with the
            # outcome it already holds; fetching it again here would only add latency
            if f is not None and not f.driven():
                self._on_engine_done(f, ef, None)

        def wanted() -> bool:  # a thread waiting in result() completes it itself
            f = ref()
            return f is not None and not f.driven() and not f.done()

        self._engine.add_done_callback(engine_future, on_done, wanted)

    # -- completion (the race's winner only: see pxexec.executor.future) ------------------------

    def _on_engine_done(self, future: StoreFuture, engine_future: Any,
                        outcome: Outcome | None) -> None:
        if not future.claim():
            return
        self._complete(future, outcome or self._engine.outcome(engine_future))

    def _complete(self, future: StoreFuture, outcome: Outcome) -> None:
        cancelled, exc, result = outcome
        refs: tuple[str, ...] = ()
        if type(result) is Boxed:
            result, refs = result.value, result.refs
        with self._lock:
            ledger = self._pending.pop(future, None) or self._ledgers.get(future, Ledger())
        ok = not cancelled and exc is None
        if ok:
            self._placement.learn(ledger, result)
        # Inputs are freed before the future completes: once result() returns, the
        # store holds only what the caller owns.
        try:
            ledger.release()
            if self.ownership:
                if ok:
                    result, to_free = settle(self.store, ledger, result, refs)
                elif ledger.abandoned:
                    to_free = sorted(set(ledger.input_keys) - ledger.foreign_keys)
                else:
                    to_free = list(ledger.input_keys)
                self._free(to_free)
        finally:
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
            if ledger.abandoned and self.ownership and ok:
                # map() gave up on this future while it ran: free what it returned
                self._free_unread(future, ledger)

    def _free_unread(self, future: StoreFuture, ledger: Ledger) -> None:
        """Free a result nobody will read (of an abandoned map)."""
        self._free(unread(ledger, future.result()))

    def _abandon(self, future: StoreFuture) -> None:
        """``map`` gave up on ``future``: whatever it stored is freed."""
        ledger = self._ledgers.get(future)
        if ledger is None:
            return
        ledger.abandoned = True  # completing, it frees what it stored (_complete)
        if self._engine.cancel_may_drop_results and not future.done():
            return
        if (not future.cancel() and future.done() and not future.cancelled()
                and future.exception() is None):
            self._free_unread(future, ledger)

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
        keys = free_owners(result)
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
        return map_on_submit(self.submit, self._abandon, fn, iterables, timeout=timeout,
                             chunksize=chunksize, buffersize=buffersize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        with self._lock:
            self._tasks.clear()  # running tasks keep their own wrapper
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
            unread: list[StoreFuture] = []
            if not wait and self._engine.close_cancels_tasks:
                # The engine's tasks end with it: no completion will come to free what
                # their submissions stored. Claimed first, so that none completes
                # meanwhile: the engine frees what their tasks stored (``discard``).
                unread = [f for f in pending if f.claim()]
                self._engine.discard([f.engine_future for f in unread
                                      if f.engine_future is not None])
            self._engine.shutdown(wait, cancel_futures)
            for f in unread:
                self._complete(f, (True, None, None))
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

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: float | None = None, chunksize: int = 1,
            buffersize: int | None = None) -> Iterator[Any]:
        """``StoreExecutor.map`` with these engine options."""
        return map_on_submit(self.submit, self.executor._abandon, fn, iterables,
                             timeout=timeout, chunksize=chunksize, buffersize=buffersize)
