"""Failed evictions are logged, counted and retried; stale Redis connections are retried."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.bench.redis_server import RedisServer
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.redis import RedisConnector
from pxexec.store.ownership import owned


@pytest.mark.flaky(reruns=2)  # timing-dependent under load: known, to be made deterministic
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
        server = RedisServer(port=port)  # the server is back (empty: a real restart)
        writer = RedisConnector(server.url, prefix="rf")
        writer.client.set(key, b"still here")  # as if it had survived
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
