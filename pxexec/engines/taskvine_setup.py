"""TaskVine set-up: a FuturesExecutor whose workers can run, and closing it.

Two things of TaskVine's own break a run before the first task: ``Manager(port=N)``
exports ``TCP_LOW_PORT``/``TCP_HIGH_PORT`` (every worker started from this process
then fails to bind its port), and ``FuturesExecutor(factory=True)`` hands the
factory its own ``manager=None``. TaskVine's ``shutdown()`` does nothing, so
``close_futures_executor`` stops what it started. See docs/engines/taskvine.md.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from typing import Any

from pxexec.errors import MissingDependencyError

__all__ = ["PORT_VARIABLES", "clear_port_environment", "close_futures_executor",
           "executor_from_module", "futures_executor", "restart_factory"]

log = logging.getLogger("pxexec")

#: environment variables ``Manager(port=N)`` sets; workers started with them fail
PORT_VARIABLES = ("TCP_LOW_PORT", "TCP_HIGH_PORT")
_FACTORY_GRACE = 3  # seconds a stopping vine_factory gets before it is killed

_HOW = (
    "ndcctools is not on PyPI: install CCTools (e.g. conda install -c conda-forge "
    "ndcctools) in the manager's and the workers' environment."
)


def futures_executor(**options: Any) -> Any:
    """A TaskVine ``FuturesExecutor`` that works, with a clear error when TaskVine is absent.

    Takes ``FuturesExecutor``'s options (``port``, ``factory``, ``batch_type``,
    ``opts``, ...); see ``executor_from_module`` for what it does differently.

    >>> from pxexec import Store, StoreExecutor
    >>> from pxexec.connectors import connector_from_url
    >>> vine = futures_executor(port=0, opts={"min_workers": 1})   # doctest: +SKIP
    >>> store = Store("vine", connector_from_url("redis://manager:6379/0"))
    >>> with StoreExecutor(vine, store) as ex:                  # doctest: +SKIP
    ...     print(ex.submit(sum, [1, 2]).result())
    3
    """
    try:
        from ndcctools import taskvine
    except ImportError as exc:
        raise MissingDependencyError("ndcctools", "taskvine", "The TaskVine adapter", _HOW) from exc
    return executor_from_module(taskvine, **options)


def executor_from_module(
    module: Any,
    *,
    port: Any = 9123,
    factory: bool = True,
    batch_type: str = "local",
    opts: Mapping[str, Any] | None = None,
    manager_host_port: str | None = None,
    manager_name: str | None = None,
    factory_binary: str | None = None,
    worker_binary: str | None = None,
    log_file: str = os.devnull,
) -> Any:
    """``module.FuturesExecutor`` built so that its workers can run.

    ``module`` is ``ndcctools.taskvine`` (or a stand-in with the same API).
    ``FuturesExecutor(factory=True)`` hands the factory its own ``manager=None`` and
    fails without ``manager_host_port``/``manager_name``: the executor is built
    without a factory and a ``Factory`` on its manager is started here, with at
    least 5 workers unless ``opts`` says otherwise (as TaskVine does). The port
    variables the manager exports are restored to what they were, so workers
    started from this process (by the factory or by hand) can bind their ports.
    Bad options fail before anything starts:

    >>> executor_from_module(None, opts=["min_workers"])
    Traceback (most recent call last):
    ...
    TypeError: opts must be a mapping of factory options such as {'min_workers': 1}, got list.
    >>> from ndcctools import taskvine                                   # doctest: +SKIP
    >>> vine = executor_from_module(taskvine, port=0, opts={"max_workers": 2})  # doctest: +SKIP
    >>> vine.factory.max_workers                                         # doctest: +SKIP
    2
    """
    if opts is not None and not isinstance(opts, Mapping):
        raise TypeError(
            f"opts must be a mapping of factory options such as {{'min_workers': 1}}, got "
            f"{type(opts).__name__}."
        )
    saved = {name: os.environ.get(name) for name in PORT_VARIABLES}
    try:
        vine = module.FuturesExecutor(port=port, batch_type=batch_type, manager_name=manager_name,
                                      factory=False)
    finally:
        _restore_environment(saved)
    if not factory:
        return vine
    try:
        vine.factory = module.Factory(
            batch_type=batch_type, manager=vine.manager, manager_host_port=manager_host_port,
            manager_name=manager_name, factory_binary=factory_binary,
            worker_binary=worker_binary, log_file=log_file,
        )
        vine.set("min-workers", 5)
        for name, value in (opts or {}).items():
            vine.set(name, value)
        vine.factory.start()
    except BaseException:
        close_futures_executor(vine)  # no manager left listening for a factory that never came
        raise
    return vine


def _restore_environment(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def clear_port_environment(executor: Any) -> bool:
    """Remove the port variables a ``Manager(port=N)`` left in ``os.environ``.

    Only when both name the same port, the one asked for (0) or the one the
    manager listens on: values a user set for a range are kept. True if removed.

    >>> import os
    >>> class Vine:
    ...     port = 9123
    >>> os.environ["TCP_LOW_PORT"] = os.environ["TCP_HIGH_PORT"] = "9123"  # Manager(port=9123)
    >>> clear_port_environment(Vine())
    True
    >>> "TCP_LOW_PORT" in os.environ, "TCP_HIGH_PORT" in os.environ
    (False, False)
    """
    low, high = (os.environ.get(name) for name in PORT_VARIABLES)
    if low is not None and low == high and low in {"0", str(getattr(executor, "port", None))}:
        for name in PORT_VARIABLES:
            os.environ.pop(name, None)
        return True
    return False


def restart_factory(executor: Any) -> None:
    """Restart a running factory, as one started with the port variables needs.

    ``StoreExecutor`` does it when it finds the variables a ``Manager`` exported
    (a ``FuturesExecutor(factory=True, manager_host_port=...)`` of your own).

    >>> vine = FuturesExecutor(port=9123, manager_host_port="localhost:9123")  # doctest: +SKIP
    >>> clear_port_environment(vine) and restart_factory(vine)       # doctest: +SKIP
    """
    factory = getattr(executor, "factory", None)
    if factory is None or getattr(factory, "_factory_proc", True) is None:
        return  # none, or not running
    log.info("pxexec: restarting the TaskVine factory without TCP_LOW_PORT/TCP_HIGH_PORT")
    _stop_factory(factory)
    factory.start()


def _stop_factory(factory: Any) -> None:
    """``factory.stop()``, without waiting long for a factory slow to leave.

    ``vine_factory`` may take half a minute to exit on SIGTERM (when its workers
    could not bind their ports): after a few seconds it is killed; its local
    workers run with ``--parent-death`` and leave with it.
    """
    proc = getattr(factory, "_factory_proc", None)
    if isinstance(proc, subprocess.Popen):
        proc.terminate()
        try:
            proc.wait(timeout=_FACTORY_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    factory.stop()


def close_futures_executor(vine: Any) -> None:
    """Stop the factory, the workers and the manager of a FuturesExecutor.

    What ``StoreExecutor.shutdown()`` does with ``close_engine=True``; for an
    executor wrapped with ``close_engine=False``, or never wrapped. Calling it
    again does nothing.

    >>> vine = futures_executor(port=0, opts={"min_workers": 1})    # doctest: +SKIP
    >>> close_futures_executor(vine)                                # doctest: +SKIP
    >>> vine.manager._taskvine is None                              # doctest: +SKIP
    True
    """
    factory = getattr(vine, "factory", None)
    if factory is not None:
        try:
            _stop_factory(factory)
        except Exception as exc:
            log.warning("pxexec: could not stop the TaskVine factory: %s", exc)
    manager = getattr(vine, "manager", None)
    if manager is None or getattr(manager, "_taskvine", True) is None:  # freed already
        return
    try:
        manager.workers_shutdown(0)
    except Exception as exc:
        log.warning("pxexec: could not shut the TaskVine workers down: %s", exc)
    free = getattr(manager, "_free", None)  # what Manager.__del__ calls
    if callable(free):
        free()
