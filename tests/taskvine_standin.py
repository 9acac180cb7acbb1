"""A faithful stand-in for ndcctools.taskvine.FuturesExecutor (see shared/reference).

It reproduces the behaviour the adapter depends on: tasks run (each in a fresh
python process, from cloudpickled files) only while the caller blocks in
``VineFuture.result()``; done callbacks fire only from ``result()``; the return value
is compared with a sentinel using ``==``; futures are resolved only as top-level
positional arguments; ``map`` returns one future of a list; ``shutdown`` does nothing.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any

import cloudpickle

RESULT_PENDING = "result_pending"

_RUNNER = (
    "import sys, cloudpickle\n"
    "fn, args, kwargs = cloudpickle.load(open(sys.argv[1], 'rb'))\n"
    "try:\n"
    "    out = (True, fn(*args, **kwargs))\n"
    "except BaseException as e:\n"
    "    out = (False, e)\n"
    "cloudpickle.dump(out, open(sys.argv[2], 'wb'))\n"
)


class VineFuture(cf.Future):  # type: ignore[type-arg]
    def __init__(self, executor: FuturesExecutor, fn: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        super().__init__()
        self._executor = executor
        self._task = (fn, args, kwargs)
        self._value: Any = RESULT_PENDING
        self._ok = True
        self._callbacks_pending: list[Any] = []
        executor.submitted += 1

    def add_done_callback(self, fn: Any) -> None:
        self._callbacks_pending.append(fn)  # fired only from result()

    def _run(self) -> None:
        fn, args, kwargs = self._task
        # Futures are resolved only at the top level of the positional arguments.
        args = tuple(a.result() if isinstance(a, VineFuture) else a for a in args)
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "task.pkl"), os.path.join(tmp, "out.pkl")
            with open(src, "wb") as f:
                cloudpickle.dump((fn, args, kwargs), f)
            subprocess.run([sys.executable, "-c", _RUNNER, src, dst], check=True)
            with open(dst, "rb") as f:
                self._ok, self._value = cloudpickle.load(f)
        self._executor.ran += 1

    def result(self, timeout: Any = "wait_forever") -> Any:
        if not self.done():
            self._run()
            # like the real one: the returned value is compared with the sentinel
            # using ==, which raises for numpy arrays ("truth value ... ambiguous")
            if self._value == RESULT_PENDING:
                raise RuntimeError("task produced no result")
            if self._ok:
                self.set_result(self._value)
            else:
                self.set_exception(self._value)
            for callback in self._callbacks_pending:
                callback(self)
            self._callbacks_pending = []
        if not self._ok:
            raise self._value
        return self._value

    def cancel(self) -> bool:
        return False


class FuturePythonTask:
    """What ``FuturesExecutor.future_task`` returns: a task whose resources and
    scheduling are set with TaskVine's ``Task`` setters before ``submit(task)``."""

    def __init__(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.settings: dict[str, Any] = {}

    def set_cores(self, cores: int) -> None:
        self.settings["cores"] = cores

    def set_memory(self, memory: int) -> None:
        self.settings["memory"] = memory

    def set_disk(self, disk: int) -> None:
        self.settings["disk"] = disk

    def set_gpus(self, gpus: int) -> None:
        self.settings["gpus"] = gpus

    def set_retries(self, retries: int) -> None:
        self.settings["retries"] = retries

    def set_priority(self, priority: float) -> None:
        self.settings["priority"] = priority


class FuturesExecutor(cf.Executor):
    def __init__(self, port: int = 9123, batch_type: str = "local", manager: Any = None,
                 manager_host_port: Any = None, manager_name: Any = None,
                 factory_binary: Any = None, worker_binary: Any = None,
                 log_file: str = os.devnull, factory: bool = True, opts: Any = None) -> None:
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.submitted = 0
        self.ran = 0
        self.tasks: list[FuturePythonTask] = []

    def future_task(self, fn: Any, *args: Any, **kwargs: Any) -> FuturePythonTask:
        return FuturePythonTask(fn, args, kwargs)

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> VineFuture:
        if isinstance(fn, FuturePythonTask):  # a prebuilt task
            self.tasks.append(fn)
            return VineFuture(self, fn.fn, fn.args, fn.kwargs)
        return VineFuture(self, fn, args, kwargs)

    def map(self, fn: Any, seq: Any, library_name: Any = None, chunk_size: int = 1) -> Any:  # type: ignore[override]
        items = list(seq)
        return self.submit(lambda xs: [fn(x) for x in xs], items)
