"""The functions the engine conformance suite submits (importable on any worker).

>>> add(2, 3), sleep_then(0, "x")
(5, 'x')
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["add", "fail", "sleep_then"]


def add(a: int, b: int = 0) -> int:
    """``a + b``.

    >>> add(1, b=2)
    3
    """
    return a + b


def fail(message: str) -> None:
    """Raise ``ValueError(message)`` (a task that fails on its worker).

    >>> fail("boom")
    Traceback (most recent call last):
    ...
    ValueError: boom
    """
    raise ValueError(message)


def sleep_then(seconds: float, value: Any) -> Any:
    """Sleep ``seconds``, then return ``value`` (a task that keeps a worker busy).

    >>> sleep_then(0.0, 7)
    7
    """
    time.sleep(seconds)
    return value
