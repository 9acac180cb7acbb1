"""TaskVine: StoreExecutor on ``ndcctools.taskvine.FuturesExecutor``.

TaskVine's futures behave unlike the stdlib's, and the adapter hides that:

- tasks progress only while someone blocks in ``VineFuture.result()``: StoreFuture's
  ``result()``/``exception()`` drive the engine, and ``shutdown(wait=True)`` waits on
  every pending task (the stdlib ``wait``/``as_completed`` cannot drive it);
- ``result()`` compares the return value with a sentinel using ``==``, which fails
  for numpy arrays and for proxies: results travel in an opaque box;
- futures are dependencies only as top-level positional arguments: a future in a
  keyword argument or inside a container is refused with a clear error;
- ``FuturesExecutor.map`` returns one future of a list; StoreExecutor.map submits
  one task per element instead.

The worker runs tasks with its own ``python3``, which needs cloudpickle and pxexec.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any

from pxexec.adapters.base import Engine
from pxexec.errors import MissingDependencyError

__all__ = ["TaskVineEngine", "futures_executor"]

_HOW = (
    "ndcctools is not on PyPI: install CCTools (e.g. conda install -c conda-forge "
    "ndcctools) in the manager's and the workers' environment."
)


def futures_executor(**options: Any) -> Any:
    """A TaskVine ``FuturesExecutor(**options)``, with a clear error when absent.

    >>> from pxexec import Store, StoreExecutor
    >>> from pxexec.connectors import connector_from_url
    >>> vine = futures_executor(port=9123, factory=False)        # doctest: +SKIP
    >>> store = Store("vine", connector_from_url("redis://manager:6379/0"))
    >>> with StoreExecutor(vine, store) as ex:                  # doctest: +SKIP
    ...     print(ex.submit(sum, [1, 2]).result())
    3
    """
    try:
        from ndcctools.taskvine import FuturesExecutor
    except ImportError as exc:
        raise MissingDependencyError("ndcctools", "taskvine", "The TaskVine adapter", _HOW) from exc
    return FuturesExecutor(**options)


def _has_future(value: Any) -> bool:
    if isinstance(value, cf.Future):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(isinstance(v, cf.Future) for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, cf.Future) for v in value.values())
    return False


class TaskVineEngine(Engine):
    """StoreExecutor's glue for TaskVine's FuturesExecutor (see the module doc).

    >>> TaskVineEngine.native_futures, TaskVineEngine.keeps_tracebacks
    (True, False)
    """

    name = "taskvine"
    native_futures = True
    keeps_tracebacks = False  # the worker traceback travels as a note on the exception

    option_names = frozenset({"cores", "memory", "disk", "gpus", "retries", "priority"})

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               options: dict[str, Any] | None = None) -> Any:
        nested = [a for a in args if not isinstance(a, cf.Future) and _has_future(a)]
        if nested or any(_has_future(v) for v in kwargs.values()):
            raise ValueError(
                "TaskVine resolves futures only when they are top-level positional "
                "arguments; pass each future as its own positional argument (not in a "
                "keyword argument, list, tuple or dict)."
            )
        if not options:
            return self.executor.submit(fn, *args, **kwargs)
        # TaskVine's options are setters of a prebuilt task: task.set_cores(2), ...
        task = self.executor.future_task(fn, *args, **kwargs)
        for name, value in options.items():
            getattr(task, f"set_{name}")(value)
        return self.executor.submit(task)

    def wait(self, future: Any, timeout: float | None) -> tuple[bool, BaseException | None, Any]:
        try:
            value = future.result() if timeout is None else future.result(timeout=timeout)
        except BaseException as exc:
            if isinstance(exc, (TimeoutError, cf.TimeoutError)) and not future.done():
                raise
            return False, exc, None
        return False, None, value

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        # FuturesExecutor.shutdown does nothing; the manager is cleaned up on __del__.
        self.executor.shutdown()
