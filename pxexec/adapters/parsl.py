"""Parsl: run StoreExecutor on a Parsl configuration (ParslPoolExecutor)."""

from __future__ import annotations

import os
import sys
from typing import Any

from pxexec.adapters.base import Engine
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

    def cancel(self, future: Any) -> bool:
        return False  # Parsl cannot cancel a submitted task

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        self.executor.shutdown(wait=wait)
