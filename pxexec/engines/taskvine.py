"""TaskVine: StoreExecutor on ``ndcctools.taskvine.FuturesExecutor``.

TaskVine's futures differ from the stdlib's in ways the adapter hides (the limits
that stay are in docs/engines/taskvine.md):

- tasks progress only while someone waits, and TaskVine waits in whole seconds
  (a float timeout is a ``TypeError`` in its C binding): the adapter waits in
  one-second slices, so a timeout is rounded up to whole seconds;
- ``VineFuture.done()``/``running()``/``cancelled()`` raise ``AttributeError`` and
  ``cancel()`` returns None: the adapter never calls the first three and hands
  StoreExecutor a ``VineTask``, a stdlib future it completes itself;
- a failed task's exception stays in the executor's task table for ever: the
  adapter hands out copies without a traceback, so no caller's frames are pinned;
- a task that failed upstream is passed to its dependents as a value: on the
  worker ``_VineCall`` returns that failure instead of calling the function, and
  on the client a dependent fails with the upstream's exception; upstream tasks
  are completed on the client when a dependent completes, so their inputs and
  unread results are freed;
- ``Manager(port=N)`` exports ``TCP_LOW_PORT``/``TCP_HIGH_PORT``, which make any
  worker started from this process fail: they are removed again (and a factory
  ``FuturesExecutor`` started with them is restarted); ``FuturesExecutor(factory=True)``
  fails unless given a manager address: ``futures_executor`` starts the factory on
  the executor's own manager;
- ``cancel()`` cancels the task and its dependents;
- ``shutdown()`` is a no-op in TaskVine: the adapter stops the factory, the
  workers and the manager, and refuses new tasks;
- futures are dependencies only as top-level positional arguments (anything else
  is refused with a clear error), and ``StoreExecutor.map`` submits one task per
  element or chunk (``FuturesExecutor.map`` returns one future of a list).

The worker runs tasks with its own ``python3``, which needs cloudpickle and pxexec.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from typing import Any

from pxexec.engines.base import Engine
from pxexec.engines.taskvine_setup import (
    PORT_VARIABLES,
    clear_port_environment,
    close_futures_executor,
    executor_from_module,
    futures_executor,
    restart_factory,
)
from pxexec.errors import TaskOutputError

__all__ = ["PORT_VARIABLES", "TaskVineEngine", "VineTask", "clear_port_environment",
           "close_futures_executor", "executor_from_module", "futures_executor"]

log = logging.getLogger("pxexec")

_SLICE = 1  # seconds per wait: TaskVine's wait takes whole seconds
_FINISHED = "FINISHED"  # VineFuture._state once result() has the task's output


class _Failed:
    """A task's exception travelling as its output (so it never becomes a value)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Failed, (self.error,))


def _picklable(exc: BaseException) -> BaseException:
    try:
        import cloudpickle

        cloudpickle.dumps(exc)
        return exc
    except Exception as problem:
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return RuntimeError(
            f"The task raised {type(exc).__qualname__}: {exc} (the exception could not be "
            f"pickled: {problem}). Worker traceback:\n{text}"
        )


class _VineCall:
    """Runs on the worker: the task, with every outcome returned as its output.

    TaskVine's wrapper catches only ``Exception`` and passes a failed upstream's
    exception to its dependents as an argument; here a failed dependency makes
    this task fail with the same exception without calling ``fn``, and any
    ``BaseException`` (``SystemExit`` too) becomes the task's outcome.
    """

    __slots__ = ("__name__", "deps", "fn")

    def __init__(self, fn: Callable[..., Any], deps: tuple[int, ...]) -> None:
        self.fn = fn
        self.deps = deps
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for i in self.deps:
            arg = args[i]
            if type(arg) is _Failed:
                return arg
            if isinstance(arg, BaseException):  # a failure as TaskVine passes it on
                return _Failed(arg)
        try:
            return self.fn(*args, **kwargs)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                notes = [*getattr(exc, "__notes__", []),
                         "Worker traceback:\n" + traceback.format_exc()]
                try:
                    exc.__notes__ = notes
                except AttributeError:
                    pass
            return _Failed(_picklable(exc))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_VineCall, (self.fn, self.deps))


def _detached(exc: BaseException) -> BaseException:
    """A copy of ``exc`` without traceback, cause or context (nothing that pins frames).

    Built from the exception's own ``__reduce_ex__``, as pickle would (``copy.copy``
    goes through ``copyreg``, where some libraries register picklers that skip
    ``__init__``); the original is returned, traceback dropped, if that fails.
    """
    exc.__traceback__ = None
    try:
        reduced = exc.__reduce_ex__(4)
        assert isinstance(reduced, tuple)
        twin = reduced[0](*reduced[1])
        state = reduced[2] if len(reduced) > 2 else None
        if isinstance(state, dict):
            twin.__dict__.update(state)
    except Exception:
        return exc
    if type(twin) is not type(exc):
        return exc
    twin.__traceback__ = None
    return twin  # type: ignore[no-any-return]


class VineTask(cf.Future):  # type: ignore[type-arg]
    """One TaskVine task as StoreExecutor sees it: a stdlib future the adapter completes.

    ``vine_future`` is TaskVine's ``VineFuture`` (None when the task was never sent
    because a dependency had already failed); ``upstream`` are the tasks whose
    outputs it reads.

    >>> task = VineTask(None, [])
    >>> task.done(), task.task_id, task.failure()
    (False, None, None)
    """

    def __init__(self, vine_future: Any, upstream: list[VineTask]) -> None:
        super().__init__()
        self.vine_future = vine_future
        self.upstream = upstream
        self.downstream: weakref.WeakSet[VineTask] = weakref.WeakSet()

    @property
    def task_id(self) -> Any:
        task = getattr(self.vine_future, "_task", None)
        return getattr(task, "id", None)

    def failure(self) -> BaseException | None:
        """The exception a dependent inherits (None while pending or after success)."""
        if not self.done():
            return None
        if self.cancelled():
            return cf.CancelledError(f"TaskVine task {self.task_id} was cancelled.")
        return self.exception()


class TaskVineEngine(Engine):
    """StoreExecutor's glue for TaskVine's FuturesExecutor (see the module doc).

    >>> TaskVineEngine.native_futures, TaskVineEngine.keeps_tracebacks
    (True, False)
    """

    name = "taskvine"
    native_futures = True
    keeps_tracebacks = False  # the worker traceback travels as a note on the exception
    completes_futures = False  # tasks progress only while someone blocks in result()

    def __init__(self, executor: Any) -> None:
        super().__init__(executor)
        self._lock = threading.RLock()  # the manager is not thread-safe
        self._closed = False
        self._live: weakref.WeakSet[VineTask] = weakref.WeakSet()
        if clear_port_environment(executor):
            # FuturesExecutor(factory=True) started its factory with the variables set
            restart_factory(executor)

    # -- submission -------------------------------------------------------------------

    option_names = frozenset({"cores", "memory", "disk", "gpus", "retries", "priority"})

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               options: dict[str, Any] | None = None) -> Any:
        if self._closed:
            raise RuntimeError(
                "cannot schedule new futures after shutdown: this TaskVine executor was shut "
                "down (its manager and workers are stopped). Create a new FuturesExecutor."
            )
        nested = [a for a in args if not isinstance(a, cf.Future) and _has_future(a)]
        if nested or any(_has_future(v) for v in kwargs.values()):
            raise ValueError(
                "TaskVine resolves futures only when they are top-level positional "
                "arguments; pass each future as its own positional argument (not in a "
                "keyword argument, list, tuple or dict)."
            )
        upstream: list[VineTask] = []
        deps: list[int] = []
        sent: list[Any] = []
        for i, arg in enumerate(args):
            if isinstance(arg, VineTask):
                upstream.append(arg)
                arg = arg.vine_future
            if isinstance(arg, cf.Future):
                deps.append(i)
            sent.append(arg)
        with self._lock:
            if any(u.failure() is not None for u in upstream):
                task = VineTask(None, upstream)  # never sent: it could only fail
                self._settle(task, None, None)
                return task
            call = _VineCall(fn, tuple(deps))
            if options:
                # TaskVine's options are setters of a prebuilt task: task.set_cores(2), ...
                prebuilt = self.executor.future_task(call, *sent, **kwargs)
                for name, value in options.items():
                    getattr(prebuilt, f"set_{name}")(value)
                vine_future = self.executor.submit(prebuilt)
            else:
                vine_future = self.executor.submit(call, *sent, **kwargs)
            task = VineTask(vine_future, upstream)
            for u in upstream:
                u.downstream.add(task)
            self._live.add(task)
        return task

    # -- waiting ----------------------------------------------------------------------

    def wait(self, future: Any, timeout: float | None) -> tuple[bool, BaseException | None, Any]:
        if not isinstance(future, VineTask):  # a VineFuture the caller made
            return super().wait(future, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        first = True
        while not future.done():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0 and not first:
                raise TimeoutError(
                    f"TaskVine task {future.task_id} did not finish within {timeout} s "
                    "(TaskVine waits in whole seconds)."
                )
            first = False
            if remaining is None:
                seconds = _SLICE
            else:
                seconds = 0 if remaining <= 0 else min(_SLICE, max(1, math.ceil(remaining)))
            with self._lock:
                if not future.done() and not self._closed:
                    self._fetch(future, seconds)
            if self._closed and not future.done():
                return True, None, None  # shut down meanwhile: it never ran
        return self.outcome(future)

    def _fetch(self, task: VineTask, seconds: int, chain: bool = True) -> None:
        """Wait up to ``seconds`` for ``task``; complete it if it finished (lock held)."""
        vine_future = task.vine_future
        try:
            value = vine_future.result(timeout=seconds)
        except BaseException as exc:
            if getattr(vine_future, "_state", None) != _FINISHED:
                if isinstance(exc, TimeoutError):
                    return
                raise  # a binding error: it is not the task's outcome; the task stays
            self._complete(task, None, self._output_error(task, exc), chain)
            return
        if type(value) is _Failed:
            self._complete(task, None, _detached(value.error), chain)
        else:
            self._complete(task, value, None, chain)

    def _output_error(self, task: VineTask, exc: BaseException) -> BaseException:
        """What a failure to load a task's output means (TaskVine says ``EOFError``)."""
        exc.__traceback__ = None  # the executor's task table keeps it for ever
        vine_task = getattr(task.vine_future, "_task", None)
        output = str(getattr(vine_task, "std_output", None) or "").strip()
        status = getattr(vine_task, "result", None)
        tail = output[-2000:]
        return TaskOutputError(
            f"TaskVine task {task.task_id} produced no result ({type(exc).__name__}: {exc}; "
            f"TaskVine status {status!r}). The worker's python3 could not unpickle the task "
            "(pxexec, cloudpickle or the function's module is missing there: install them or "
            "export PYTHONPATH to the workers), the task was killed or left the interpreter "
            "abruptly (os._exit, out of memory), or its result could not be pickled."
            + (f" The task's output ends with:\n{tail}" if tail else ""),
            tail,
        )

    def _complete(self, task: VineTask, value: Any, exc: BaseException | None,
                  chain: bool) -> None:
        if chain:
            self._complete_upstream(task)
        self._settle(task, value, exc)

    def _settle(self, task: VineTask, value: Any, exc: BaseException | None) -> None:
        """Complete ``task``: failed or cancelled like its first failed upstream, if any."""
        self._live.discard(task)
        for upstream in task.upstream:
            if upstream.cancelled():
                task.cancel()
                return
            inherited = upstream.failure()
            if inherited is not None:
                value, exc = None, inherited
                break
        if exc is not None:
            task.set_exception(exc)
        else:
            task.set_result(value)

    def _complete_upstream(self, task: VineTask) -> None:
        """Complete every unfinished task ``task`` read from, oldest first (no recursion).

        They finished on the workers before ``task`` ran, but TaskVine passes their
        outputs worker to worker and never tells the client.
        """
        order: list[VineTask] = []
        seen: set[int] = set()
        stack = [(u, False) for u in task.upstream]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen or node.done():
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((u, False) for u in node.upstream)
        for node in order:
            if not node.done():
                self._fetch(node, 0, chain=False)

    # -- outcome, cancel, shutdown ----------------------------------------------------

    def cancel(self, future: Any) -> bool:
        """Cancel a task that has not finished, and the tasks that depend on it.

        TaskVine cancels running tasks too; its ``cancel()`` returns None.
        """
        if not isinstance(future, VineTask):
            return super().cancel(future)
        with self._lock:
            if future.done():
                return future.cancelled()
            stack = [future]
            while stack:
                task = stack.pop()
                if task.done():
                    continue
                if task.vine_future is not None and not self._closed:
                    try:
                        task.vine_future.cancel()
                    except Exception as exc:
                        log.warning("pxexec: TaskVine could not cancel task %s: %s",
                                    task.task_id, exc)
                self._live.discard(task)
                stack.extend(task.downstream)
                task.cancel()
        return True

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        """Stop the factory, the workers and the manager; refuse new tasks.

        Tasks still pending (``wait=False``) are cancelled: nothing can run them.
        """
        with self._lock:
            if self._closed:
                return
            for task in list(self._live):
                self.cancel(task)
            self._closed = True
            close_futures_executor(self.executor)


def _has_future(value: Any) -> bool:
    if isinstance(value, cf.Future):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(isinstance(v, cf.Future) for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, cf.Future) for v in value.values())
    return False
