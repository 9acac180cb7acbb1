from __future__ import annotations

import importlib.util
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pxexec import Store
from pxexec.codec.serialize import deserialize, serialize
from pxexec.config import load
from pxexec.connectors import connector_from_config
from pxexec.connectors.file import FileConnector
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import MultiConnector, NoRouteError, Route
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import ConfigError, MissingDependencyError
from pxexec.policies import SizeAtLeast, Tagged
from pxexec.testing import ConnectorConformance
from tests import pydaos_standin


@pytest.fixture
def standin(monkeypatch: Any) -> Iterator[Any]:
    pydaos_standin.reset()
    monkeypatch.setitem(sys.modules, "pydaos", pydaos_standin)
    yield pydaos_standin
    pydaos_standin.reset()


class TestDAOS(ConnectorConformance):
    expected_capabilities = {"ChoosesKeys", "Leases", "ListsKeys", "Replaces"}

    @pytest.fixture
    def connector(self, standin: Any) -> Iterator[Any]:
        from pxexec.connectors.daos import DAOSConnector

        yield DAOSConnector("pool", "cont", namespace=f"n{uuid.uuid4().hex[:6]}",
                            max_value=1 << 20)


class TestMulti(ConnectorConformance):
    expected_capabilities = {"ChoosesKeys", "IdentifiesContent", "Leases", "ListsKeys",
                             "Replaces", "RoutesObjects"}

    @pytest.fixture
    def connector(self, shm_dir: str, tmp_path: Any, redis_url: str) -> Iterator[Any]:
        yield MultiConnector([
            Route("small", RedisConnector(redis_url, prefix=f"m{uuid.uuid4().hex[:6]}"),
                  max_size=100_000),
            Route("big", SharedMemoryConnector(shm_dir), min_size=100_001),
        ])


def test_daos_splits_values_over_the_limit(standin: Any) -> None:
    from pxexec.connectors.daos import DAOSConnector

    conn = DAOSConnector("pool", "cont", max_value=4096)
    arr = np.arange(3000, dtype=np.float64)  # 24 kB -> 6 parts
    key = conn.put(serialize(arr))
    ddict = standin.DCont("pool", "cont").get("pxexec")
    assert all(len(ddict.get(f"{key}#{i}")) <= 4096 for i in range(6))
    assert np.array_equal(deserialize(conn.get(key)), arr)
    conn.evict(key)
    assert len(ddict) == 0
    big = DAOSConnector("pool", "cont", max_value=64 * 1024 * 1024)
    with pytest.raises(standin.PyDError, match="too large"):
        big.put([b"x" * (standin.VALUE_LIMIT + 1)])


def test_daos_leases(standin: Any) -> None:
    import time

    from pxexec.connectors.daos import DAOSConnector

    conn = DAOSConnector("pool", "cont", namespace="lease", lease=0.2)
    held, _orphan, dead = (conn.put(serialize(i)) for i in range(3))
    conn.adopt("alive", [held])
    conn.adopt("gone", [dead])
    time.sleep(0.3)
    conn.renew("alive", [held], 0.2)
    assert conn.reap() == 2
    assert conn.keys() == [held]


def test_daos_missing_pydaos_names_how(monkeypatch: Any) -> None:
    from pxexec.connectors.daos import DAOSConnector

    monkeypatch.setitem(sys.modules, "pydaos", None)
    with pytest.raises(MissingDependencyError, match="DAOS environment"):
        DAOSConnector("pool", "cont").get("pxexec:x")


@pytest.mark.skipif(importlib.util.find_spec("pydaos") is None
                    or "PXEXEC_TEST_DAOS_POOL" not in os.environ,
                    reason="pydaos (DAOS) is not installed, or PXEXEC_TEST_DAOS_POOL is unset")
def test_real_daos() -> None:  # pragma: no cover - needs a DAOS system
    from pxexec.connectors.daos import DAOSConnector

    conn = DAOSConnector(os.environ["PXEXEC_TEST_DAOS_POOL"],
                         os.environ.get("PXEXEC_TEST_DAOS_CONTAINER", "pxexec-test"))
    key = conn.put(serialize(np.arange(10)))
    assert np.array_equal(deserialize(conn.get(key)), np.arange(10))
    conn.evict(key)


def test_routing_by_size_type_tags_and_priority(shm_dir: str, tmp_path: Any) -> None:
    small_c, tagged_c = LocalConnector(), LocalConnector()
    arrays_c = SharedMemoryConnector(shm_dir)
    files_c = FileConnector(str(tmp_path))
    multi = MultiConnector([
        Route("small", small_c, max_size=1_000_000),
        Route("arrays", arrays_c, types=("numpy:ndarray",), min_size=1_000_001),
        Route("bulk", tagged_c, tags=frozenset({"bulk"}), priority=10),
        Route("files", files_c),
    ], default="files")
    store = Store("routed", multi)
    assert store.put({"a": 1}).startswith("small:")
    assert store.put(np.ones(200_000)).startswith("arrays:")
    assert store.put(b"x" * 2_000_000).startswith("files:")  # big, not an array
    assert store.put(b"x", tags=["bulk"]).startswith("bulk:")  # priority beats order
    key = store.put(np.ones(200_000))
    assert np.array_equal(store.get(key), np.ones(200_000))


def test_no_route_says_what_was_tried() -> None:
    multi = MultiConnector([Route("tiny", LocalConnector(), max_size=10)])
    with pytest.raises(NoRouteError) as info:
        Store("noroute", multi).put(b"x" * 100)
    message = str(info.value)
    assert "tiny" in message and "size <= 10" in message and "bytes" in message


def test_unknown_backend_key_and_dormant_routes(shm_dir: str) -> None:
    multi = MultiConnector([
        Route("here", SharedMemoryConnector(shm_dir)),
        Route("elsewhere", {"type": "nosuch-connector"}, host=r"no-such-host-\d+"),
    ])
    # the dormant route's connector was never imported or built
    assert isinstance(multi._by_name["elsewhere"].connector, dict)
    with pytest.raises(ConfigError, match="does not have"):
        multi.get("unknown:abc")
    with pytest.raises(ConfigError, match="exists only on hosts"):
        multi.get("elsewhere:abc")
    rebuilt = connector_from_config(multi.config())
    assert rebuilt.config() == multi.config()
    assert isinstance(rebuilt._by_name["elsewhere"].connector, dict)
    assert socket.gethostname()


def test_policy_tags_route_through_store_executor(shm_dir: str) -> None:
    import concurrent.futures as cf

    from pxexec.executor.facade import StoreExecutor
    from tests import workers

    bulk, other = LocalConnector(), LocalConnector()
    multi = MultiConnector([Route("bulk", bulk, tags=frozenset({"bulk"})),
                            Route("other", other)])
    store = Store("tags", multi)
    policy = Tagged(SizeAtLeast(1000), "bulk")
    with StoreExecutor(cf.ThreadPoolExecutor(1), store, policy) as ex:
        result = ex.submit(workers.double, np.ones(1000)).result()
        assert result.__px_factory__.key.startswith("bulk:")  # the result, tagged on the worker
        ex.free(result)


def test_example_routing_config_loads_and_routes(redis_url: str, monkeypatch: Any) -> None:
    config = load("examples/pxexec-routing.toml")
    multi = config.store.connector
    assert isinstance(multi, MultiConnector)
    assert multi.route_for(1000, dict).name == "small"
    assert multi.route_for(5_000_000, np.ndarray).name == "arrays"
    assert multi.route_for(5_000_000, bytes).name == "files"
    config.store.close()
