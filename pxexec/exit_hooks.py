"""Interpreter-exit hooks, registered on first use: importing pxexec registers none."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable

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
