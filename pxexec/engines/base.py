"""The engine interface StoreExecutor talks to, and the concurrent.futures engine."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any

__all__ = ["Engine", "detect_engine", "engine_for"]


class Engine:
    """Thin glue between StoreExecutor and one execution engine.

    ``native_futures``: the engine's futures may be passed as task arguments and
    become dependencies. StoreFuture.result() blocks in ``wait``, which is also what
    makes engines progress that only run tasks while someone waits (TaskVine).

    A new engine subclasses it and overrides what differs; StoreExecutor accepts an
    Engine instance in place of an executor.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> class Logged(Engine):
    ...     name = "logged"
    ...     def submit(self, fn, args, kwargs):
    ...         print("submit", fn.__name__)
    ...         return super().submit(fn, args, kwargs)
    >>> engine = Logged(ThreadPoolExecutor(1))
    >>> engine.submit(abs, (-3,), {}).result()
    submit abs
    3
    """

    name = "concurrent.futures"
    #: the submit options this engine takes (``StoreExecutor.options``); none here
    option_names: frozenset[str] = frozenset()
    native_futures = False
    #: the engine runs a task where its dependencies' results are (Dask): consumers
    #: of a proxied result, which any worker reads as cheaply, are better handed the
    #: proxy than the future (``pxexec.executor.placement``)
    places_near_data = False
    #: the engine delivers a task's exception with the worker's traceback
    keeps_tracebacks = True
    #: futures complete without anyone blocking in ``wait`` (false for TaskVine)
    completes_futures = True
    #: a cancel that succeeds on the client may come after the task ran and stored its
    #: result, and ``discard`` cannot free it: futures nobody will read are then left
    #: to complete and freed, not cancelled
    cancel_may_drop_results = False
    #: shutting the engine down ends its tasks (Dask's Client.close): nothing completes
    #: after ``shutdown(wait=False)``, so StoreExecutor frees what pending tasks stored
    close_cancels_tasks = False
    #: run on the worker with (store, keys) after a task stored its results (None: no
    #: hook; Dask records them to free results whose futures are dropped)
    on_created: Callable[[Any, list[str]], None] | None = None

    def __init__(self, executor: Any) -> None:
        self.executor = executor

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               options: dict[str, Any] | None = None) -> Any:
        return self.executor.submit(fn, *args, **kwargs)

    def check_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` if this engine takes them all, else an ``EngineOptionError``."""
        unknown = sorted(set(options) - self.option_names)
        if unknown:
            from pxexec.errors import EngineOptionError

            takes = (f"it takes {sorted(self.option_names)}" if self.option_names
                     else "it takes none")
            raise EngineOptionError(
                f"The {self.name} engine has no submit option(s) {unknown}: {takes}. "
                "Engine options: Dask workers, resources, retries, priority, key, "
                "allow_other_workers, fifo_timeout; Parsl resources (its "
                "parsl_resource_specification), priority, walltime; TaskVine cores, memory, "
                "disk, gpus, retries, priority. Nothing was submitted."
            )
        return dict(options)

    def is_future(self, obj: Any) -> bool:
        return isinstance(obj, cf.Future)

    def add_done_callback(self, future: Any, callback: Callable[[Any], None],
                          wanted: Callable[[], bool] | None = None) -> None:
        """Call ``callback(future)`` when it is done. An engine may skip the call when
        ``wanted()`` says no at that moment (someone else completes the future)."""
        future.add_done_callback(callback)

    def outcome(self, future: Any) -> tuple[bool, BaseException | None, Any]:
        """(cancelled, exception, result) of a finished engine future."""
        if future.cancelled():
            return True, None, None
        try:
            return False, None, future.result()
        except BaseException as exc:
            return False, exc, None

    def cancel(self, future: Any) -> bool:
        try:
            return bool(future.cancel())
        except Exception:
            return False

    def discard(self, futures: list[Any]) -> None:
        """StoreExecutor will never read these futures' results (cancelled, or left by a
        shutdown that ends their tasks). An engine whose tasks may have stored their
        results already (Dask: the cancel reached the worker after the task ended)
        frees them here; nothing to do where a result reaches the client anyway."""

    def wait(self, future: Any, timeout: float | None) -> tuple[bool, BaseException | None, Any]:
        """Block until ``future`` is done; return its outcome like ``outcome``.

        Raises ``TimeoutError`` when it is not done within ``timeout`` seconds.
        """
        try:
            return False, None, future.result(timeout)
        except (TimeoutError, cf.TimeoutError):
            if not future.done():
                raise
            return self.outcome(future)
        except cf.CancelledError:
            return True, None, None
        except BaseException as exc:
            return False, exc, None

    def held_by(self, owner: Any, future: Any) -> None:
        """``owner`` (a StoreFuture) holds the engine's ``future`` until it is dropped.

        Engines that act when their futures are dropped may use this to choose when.
        """

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=cancel_futures)

    def release(self) -> None:
        """Drop what the adapter started, leaving the engine itself running."""


def engine_for(executor: Any, engine: str | None = None) -> Engine:
    """The adapter for ``executor``: named by ``engine`` or detected from its type.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> engine_for(ThreadPoolExecutor(1)).name
    'concurrent.futures'
    """
    if isinstance(executor, Engine):
        return executor
    name = engine or detect_engine(executor)
    if name == "dask":
        from pxexec.engines.dask import DaskEngine

        return DaskEngine(executor)
    if name == "parsl":
        from pxexec.engines.parsl import ParslEngine

        return ParslEngine(executor)
    if name == "taskvine":
        from pxexec.engines.taskvine import TaskVineEngine

        return TaskVineEngine(executor)
    if name == "concurrent.futures":
        return Engine(executor)
    raise ValueError(
        f"Unknown engine {name!r}: use 'dask', 'parsl', 'taskvine' or 'concurrent.futures'."
    )


def detect_engine(executor: Any) -> str:
    """The name of the engine ``executor`` belongs to, from its type.

    >>> from concurrent.futures import ProcessPoolExecutor
    >>> detect_engine(ProcessPoolExecutor(1))
    'concurrent.futures'
    """
    kind = type(executor)
    # the class or any base: subclasses of an engine's executor (such as the pool
    # pxexec.engines.parsl builds) belong to that engine
    modules = [(c.__module__, c.__name__) for c in kind.__mro__]
    if any(m.startswith("distributed") for m, _ in modules):
        return "dask"
    if any(m.startswith("parsl") for m, _ in modules):
        return "parsl"
    if any("taskvine" in m and n == "FuturesExecutor" for m, n in modules):
        return "taskvine"
    if callable(getattr(executor, "submit", None)):
        return "concurrent.futures"
    raise TypeError(
        f"{kind.__qualname__} is not an executor: StoreExecutor wraps an object with a "
        "concurrent.futures-style submit() (a Dask Client, a Parsl executor, TaskVine's "
        "FuturesExecutor, a process or thread pool)."
    )
