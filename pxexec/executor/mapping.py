"""``map`` written once, on top of ``submit``: results in order, chunks, a bounded
number in flight, and what an abandoned iterator leaves behind given back.

Threads: everything here runs on the thread consuming the iterator; abandoning a
future hands it to ``abandon`` (the executor frees what it stored, now or when it
completes).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Chunk", "map_on_submit"]

Submit = Callable[..., Any]


def map_on_submit(
    submit: Submit, abandon: Callable[[Any], None], fn: Callable[..., Any],
    iterables: tuple[Iterable[Any], ...], *, timeout: float | None = None,
    chunksize: int = 1, buffersize: int | None = None,
) -> Iterator[Any]:
    """``Executor.map`` over ``submit(fn, *args) -> future``.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> with ThreadPoolExecutor(2) as pool:
    ...     list(map_on_submit(pool.submit, lambda f: f.cancel(), abs, ([-1, -2, 3],),
    ...                        chunksize=2))
    [1, 2, 3]
    """
    if chunksize < 1:
        raise ValueError("chunksize must be >= 1")
    if buffersize is not None and buffersize < 1:
        raise ValueError("buffersize must be >= 1")
    deadline = None if timeout is None else time.monotonic() + timeout
    calls: Iterator[tuple[Any, ...]] = zip(*iterables)
    chunks = _chunks(calls, chunksize)

    def next_future() -> Any:
        if chunksize == 1:
            args = next(calls, None)
            return None if args is None else submit(fn, *args)
        chunk = next(chunks, None)
        if chunk is None:
            return None
        return submit(Chunk(fn, len(chunk[0])), *[a for call in chunk for a in call])

    return _in_order(next_future, abandon, deadline, buffersize, chunked=chunksize > 1)


def _in_order(next_future: Callable[[], Any], abandon: Callable[[Any], None],
              deadline: float | None, buffersize: int | None, chunked: bool
              ) -> Iterator[Any]:
    futures: collections.deque[Any] = collections.deque()
    exhausted = False

    def fill() -> None:
        nonlocal exhausted
        while not exhausted and (buffersize is None or len(futures) < buffersize):
            f = next_future()
            if f is None:
                exhausted = True
            else:
                futures.append(f)

    fill()
    try:
        while futures:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            result = futures[0].result(remaining)
            futures.popleft()
            fill()
            if chunked:
                yield from result
            else:
                yield result
    finally:
        for f in futures:  # abandoned, timed out or failed: nobody reads these
            abandon(f)


class Chunk:
    """Runs ``fn`` over a chunk of calls passed flat (so dependencies stay top level).

    >>> Chunk(pow, 2)(2, 3, 3, 2)                  # pow(2, 3), pow(3, 2)
    [8, 9]
    """

    def __init__(self, fn: Callable[..., Any], width: int) -> None:
        self.fn = fn
        self.width = width
        self.__name__ = f"chunk_{getattr(fn, '__name__', 'call')}"

    def __call__(self, *flat: Any) -> list[Any]:
        w = self.width
        return [self.fn(*flat[i : i + w]) for i in range(0, len(flat), w)] if w else [self.fn()]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chunk) and other.fn == self.fn and other.width == self.width

    def __hash__(self) -> int:
        return hash((Chunk, self.width))


def _chunks(calls: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        chunk = [c for _, c in zip(range(size), calls)]
        if not chunk:
            return
        yield chunk
