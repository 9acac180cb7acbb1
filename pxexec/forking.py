"""What a forked child must not inherit: locks held by threads it lacks, parents' clients.

``fork()`` copies one thread. A lock that another thread of the parent held at that
moment stays held forever in the child, and a client (a Redis connection pool)
shared with the parent must not be closed or reset from the child. Objects and
modules register here on first use (never at import); one ``os.register_at_fork``
hook then gives registered objects new locks, lets registered objects start afresh
(``restart_after_fork``) and runs registered hooks in the child, before any other code
of the child runs.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["on_fork_child", "renew_locks_after_fork", "restart_after_fork"]

_HOOKS: list[Callable[[], None]] = []
_OBJECTS: dict[int, tuple[weakref.ref[Any], tuple[str, ...]]] = {}
_RESTARTS: dict[int, tuple[weakref.ref[Any], str]] = {}
_REGISTERED = False


def _register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        _REGISTERED = True
        os.register_at_fork(after_in_child=_after_fork_in_child)


def on_fork_child(hook: Callable[[], None]) -> None:
    """Run ``hook`` in every child forked from now on (once per hook).

    A hook must not take locks or talk to servers: it only drops or replaces what the
    child inherited.

    >>> seen = []
    >>> on_fork_child(seen.clear)
    >>> on_fork_child(seen.clear)   # a second registration of a hook is ignored
    >>> _HOOKS.count(seen.clear)
    1
    """
    _register()
    if hook not in _HOOKS:
        _HOOKS.append(hook)


def renew_locks_after_fork(obj: Any, *names: str) -> None:
    """Give ``obj`` new ``threading.Lock`` objects under ``names`` in a forked child.

    >>> import threading
    >>> class Box:
    ...     def __init__(self):
    ...         self.lock = threading.Lock()
    ...         renew_locks_after_fork(self, "lock")
    >>> box = Box(); box.lock.acquire()
    True
    >>> import os
    >>> pid = os.fork()
    >>> if pid == 0:                  # the child: a new, free lock
    ...     os._exit(0 if not box.lock.locked() else 1)
    >>> os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    0
    """
    _register()
    _OBJECTS[id(obj)] = (_weak(obj, _OBJECTS), names)


def restart_after_fork(obj: Any, method: str) -> None:
    """Call ``obj.<method>()`` in every child forked from now on, while ``obj`` lives
    (after the locks are renewed). Like a hook, it only drops or replaces what the
    child inherited: a queue, a thread, a condition that are the parent's.

    >>> class Queue:
    ...     def __init__(self):
    ...         self.items = [1]
    ...         restart_after_fork(self, "clear")
    ...     def clear(self):
    ...         self.items = []
    >>> queue = Queue()
    >>> import os
    >>> pid = os.fork()
    >>> if pid == 0:                  # the child: an empty queue of its own
    ...     os._exit(0 if queue.items == [] else 1)
    >>> os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), queue.items
    (0, [1])
    """
    _register()
    _RESTARTS[id(obj)] = (_weak(obj, _RESTARTS), method)


def _weak(obj: Any, table: dict[int, Any]) -> weakref.ref[Any]:
    """A weak reference to ``obj`` that removes its entry from ``table`` once it goes."""
    key = id(obj)

    def forget(_: object) -> None:
        table.pop(key, None)

    return weakref.ref(obj, forget)


def _after_fork_in_child() -> None:
    for ref, names in list(_OBJECTS.values()):
        obj = ref()
        if obj is not None:
            for name in names:
                setattr(obj, name, threading.Lock())
    for ref, method in list(_RESTARTS.values()):
        obj = ref()
        if obj is not None:
            try:
                getattr(obj, method)()
            except Exception:  # pragma: no cover - a restart must never break a fork
                pass
    for hook in list(_HOOKS):
        try:
            hook()
        except Exception:  # pragma: no cover - a hook must never break a fork
            pass
