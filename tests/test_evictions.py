"""Failed evictions are logged, counted and retried; stale Redis connections are retried."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from pxexec import Store
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.redis import RedisConnector
from pxexec.store.ownership import owned
from tests.redis_server import RedisServer


@contextmanager
def _retries_held(store: Store, timeout: float = 30.0) -> Iterator[None]:
    """Hold the store's retry thread: entered once the failed key waits in the retry
    queue (not in the middle of a retry), left when the block ends."""
    retries = store.failed_evictions
    deadline = time.monotonic() + timeout
    while True:
        retries._cond.acquire()  # the retry thread takes it to start a retry
        if retries.pending():
            break
        retries._cond.release()
        assert time.monotonic() < deadline, "the failed eviction was not queued again"
        time.sleep(0.01)
    try:
        yield
    finally:
        retries._cond.release()


def test_a_free_that_fails_while_the_server_is_down_is_retried(caplog: Any) -> None:
    server = RedisServer()
    port = server.port
    store = Store("retry-free", RedisConnector(server.url, prefix="rf", connect_timeout=0.5,
                                               timeout=1), cache_size=0)
    try:
        owner = owned(store, np.ones(1000))
        key = owner.__px_factory__.key
        server.stop()
        with caplog.at_level(logging.WARNING, logger="pxexec"):
            owner.free()  # from an owner: cannot raise, must not be lost either
        assert store.metrics.evict_failures >= 1
        assert key in caplog.text and "retrying" in caplog.text
        # The server comes back (empty: a real restart) and the key is written back, as
        # if it had survived, while no retry can run: the next retry must free it.
        with _retries_held(store):
            server = RedisServer(port=port)
            writer = RedisConnector(server.url, prefix="rf")
            writer.client.set(key, b"still here")
        assert store.failed_evictions.wait(timeout=20)
        assert store.metrics.evict_retries >= 1
        assert writer.client.exists(key) == 0
    finally:
        server.stop()


def test_free_of_a_dormant_route_is_logged_and_counted(caplog: Any) -> None:
    routed = MultiConnector([
        Route("here", LocalConnector()),
        Route("elsewhere", {"type": "local"}, host="no-such-host-[0-9]+", min_size=10**9),
    ])
    store = Store("dormant-free", routed)
    local = store.put(b"x")
    with caplog.at_level(logging.ERROR, logger="pxexec"):
        store.free([local, "elsewhere:0123"])
    assert not store.exists(local)  # the other keys of the batch are still freed
    assert store.metrics.evictions_given_up == 1
    assert "elsewhere:0123" in caplog.text and "no-such-host" in caplog.text
