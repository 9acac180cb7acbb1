"""Functions run in worker processes by the tests (importable by spawn)."""

from __future__ import annotations

import os
from typing import Any

from pxexec.proxy import is_resolved
from pxexec.store import registered_stores


def describe(proxy: Any) -> tuple[bool, float, int]:
    before = is_resolved(proxy)
    return before, float(proxy.sum()), os.getpid()


def store_count() -> int:
    return len(registered_stores())


def resolve_and_count(proxy: Any) -> tuple[int, int]:
    float(proxy.sum())
    return os.getpid(), len(registered_stores())


def mutate(proxy: Any) -> float:
    proxy[0] = 1e9
    return float(proxy[0])


def touch(proxy: Any) -> Any:
    return proxy + 0
