"""Task functions of the freeing tests (importable by spawned workers)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Holder:
    item: Any
    label: str = "held"


def in_dict(x: Any) -> Any:
    return {"a": x}


def in_tuple(x: Any) -> Any:
    return (x, 1)


def in_dataclass(x: Any) -> Any:
    return Holder(x)


def nested(x: Any) -> Any:
    return {"a": [{"b": (x,)}]}


def in_big_dict(x: Any) -> Any:
    # a result the policy stores itself: the input is pickled inside the stored dict
    return {"a": x, "pad": b"p" * 50_000}


def ident(x: Any) -> Any:
    return x


def size(x: Any) -> int:
    return len(x)


def nothing(*args: Any) -> None:
    return None


def constant(x: Any, value: Any) -> Any:
    return value


def slow_bytes(seconds: float, nbytes: int) -> bytes:
    time.sleep(seconds)
    return b"r" * nbytes


def read_first(x: Any) -> Any:
    return float(x[0]) if hasattr(x, "__getitem__") else x


def first_value(x: Any) -> float:
    return float(x[0])


def materialize(x: Any) -> Any:
    """The real target of a proxied argument (so the result is stored afresh)."""
    from pxexec import extract

    return extract(x)


def held_result(nbytes: int) -> bytes:
    """A result the policy stores (``tests.dask_hold.HoldAtMemory`` holds its worker)."""
    return b"h" * nbytes

