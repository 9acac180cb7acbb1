"""Interpreter-exit hooks, registered on first use: importing pxexec registers none."""

from __future__ import annotations

import atexit
import sys
import threading
from collections.abc import Callable

from pxexec.forking import renew_locks_after_fork

__all__ = ["at_exit_once", "registered"]

_REGISTERED: set[Callable[[], None]] = set()
_LOCK = threading.Lock()


def at_exit_once(hook: Callable[[], None]) -> None:
    """Run ``hook`` at interpreter exit; registering it again does nothing.

    >>> def goodbye() -> None:
    ...     pass
    >>> at_exit_once(goodbye); at_exit_once(goodbye)  # registered once
    >>> registered(goodbye)
    True
    """
    if hook in _REGISTERED:
        return
    if not _REGISTERED:  # a child forked while another thread registers gets a free lock
        renew_locks_after_fork(sys.modules[__name__], "_LOCK")
    with _LOCK:
        if hook not in _REGISTERED:
            atexit.register(hook)
            _REGISTERED.add(hook)


def registered(hook: Callable[[], None]) -> bool:
    """Whether ``hook`` is registered to run at exit.

    >>> registered(print)
    False
    """
    return hook in _REGISTERED
