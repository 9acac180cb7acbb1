"""A MultiConnector over the node store: routing to it and to Redis on every engine."""

from __future__ import annotations

import gc
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.node import NodeConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.executor.facade import StoreExecutor
from pxexec.policies import SizeAtLeast
from pxexec.proxy import get_factory, is_proxy
from pxexec.testing import ConnectorConformance
from tests import workers

MB = 1 << 20


@pytest.fixture
def node_dirs() -> Iterator[tuple[str, str]]:
    shm = tempfile.mkdtemp(prefix="pxexec-node-multi-", dir="/dev/shm")
    spill = tempfile.mkdtemp(prefix="pxexec-spill-multi-")
    yield shm, spill
    shutil.rmtree(shm, ignore_errors=True)
    shutil.rmtree(spill, ignore_errors=True)


def routed(node_dirs: tuple[str, str], redis_url: str) -> tuple[MultiConnector, NodeConnector,
                                                                  RedisConnector]:
    """Small objects to Redis, large ones and anything tagged "bulk" to the node store."""
    node = NodeConnector(node_dirs[0], spill_directory=node_dirs[1],
                         namespace=uuid.uuid4().hex[:8], chunk=16 * MB, capacity=64 * MB)
    redis = RedisConnector(redis_url, prefix=f"nm{uuid.uuid4().hex[:6]}")
    multi = MultiConnector([
        Route("small", redis, max_size=100_000),
        Route("node", node, min_size=100_001),
        Route("bulk", node, tags=frozenset({"bulk"}), priority=10),
    ])
    return multi, node, redis


def assert_node_empty(node: NodeConnector) -> None:
    gc.collect()
    stats = node.stats()
    assert stats["objects"] == stats["writing"] == stats["pins"] == 0, stats
    assert stats["bytes_in_use"] == 0, stats


class TestMultiOverNode(ConnectorConformance):
    @pytest.fixture
    def connector(self, node_dirs: tuple[str, str], redis_url: str) -> Iterator[Any]:
        multi, node, _ = routed(node_dirs, redis_url)
        yield multi
        multi.evict_batch(multi.keys())
        assert_node_empty(node)


def test_routes_by_size_and_tag(node_dirs: tuple[str, str], redis_url: str) -> None:
    multi, node, redis = routed(node_dirs, redis_url)
    store = Store(f"node-multi-{uuid.uuid4().hex[:6]}", multi)
    big = np.arange(200_000, dtype=np.float64)
    keys = {"big": store.put(big), "small": store.put({"a": 1}),
            "tagged": store.put(b"x" * 10, tags=["bulk"])}
    assert keys["big"].startswith("node:") and keys["small"].startswith("small:")
    assert keys["tagged"].startswith("bulk:")
    assert node.stats()["objects"] == 2 and len(redis.keys()) == 1
    view = store.get(keys["big"])
    assert np.array_equal(view, big) and not view.flags.writeable  # a view of the arena
    assert store.get(keys["tagged"]) == b"x" * 10
    store.evict_batch(list(keys.values()))
    del view
    assert multi.keys() == [] and redis.keys() == []
    assert_node_empty(node)


def test_multi_over_node_on_every_engine(engine: Any, node_dirs: tuple[str, str],
                                         redis_url: str) -> None:
    multi, node, redis = routed(node_dirs, redis_url)
    store = Store(f"node-multi-ex-{uuid.uuid4().hex[:6]}", multi)
    big = np.arange(400_000, dtype=np.float64)  # 3.2 MB: to the node store
    small = np.arange(2_000, dtype=np.float64)  # 16 kB: to Redis
    executor, close = engine
    with StoreExecutor(executor, store, SizeAtLeast(10_000), close_engine=close) as ex:
        futures = [ex.submit(workers.double, big), ex.submit(workers.double, small)]
        got_big, got_small = (f.result(timeout=120) for f in futures)
        assert np.array_equal(got_big, big * 2) and np.array_equal(got_small, small * 2)
        assert is_proxy(got_big) and is_proxy(got_small)
        assert getattr(get_factory(got_big), "key", "").startswith("node:")
        assert getattr(get_factory(got_small), "key", "").startswith("small:")
        assert ex.flush(timeout=10)
        ex.free(got_big)
        ex.free(got_small)
        del futures
    del got_big, got_small
    assert multi.keys() == [] and redis.keys() == []
    assert_node_empty(node)
