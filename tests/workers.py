"""Functions run in worker processes by the tests (importable by spawn)."""

from __future__ import annotations

import os
from typing import Any

from pxexec.proxy import is_resolved
from pxexec.store.registry import registered_stores


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


def total(x: Any) -> float:
    return float(x.sum())


def double(x: Any) -> Any:
    return x * 2


def identity(x: Any) -> Any:
    return x


def fail(x: Any) -> Any:
    raise ValueError(f"task failed on purpose with {x.__class__.__name__}")


def make_array(n: int, value: float = 1.0) -> Any:
    import numpy as np

    return np.full(n, value)


def add(a: Any, b: Any = 0) -> Any:
    return a + b


def sleepy(x: Any, seconds: float = 0.2) -> Any:
    import time

    time.sleep(seconds)
    return x


def sizes(items: Any) -> list[int]:
    return [int(getattr(i, "nbytes", 0)) for i in items]


def kinds(*args: Any, **kwargs: Any) -> list[str]:
    from pxexec.proxy import is_proxy

    return [a.__class__.__name__ + ("*" if is_proxy(a) else "") for a in (*args, *kwargs.values())]


def fresh_bytes(data: Any) -> bytes:
    return bytes(len(data))


def die(data: Any) -> None:
    import os

    os._exit(3)  # the worker process dies mid-task


def die_once(data: Any, marker: str) -> float:
    """Kill this worker process the first time (the marker file does not exist yet)."""
    import os

    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    return float(data.sum())


def total_when(data: Any, gate: str) -> float:
    """Wait (at most 60 s) until the file ``gate`` exists, then sum ``data``."""
    import os
    import time

    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return float(data.sum())


def make_pair(n: int) -> list[Any]:
    import numpy as np

    return [np.ones(n), np.zeros(n)]
