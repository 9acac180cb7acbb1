"""Parsl: run StoreExecutor on a Parsl configuration (ParslPoolExecutor)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from pxexec.engines.base import Engine
from pxexec.errors import MissingDependencyError

__all__ = ["ParslEngine", "executor_from_config"]


def _parsl() -> Any:
    try:
        import parsl
        from parsl.concurrent import ParslPoolExecutor
    except ImportError as exc:
        raise MissingDependencyError("parsl", "parsl", "The Parsl adapter") from exc
    return parsl, ParslPoolExecutor


def executor_from_config(config: Any, *, executors: str | list[str] = "all") -> Any:
    """A ``ParslPoolExecutor`` running ``config`` (a ``parsl.config.Config``).

    It owns a DataFlowKernel of its own (not Parsl's global one, so several can
    coexist); its ``shutdown`` (or StoreExecutor's) cleans that kernel up.

    >>> import tempfile
    >>> from parsl.config import Config
    >>> from parsl.executors.threads import ThreadPoolExecutor
    >>> config = Config(executors=[ThreadPoolExecutor(label="threads", max_threads=2)],
    ...                 run_dir=tempfile.mkdtemp(), initialize_logging=False)
    >>> pool = executor_from_config(config)
    >>> pool.submit(sum, [1, 2, 3]).result()
    6
    >>> pool.shutdown()
    """
    _, pool = _parsl()
    from parsl.dataflow.dflow import DataFlowKernel

    # Parsl starts helper programs (interchange.py, process_worker_pool.py) by name:
    # make sure this interpreter's scripts directory is searched first.
    scripts = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if scripts not in path.split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + path

    class OwnedParslPool(pool):  # type: ignore[misc, valid-type]
        def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
            dfk = self._dfk
            super().shutdown(wait=wait, cancel_futures=cancel_futures)
            if dfk is not None:
                dfk.cleanup()

    return OwnedParslPool(dfk=DataFlowKernel(config), executors=executors)


class ParslEngine(Engine):
    """StoreExecutor's glue for Parsl executors (chosen automatically).

    Parsl AppFutures are ``concurrent.futures.Future`` objects and may be arguments:
    Parsl starts a task once the futures it takes are done.

    >>> ParslEngine.native_futures
    True
    """

    name = "parsl"
    native_futures = True
    option_names = frozenset({"resources", "priority", "walltime"})

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               options: dict[str, Any] | None = None) -> Any:
        if not options:
            return self.executor.submit(fn, *args, **kwargs)
        # Parsl takes these as keywords of the app call (which it also hands to the
        # function): the task wrapper drops them again before the function runs.
        spec = dict(options.get("resources") or {})
        if "priority" in options:
            spec["priority"] = options["priority"]
        extra: dict[str, Any] = {}
        if spec:
            extra["parsl_resource_specification"] = spec
        if options.get("walltime") is not None:
            extra["walltime"] = options["walltime"]
        clash = sorted(set(extra) & set(kwargs))
        if clash:
            from pxexec.errors import EngineOptionError

            raise EngineOptionError(
                f"The function's own keyword(s) {clash} are Parsl's names for engine "
                "options; rename them, or give the option only through ex.options()."
            )
        return self.executor.submit(_without(fn, tuple(sorted(extra))), *args,
                                    **kwargs, **extra)

    def cancel(self, future: Any) -> bool:
        return False  # Parsl cannot cancel a submitted task

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self.executor.shutdown(wait=wait)


class _Without:
    """Calls ``fn`` without the keywords Parsl passes for itself (hashable, so that
    Parsl's app cache keeps one app per function and option set)."""

    def __init__(self, fn: Callable[..., Any], names: tuple[str, ...]) -> None:
        self.fn = fn
        self.names = names
        self.__name__ = getattr(fn, "__name__", "task")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        for name in self.names:
            kwargs.pop(name, None)
        return self.fn(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Without) and (other.fn, other.names) == (self.fn, self.names)

    def __hash__(self) -> int:
        return hash((self.fn, self.names))


_WITHOUT: dict[tuple[Any, tuple[str, ...]], _Without] = {}


def _without(fn: Callable[..., Any], names: tuple[str, ...]) -> _Without:
    try:
        return _WITHOUT.setdefault((fn, names), _Without(fn, names))
    except TypeError:  # unhashable callable
        return _Without(fn, names)
