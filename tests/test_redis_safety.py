"""Redis: memory limits, evicting servers, forged keys and TLS against a plain server."""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator

import pytest
import redis as redis_lib

from pxexec import Store
from pxexec.codec.serialize import serialize
from pxexec.connectors.redis import RedisConnector, StoreEvictionWarning
from pxexec.errors import MissingKeyError, StoreConnectionError, StoreIOError
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def small_server() -> Iterator[RedisServer]:
    server = RedisServer("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def lru_server() -> Iterator[RedisServer]:
    server = RedisServer("--maxmemory", "50mb", "--maxmemory-policy", "allkeys-lru")
    yield server
    server.stop()


def test_out_of_memory_is_a_clear_store_error(small_server: RedisServer) -> None:
    connector = RedisConnector(f"redis://127.0.0.1:{small_server.port}/0", prefix="oom")
    with pytest.raises(StoreIOError, match="out of memory") as info:
        for _ in range(10):
            connector.put([bytes(1_000_000)])
    assert isinstance(info.value, OSError)
    connector.client.flushdb()


def test_an_evicting_server_is_detected_and_named(lru_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{lru_server.port}/0"
    connector = RedisConnector(url, prefix="lru")
    with pytest.warns(StoreEvictionWarning, match="allkeys-lru"):
        store = Store("lru", connector, cache_size=0)
        key = store.put(b"owned result")
    assert connector.eviction_policy == "allkeys-lru"
    redis_lib.Redis.from_url(url).delete(key)  # what the server does under memory pressure
    with pytest.raises(MissingKeyError, match="evicts keys when memory is full"):
        store.get(key)


def test_a_non_evicting_server_gives_no_warning(small_server: RedisServer) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreEvictionWarning)
        connector = RedisConnector(f"redis://127.0.0.1:{small_server.port}/0", prefix="quiet")
        assert connector.get(connector.put(serialize(1))) is not None
    assert connector.eviction_policy == "noeviction"


def _commands(url: str) -> int:
    return int(redis_lib.Redis.from_url(url).info("stats")["total_commands_processed"])


@pytest.mark.parametrize("parts", [200_000, 2_000, 3])
def test_a_forged_part_count_costs_at_most_one_read(redis_url: str, parts: int) -> None:
    prefix = f"forge{uuid.uuid4().hex[:6]}"
    connector = RedisConnector(redis_url, prefix=prefix)
    assert connector.get(connector.put(serialize(1))) is not None  # connected
    forged = f"{prefix}:{uuid.uuid4().hex}:p{parts}"
    before = _commands(redis_url)
    assert connector.get(forged) is None
    connector.evict(forged)
    assert not connector.exists(forged)
    assert _commands(redis_url) - before <= 5  # the INFO itself, a GET, a DEL, an EXISTS


def test_rediss_against_a_plain_server_fails_within_the_connect_timeout(
        redis_url: str) -> None:
    port = redis_lib.Redis.from_url(redis_url).connection_pool.connection_kwargs["port"]
    connector = RedisConnector(f"rediss://127.0.0.1:{port}/0", connect_timeout=1.0,
                               timeout=60.0)
    start = time.monotonic()
    with pytest.raises(StoreConnectionError):
        connector.put(serialize(1))
    assert time.monotonic() - start < 10  # not the 60 s socket timeout


def test_ttl_objects_live_their_ttl(redis_url: str) -> None:
    connector = RedisConnector(redis_url, prefix=f"ttl{uuid.uuid4().hex[:6]}", ttl=30)
    key = connector.put(serialize(1))
    ttl_ms = redis_lib.Redis.from_url(redis_url).pttl(key)
    assert 25_000 < ttl_ms <= 30_000
    connector.evict(key)


