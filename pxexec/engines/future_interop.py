"""StoreFutures among the async and Dask ways of waiting for futures.

A StoreFuture is a ``concurrent.futures.Future``: ``concurrent.futures.wait`` and
``as_completed`` work on it, and so does ``await future`` (below). Dask's own helpers
(``distributed.wait``, ``distributed.as_completed``, ``Client.gather``, ``Client.compute``,
``dask.compute``) take Dask futures and collections only: ``distributed.wait`` and
``compute`` look for ``__dask_graph__`` on what they are given, and a StoreFuture answers
with the TypeError below, saying what to use, instead of being skipped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

__all__ = ["USE_INSTEAD", "await_future", "refuse_dask_graph"]

#: what to use instead of Dask's helpers, in the TypeError they raise on a StoreFuture
USE_INSTEAD = (
    "This is a StoreFuture, the concurrent.futures.Future that pxexec's StoreExecutor "
    "returns, not a Dask future or collection: Dask's distributed.wait, as_completed, "
    "Client.gather and compute cannot wait for it. Use concurrent.futures.wait(futures), "
    "concurrent.futures.as_completed(futures), [f.result() for f in futures], or "
    "`await future` in async code."
)


def refuse_dask_graph(future: Any) -> Any:
    """Raise the TypeError Dask's helpers show for a StoreFuture.

    >>> refuse_dask_graph(None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: This is a StoreFuture, ... or `await future` in async code.
    """
    raise TypeError(USE_INSTEAD)


def await_future(future: Any) -> Generator[Any, None, Any]:
    """``await future`` for a StoreFuture: its result (the same owner as ``result()``).

    Engines that complete their futures by themselves (Dask, pools, Parsl) are awaited
    without blocking the event loop or a thread; an engine that makes progress only
    while someone blocks in ``result()`` (TaskVine) is waited for in a worker thread.

    >>> import asyncio
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec import Store, StoreExecutor
    >>> from pxexec.connectors.local import LocalConnector
    >>> async def main(ex):
    ...     return await ex.submit(sum, [1, 2, 3])
    >>> with StoreExecutor(ThreadPoolExecutor(1), Store("await-demo", LocalConnector())) as ex:
    ...     asyncio.run(main(ex))
    6
    """
    return _await(future).__await__()


async def _await(future: Any) -> Any:
    if not future.done():
        if future._px_engine.completes_futures:
            await asyncio.shield(asyncio.wrap_future(future))
        else:
            await asyncio.get_running_loop().run_in_executor(None, future.exception)
    return future.result()
