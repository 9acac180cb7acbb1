"""A stand-in for ``ndcctools.taskvine`` that behaves like the real one (shared/reference).

It reproduces what the adapter has to cope with (each point observed on the real
``FuturesExecutor``, cctools 8.0 development and 7.17.1):

- ``Manager(port=N)`` listens on a real socket and exports ``TCP_LOW_PORT`` and
  ``TCP_HIGH_PORT``; a worker started from a process with both set to one port
  cannot bind its transfer port and never runs a task (nothing reaches the manager);
- ``FuturesExecutor(factory=True)`` hands the factory its own ``manager`` argument:
  without ``manager_host_port``/``manager_name`` that is a ``ValueError``; a
  ``Factory(batch_type, manager=ex.manager)`` works. A task takes a whole worker;
- tasks run only while the caller waits with a timeout of at least one second
  (``result()``); a wait dispatches every ready task. Each runs in a fresh python
  process in a sandbox directory, from cloudpickled files written at ``submit()``,
  with the worker's environment; only ``Exception`` is caught, and a task that
  cannot be unpickled or exits otherwise leaves no output: ``result()`` raises
  ``EOFError``. A task returning an ``Exception`` has it raised;
- ``result(timeout)`` takes an int (a float is a ``TypeError``, 0 only looks);
  ``exception(timeout)`` ignores the timeout; callbacks fire only from ``result()``;
  the value is compared with a sentinel using ``==`` (numpy arrays fail);
- ``done()``/``running()``/``cancelled()`` raise ``AttributeError``; ``cancel()``
  returns None, really cancels, and a later ``result()`` raises ``EOFError``;
- a future is a dependency only as a top-level positional argument: it becomes the
  upstream's output file on the worker (a failed upstream's exception object
  becomes the argument) and the upstream is never completed on the client; in a
  keyword argument or a container it cannot be pickled (``TypeError``);
- ``map`` asserts a Sequence, makes one task per chunk plus a gather task, and
  takes a second positional argument as a library name;
- ``shutdown()`` does nothing; the task table keeps every task and its output
  (exceptions included) for ever; the manager is freed only in ``__del__``.

``workers`` (the number of tasks running right now) and ``ran`` (tasks started)
on the executor let tests check laziness.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures._base import CANCELLED, FINISHED, PENDING
from functools import partial
from typing import Any

import cloudpickle

RESULT_PENDING = "result_pending"
WAIT_FOREVER = -1
_MANAGERS: weakref.WeakValueDictionary[int, Manager] = weakref.WeakValueDictionary()

# What the worker runs for each task: load the function and the arguments, read
# dependency outputs from their files, catch Exception only, write the output.
_TASK_SCRIPT = r"""
import sys
import cloudpickle

function_path, arguments_path, output_path = sys.argv[1:4]
with open(function_path, "rb") as f:
    function = cloudpickle.load(f)
with open(arguments_path, "rb") as f:
    args, kwargs = cloudpickle.load(f)

def load(arg):
    if isinstance(arg, dict) and "VineFutureFile" in arg:
        with open(arg["VineFutureFile"], "rb") as f:
            return cloudpickle.load(f)
    return arg

args = [load(a) for a in args]
failure = None
try:
    print(args, kwargs)
    value = function(*args, **kwargs)
except Exception as exc:
    value = failure = exc
finally:
    with open(output_path, "wb") as f:
        cloudpickle.dump(value, f)  # a NameError when a BaseException left early
if failure is not None:
    raise failure
"""


def _no_task_state() -> None:
    raise AttributeError("module 'ndcctools.taskvine.cvine' has no attribute 'vine_task_state'")


class _Worker:
    """A worker as started from this process: it inherits the environment now."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        low, high = self.env.get("TCP_LOW_PORT"), self.env.get("TCP_HIGH_PORT")
        # the real worker logs "unable to bind transfer port" and never runs a task
        self.can_bind = not (low is not None and low == high)
        self.task: _Task | None = None



def _recorded(setting: str) -> Callable[[Any, Any], None]:
    """A TaskVine Task setter that records what it was given in ``settings``."""

    def setter(self: Any, value: Any) -> None:
        self.settings[setting] = value

    setter.__name__ = f"set_{setting}"
    return setter

class _Task:
    def __init__(self, manager: Manager, fn: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        manager._next_id += 1
        self.id = manager._next_id
        self._manager = manager
        self._dir = os.path.join(manager.staging_directory, f"task-{self.id}")
        os.makedirs(self._dir)
        self.output_path = os.path.join(self._dir, "output")
        self.upstream: list[_Task] = []
        marked = []
        for arg in args:
            if isinstance(arg, VineFuture):  # only at the top level
                self.upstream.append(arg._task)
                marked.append({"VineFutureFile": arg._task.output_path})
            else:
                marked.append(arg)
        # pickled now: later changes are not seen, errors come at submit
        with open(os.path.join(self._dir, "function"), "wb") as f:
            cloudpickle.dump(fn, f)
        with open(os.path.join(self._dir, "arguments"), "wb") as f:
            cloudpickle.dump((marked, kwargs), f)
        self.state = "pending"  # pending, running, complete
        self.process: subprocess.Popen[bytes] | None = None
        self.std_output = ""
        self.result = "unknown"
        self.exit_code: int | None = None
        self._output: Any = None
        self._output_loaded = False
        self._retrieved = False
        self._future = VineFuture(self)
        self.settings: dict[str, Any] = {}  # what TaskVine's Task setters were given

    # TaskVine's Task setters (resources and scheduling), recorded for the tests
    set_cores = _recorded("cores")
    set_memory = _recorded("memory")
    set_disk = _recorded("disk")
    set_gpus = _recorded("gpus")
    set_retries = _recorded("retries")
    set_priority = _recorded("priority")

    def _start(self, worker: _Worker) -> None:
        sandbox = tempfile.mkdtemp(prefix="sandbox-", dir=self._dir)
        with open(os.path.join(self._dir, "stdout"), "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _TASK_SCRIPT, os.path.join(self._dir, "function"),
                 os.path.join(self._dir, "arguments"), self.output_path],
                cwd=sandbox, env=worker.env, stdout=out, stderr=subprocess.STDOUT,
            )
        self.state = "running"

    def _finish(self, result: str) -> None:
        if self.process is not None:
            self.exit_code = self.process.wait()
            self.process = None
            with open(os.path.join(self._dir, "stdout"), "rb") as f:
                self.std_output = f.read().decode(errors="replace")
        self.result = result
        self.state = "complete"

    def output(self, timeout: Any = "wait_forever") -> Any:
        if not self._retrieved:
            if self._manager.wait_for_task_id(self.id, timeout=timeout) is None:
                return RESULT_PENDING
            self._retrieved = True
        if not self._output_loaded:
            contents = b""
            if os.path.exists(self.output_path):
                with open(self.output_path, "rb") as f:
                    contents = f.read()
            try:
                self._output = cloudpickle.loads(contents)
            except Exception as exc:
                print(contents)
                self._output = exc
            self._output_loaded = True
        return self._output


class Manager:
    def __init__(self, port: Any = 9123, name: str | None = None) -> None:
        os.environ["TCP_LOW_PORT"] = os.environ["TCP_HIGH_PORT"] = str(port)
        self._socket = socket.socket()
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self._socket.listen()
        self.port = self._socket.getsockname()[1]
        self.name = name
        self.using_ssl = False
        self.staging_directory = tempfile.mkdtemp(prefix="vine-standin-")
        self._next_id = 0
        self._tasks: dict[int, _Task] = {}
        self._workers: list[_Worker] = []
        self._freed = False
        self._taskvine: Any = object()  # None once freed, as in the real Manager
        self._ran = 0
        _MANAGERS[self.port] = self

    @property
    def listening(self) -> bool:
        return self._socket.fileno() != -1

    def submit(self, task: Any) -> int:
        if self._freed:
            raise TypeError("in method 'vine_submit', argument 1 of type 'struct vine_manager *'")
        self._tasks[task.id] = task
        return int(task.id)

    def task_state(self, task_id: int) -> Any:
        _no_task_state()

    def _connect(self, worker: _Worker) -> None:
        self._workers.append(worker)

    def _progress(self) -> None:
        for task in self._tasks.values():
            if task.state == "running" and task.process is not None \
                    and task.process.poll() is not None:
                self._release(task)
                task._finish("success")  # a python failure still says success
        for task in self._tasks.values():
            if task.state != "pending":
                continue
            if any(u.state != "complete" for u in task.upstream):
                continue
            if any(not os.path.exists(u.output_path) for u in task.upstream):
                task._finish("input missing")
                continue
            worker = next((w for w in self._workers if w.can_bind and w.task is None), None)
            if worker is None:
                break
            worker.task = task
            task._start(worker)
            self._ran += 1

    def _release(self, task: _Task) -> None:
        for worker in self._workers:
            if worker.task is task:
                worker.task = None

    def wait_for_task_id(self, task_id: int, timeout: Any = "wait_forever") -> Any:
        if timeout == "wait_forever":
            timeout = WAIT_FOREVER
        if not isinstance(timeout, int):
            raise TypeError("in method 'vine_wait_for_task_id', argument 3 of type 'int'")
        if self._freed:
            raise TypeError("in method 'vine_wait_for_task_id', argument 1 of type "
                            "'struct vine_manager *'")
        task = self._tasks.get(task_id)
        deadline = None if timeout < 0 else time.monotonic() + timeout
        while task is not None:
            if timeout != 0:  # a zero timeout only looks at what has completed
                self._progress()
            if task.state == "complete":
                del self._tasks[task_id]
                return task
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.005)
        return None

    def cancel_by_task_id(self, task_id: int) -> int:
        task = self._tasks.get(task_id)
        if task is None or task.state == "complete":
            return 0
        if task.process is not None:
            task.process.kill()
            self._release(task)
        task._finish("cancelled")
        return 1

    def workers_shutdown(self, n: int = 0) -> int:
        count = len(self._workers) if n == 0 else min(n, len(self._workers))
        del self._workers[:count]
        return count

    def _free(self) -> None:
        if self._freed:
            return
        self._freed = True
        self._taskvine = None
        for task in self._tasks.values():
            if task.process is not None:
                task.process.kill()
                task.process.wait()
                task.process = None
        self._workers = []
        self._socket.close()
        shutil.rmtree(self.staging_directory, ignore_errors=True)

    def __del__(self) -> None:
        self._free()


def start_worker(host: str, port: int) -> _Worker:
    """What ``vine_worker HOST PORT`` started from this process amounts to."""
    worker = _Worker()
    _MANAGERS[port]._connect(worker)
    return worker


class Factory:
    _options = {"min-workers", "max-workers", "cores", "memory", "disk", "timeout",
                "catalog", "workers-per-cycle", "extra-options", "python-env", "debug"}

    def __init__(self, batch_type: str = "local", manager: Any = None,
                 manager_host_port: str | None = None, manager_name: str | None = None,
                 factory_binary: str | None = None, worker_binary: str | None = None,
                 log_file: str = os.devnull) -> None:
        self._opts: dict[str, Any] = {"min-workers": 1, "max-workers": 100}
        self._workers: list[_Worker] = []
        self._running = False
        self._factory_proc: Any = None  # the vine_factory process while running
        if manager is not None:
            self._port = manager.port
        elif manager_host_port:
            self._port = int(manager_host_port.rsplit(":", 1)[1])
        elif manager_name:
            self._port = -1
        else:
            raise ValueError(
                "Either manager, manager_host_port, or manager_name or manager should be specified."
            )

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        option = name.replace("_", "-")
        if option not in Factory._options:
            raise AttributeError(f"{name} is not a supported option")
        self._opts[option] = value

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> Factory:
        manager = _MANAGERS.get(self._port)
        if manager is None:
            raise RuntimeError("Could not execute vine_factory: no manager there.")
        count = max(int(self._opts["min-workers"]), 1)
        count = min(count, int(self._opts["max-workers"]))
        for _ in range(count):
            worker = _Worker()
            manager._connect(worker)
            self._workers.append(worker)
        self._manager = manager
        self._running = True
        self._factory_proc = self
        atexit.register(self._at_exit)  # keeps the factory alive until the process exits
        return self

    def _at_exit(self) -> None:
        if self._running:
            self.stop()

    def stop(self) -> None:
        manager = getattr(self, "_manager", None)
        if manager is not None:
            manager._workers = [w for w in manager._workers if w not in self._workers]
        self._workers = []
        self._running = False
        self._factory_proc = None

    @property
    def workers(self) -> list[_Worker]:
        return list(self._workers)


class VineFuture(cf.Future):  # type: ignore[type-arg]
    def __init__(self, task: _Task) -> None:
        super().__init__()
        self._state = PENDING
        self._task = task
        self._callback_fns: list[Any] = []
        self._ran_functions = False
        self._is_submitted = False

    def cancel(self) -> None:  # type: ignore[override]
        self._task._manager.cancel_by_task_id(self._task.id)
        self._state = CANCELLED

    def cancelled(self) -> bool:
        _no_task_state()
        return False

    def running(self) -> bool:
        _no_task_state()
        return False

    def done(self) -> bool:
        _no_task_state()
        return False

    def result(self, timeout: Any = "wait_forever") -> Any:
        if timeout is None:
            timeout = "wait_forever"
        value = self._task.output(timeout=timeout)
        if value == RESULT_PENDING:  # "truth value of an array is ambiguous" for arrays
            raise TimeoutError()
        self._state = FINISHED
        if self._callback_fns and not self._ran_functions:
            self._ran_functions = True
            for fn in self._callback_fns:
                fn(self)
        if isinstance(value, Exception):
            raise value
        return value

    def exception(self, timeout: Any = "wait_forever") -> BaseException | None:
        try:
            self.result()
        except Exception as exc:
            return exc
        return None

    def add_done_callback(self, fn: Any) -> None:
        self._callback_fns.append(fn)


def _run_each(fn: Any, *args: Any) -> list[Any]:
    return [fn(a) for a in args]


def _gather(*parts: Any) -> list[Any]:
    out: list[Any] = []
    for part in parts:
        out.extend(part)
    return out


class FuturesExecutor(cf.Executor):
    def __init__(self, port: Any = 9123, batch_type: str = "local", manager: Any = None,
                 manager_host_port: Any = None, manager_name: Any = None,
                 factory_binary: Any = None, worker_binary: Any = None,
                 log_file: str = os.devnull, factory: bool = True,
                 opts: Any = None) -> None:
        self.manager = Manager(port=port, name=manager_name)
        self.port = self.manager.port
        self.task_table: list[_Task] = []
        self.factory: Factory | None = None
        if factory:
            # like the real one: its own ``manager`` argument, not self.manager
            self.factory = Factory(batch_type, manager=manager,
                                   manager_host_port=manager_host_port,
                                   manager_name=manager_name)
            self.set("min-workers", 5)
            for name, value in (opts or {}).items():
                self.set(name, value)
            self.factory.start()

    @property
    def ran(self) -> int:
        return self.manager._ran

    @property
    def tasks(self) -> list[_Task]:
        """The tasks submitted, in order (each with the settings its setters got)."""
        return self.task_table

    def set(self, name: str, value: Any) -> None:
        if self.factory is not None:
            setattr(self.factory, name, value)

    def future_task(self, fn: Any, *args: Any, **kwargs: Any) -> _Task:
        return _Task(self.manager, fn, args, kwargs)

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> VineFuture:  # type: ignore[override]
        task = fn if isinstance(fn, _Task) else self.future_task(fn, *args, **kwargs)
        self.manager.submit(task)
        task._future._is_submitted = True
        self.task_table.append(task)
        return task._future

    def map(self, fn: Any, iterable: Any, library_name: Any = None,  # type: ignore[override]
            chunk_size: int = 1) -> VineFuture:
        assert chunk_size > 0
        assert isinstance(iterable, Sequence)
        parts = []
        for start in range(0, len(iterable), chunk_size):
            if library_name:
                raise NotImplementedError("Using a library not currently supported.")
            parts.append(self.submit(partial(_run_each, fn), *iterable[start:start + chunk_size]))
        return self.submit(_gather, *parts)

    def __del__(self) -> None:
        self.manager.__del__()
