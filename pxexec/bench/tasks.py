"""Task functions of the benchmarks (module level, so every engine can import them)."""

from __future__ import annotations

import time
from typing import Any


def make_payload(kind: str, nbytes: int, seed: int = 0) -> Any:
    """A payload of ``nbytes``: a numpy uint8 array or bytes, with varied content."""
    import numpy as np

    arr = np.random.default_rng(seed).integers(0, 255, nbytes, dtype=np.uint8)
    return arr if kind == "numpy" else arr.tobytes()


def fresh_like(kind: str, nbytes: int) -> Any:
    """A new object of ``nbytes`` made on the worker (cheap to generate, not zero)."""
    import numpy as np

    arr = np.full(nbytes, 7, dtype=np.uint8)
    return arr if kind == "numpy" else arr.tobytes()


def check_payload(value: Any, expected_len: int, first: int | None = None) -> None:
    """Fail loudly if a result is not what the task was asked to return."""
    view = memoryview(value) if isinstance(value, (bytes, bytearray)) else None
    length = len(view) if view is not None else int(value.nbytes)
    if length != expected_len:
        raise AssertionError(f"result has {length} bytes, expected {expected_len}")
    if first is not None and length and int(value[0]) != first:
        raise AssertionError(f"result starts with {int(value[0])}, expected {first}")


def noop(data: Any, mode: str, kind: str) -> tuple[Any, float, float]:
    """Return the input unchanged (mode 'input') or a fresh object of its size."""
    start = time.time()
    if mode == "input":
        out = data
    else:
        nbytes = len(data) if isinstance(data, (bytes, bytearray)) else int(data.nbytes)
        out = fresh_like(kind, nbytes)
    return out, start, time.time()


_RANDOM: dict[int, Any] = {}


def consume_produce(data: Any, nbytes: int) -> tuple[Any, float, float]:
    """Read every byte of the input; return a fresh random-looking array of ``nbytes``.

    The output is a copy of a per-process random block with its first bytes set from
    the input, so producing it costs one memory copy (as cheap as the paper's O(1) ms
    generation), the same on every arm.
    """
    import numpy as np

    from pxexec.proxy import extract

    start = time.time()
    data = extract(data)  # C APIs such as np.frombuffer need the real object
    arr = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    block = _RANDOM.get(nbytes)
    if block is None:
        block = _RANDOM[nbytes] = np.random.default_rng(nbytes).integers(
            0, 255, nbytes, dtype=np.uint8
        )
    out = block.copy()
    out[:8] = int(arr.sum()) % 251
    return out, start, time.time()
