"""Dependencies for engines whose tasks cannot take futures: submit once they are done.

Threads: the last dependency to finish runs the launch, on its own callback thread;
a counter under one lock decides which callback is the last. A failed or cancelled
dependency completes the task (through the completion race) instead of launching
it.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable
from typing import Any

from pxexec.executor.worker import Boxed
from pxexec.proxy import Proxy
from pxexec.store.ownership import OwnedProxy, plain
from pxexec.store.reachable import shallow_map

__all__ = ["proxied_result", "submit_after"]

Launch = Callable[[tuple[Any, ...], dict[str, Any]], None]
Fail = Callable[[BaseException | None], None]  # None: the task was cancelled
Native = Callable[[Any], Any]  # a done dependency -> its engine future, or None


def _unowned(value: Any) -> Any:
    return plain(value) if isinstance(value, OwnedProxy) else value


def proxied_result(value: Any) -> Boxed | None:
    """An upstream result as a task argument if it is a proxy, else None.

    The engine may keep a task's arguments for as long as it likes (Parsl keeps task
    records): it gets plain proxies, never owners, so an upstream result is freed when
    its StoreFuture goes, not when the engine forgets the task. Sealed: the owner lives
    in this process.

    >>> proxied_result(3) is None
    True
    """
    if isinstance(value, Proxy):
        return Boxed(_unowned(value), sealed=True)
    return None


def _substitute(dep: cf.Future, native: Native | None) -> Any:  # type: ignore[type-arg]
    value = dep.result()
    boxed = proxied_result(value)
    if boxed is not None:
        return boxed
    engine_future = native(dep) if native is not None else None
    if engine_future is not None:  # the engine moves that result itself
        return engine_future
    return shallow_map(value, _unowned)


def submit_after(deps: list[cf.Future], target: cf.Future,  # type: ignore[type-arg]
                 args: tuple[Any, ...], kwargs: dict[str, Any], launch: Launch,
                 fail: Fail, native: Native | None = None) -> None:
    """Call ``launch(args, kwargs)`` with the dependencies' results in place once every
    one of ``deps`` is done; ``fail(error)`` instead if one failed or ``target`` was
    cancelled meanwhile. ``native(dep)``: what to pass for a result that is not a
    proxy (its engine future), instead of the value (None: the value).

    >>> import concurrent.futures as cf
    >>> dep, target = cf.Future(), cf.Future()
    >>> submit_after([dep], target, (dep, 1), {}, lambda a, k: print("launch", a),
    ...              lambda error: print("failed", error))
    >>> dep.set_result(41)
    launch (41, 1)
    """
    # The callbacks stay registered on the finished deps; the state they need lives
    # in ``pending`` and is dropped at launch, so no reference cycle keeps a dep (and
    # its owned result) alive until the garbage collector runs.
    pending: dict[str, Any] = {"deps": deps, "args": args, "kwargs": kwargs,
                               "target": target, "launch": launch, "fail": fail,
                               "left": len(deps)}
    lock = threading.Lock()

    def on_dep_done(_: Any) -> None:
        with lock:
            pending["left"] -= 1
            if pending["left"]:
                return
            state = dict(pending)
            pending.clear()
        fail: Fail = state.pop("fail")
        launch: Launch = state.pop("launch")
        if state.pop("target").cancelled():
            fail(None)
            return
        for dep in state["deps"]:
            error = dep.exception() if not dep.cancelled() else cf.CancelledError()
            if error is not None:
                fail(error)
                return
        waited = set(map(id, state["deps"]))
        resolved_args = tuple(
            _substitute(a, native) if id(a) in waited else a for a in state["args"]
        )
        resolved_kwargs = {
            k: _substitute(v, native) if id(v) in waited else v
            for k, v in state["kwargs"].items()
        }
        del state
        try:
            launch(resolved_args, resolved_kwargs)
        except BaseException as exc:
            fail(exc)

    for dep in deps:
        dep.add_done_callback(on_dep_done)
