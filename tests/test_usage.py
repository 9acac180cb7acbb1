"""What a store holds: the usage API and ``pxexec ls`` / ``pxexec du`` on real backends."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from pxexec import Store
from pxexec.cli import main
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import MultiConnector, Route
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.store.usage import stored_objects, usage


def test_file_objects_have_sizes_ages_owners_and_leases(shm_dir: str) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="leased", lease=60)
    with Store("usage-leased", connector) as store:
        owner = store.owned_proxy(bytes(3_000_000))  # held by this process's lease keeper
        loose = store.put(bytes(1_000))
        found = {o.key: o for o in stored_objects(connector)}
        held = found[owner.__px_factory__.key]
        assert held.nbytes == os.path.getsize(connector.path_of(held.key))
        assert held.nbytes >= 3_000_000 and held.namespace == "leased"
        assert len(held.owners) == 1 and str(os.getpid()) in held.owners[0]
        assert held.age is not None and 0 <= held.age < 60
        assert held.expires_in is not None and 0 < held.expires_in <= 60
        assert found[loose].owners == ()
        total = usage(found.values())
        assert total.objects == 2 and total.nbytes == sum(o.nbytes for o in found.values())
        assert total.by_owner["(no lease)"][0] == 1
        owner.free()
        store.evict(loose)
    assert stored_objects(connector) == []


def test_redis_objects_have_sizes_and_ttls(redis_url: str) -> None:
    connector = RedisConnector(redis_url, prefix="usage-test", ttl=30)
    try:
        key = connector.put([b"x" * 5000, b"y" * 5000])
        (found,) = stored_objects(connector)
        assert (found.key, found.nbytes, found.namespace) == (key, 10_000, "usage-test")
        assert found.expires_in is not None and 0 < found.expires_in <= 30
        assert found.age is None  # Redis does not keep when a key was written
    finally:
        left = connector.keys()
        for k in left:
            connector.evict(k)
        connector.close()


def test_multi_connector_lists_each_route() -> None:
    small, big = LocalConnector(), LocalConnector()
    routed = MultiConnector([Route("small", small, max_size=100), Route("big", big)])
    keys = [routed.put([b"a" * 10]), routed.put([b"b" * 1000])]
    found = sorted(stored_objects(routed), key=lambda o: o.nbytes)
    assert [o.key for o in found] == keys
    assert [o.namespace.split("/")[0] for o in found] == ["small", "big"]


def test_ls_and_du_as_json(shm_dir: str, capsys: Any) -> None:
    one = SharedMemoryConnector(shm_dir, namespace="one")
    two = SharedMemoryConnector(shm_dir, namespace="two")
    keys = [one.put([bytes(2_000)]), one.put([bytes(3_000)]), two.put([bytes(500)])]
    assert main(["ls", f"shm-files://{shm_dir}", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(o["key"] for o in listed) == sorted(keys)
    assert {o["namespace"] for o in listed} == {"one", "two"}
    assert main(["du", f"shm-files://{shm_dir}", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["objects"] == 3 and summary["bytes"] == 5_500
    assert summary["namespaces"] == {"one": {"objects": 2, "bytes": 5_000},
                                     "two": {"objects": 1, "bytes": 500}}
    assert main(["du", f"shm-files://{shm_dir}", "--namespace", "two", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == 500


def test_ls_and_du_for_people(shm_dir: str, capsys: Any) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="human", lease=60)
    connector.put([bytes(2_500_000)])
    assert main(["ls", f"shm-files://{shm_dir}", "--lease", "60"]) == 0
    out = capsys.readouterr().out
    header, row = out.strip().splitlines()
    assert header.split() == ["namespace", "key", "size", "age", "owners", "lease"]
    assert "human" in row and "2.5 MB" in row and "left" in row
    assert main(["du", f"shm-files://{shm_dir}"]) == 0
    out = capsys.readouterr().out
    assert "1 object(s), 2.5 MB" in out and "(no lease)" in out


def test_ls_of_a_redis_store(redis_url: str, capsys: Any) -> None:
    connector = RedisConnector(redis_url, prefix="usage-cli")
    try:
        key = connector.put([b"z" * 1234])
        assert main(["ls", redis_url, "--prefix", "usage-cli", "--json"]) == 0
        (listed,) = json.loads(capsys.readouterr().out)
        assert (listed["key"], listed["nbytes"], listed["lease"]) == (key, 1234, "none")
    finally:
        connector.evict(key)
        connector.close()


@pytest.mark.parametrize("argv", [["ls"], ["du", "--config", "missing.toml"]])
def test_ls_without_a_store_is_a_usage_error(argv: list[str], capsys: Any) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_connectors_have_readable_reprs(shm_dir: str) -> None:
    shm = SharedMemoryConnector(shm_dir, namespace="r", lease=30)
    assert repr(shm) == f"SharedMemoryConnector({shm_dir!r}, namespace='r', lease=30)"
    local = LocalConnector(instance="demo")
    assert repr(local) == "LocalConnector(instance='demo', objects=0)"
    routed = MultiConnector([Route("a", local)], default="a")
    assert repr(routed) == "MultiConnector(a=LocalConnector(instance='demo', objects=0), " \
                           "default='a')"
    redis = RedisConnector("redis://user:secret@127.0.0.1:6379/0")
    assert "secret" not in repr(redis)


def test_ls_with_a_lease_never_deletes(shm_dir: str, capsys: Any) -> None:
    connector = SharedMemoryConnector(shm_dir, namespace="old")
    key = connector.put([bytes(100)])
    past = os.path.getmtime(connector.path_of(key)) - 3600
    os.utime(connector.path_of(key), (past, past))
    assert main(["ls", f"shm-files://{shm_dir}", "--lease", "60", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["lease"].startswith("expired") and connector.exists(key)


def test_debug_log_tells_proxy_decisions_puts_and_evictions(caplog: Any) -> None:
    import logging
    from concurrent.futures import ThreadPoolExecutor

    from pxexec import StoreExecutor
    from pxexec.policies import SizeAtLeast

    caplog.set_level(logging.DEBUG, logger="pxexec")
    with Store("logged", LocalConnector()) as store, \
            StoreExecutor(ThreadPoolExecutor(1), store, should_proxy=SizeAtLeast(1000)) as ex:
        sized = ex.submit(lambda data, label: (len(data), label), bytes(5000), "small")
        assert sized.result() == (5000, "small")
        ex.flush()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "proxying a bytes of about 5000 bytes" in text
    assert "not proxying a str" in text
    assert "in store 'logged'" in text and "stored local:" in text
    assert "evicted" in text


def _hold_big(n: int) -> Any:
    import numpy as np

    return np.ones(n)


def _after_the_put(figures: dict[str, dict[str, float]], name: str, least: float) -> bool:
    return all(name in f for f in figures.values()) and max(
        f[name] for f in figures.values()) >= least


def test_dask_workers_report_stored_bytes(dask_cluster: Any, shm_dir: str) -> None:
    import time

    from distributed import Client

    from pxexec import StoreExecutor
    from pxexec.engines.dask_usage import StoreUsagePlugin, install, stored_bytes

    client = Client(dask_cluster)
    install(client)
    try:
        store = Store("dash", SharedMemoryConnector(shm_dir, namespace="dash"))
        with StoreExecutor(client, store, close_engine=False) as ex:
            result = ex.submit(_hold_big, 1_000_000).result()  # 8 MB, put by a worker
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the figures arrive with heartbeats
                figures = stored_bytes(client)
                # what the assertions below read, every figure of every worker from a
                # heartbeat after the put (not only the first figure to show it)
                if len(figures) == len(dask_cluster.workers) and all(
                        _after_the_put(figures, name, least)
                        for name, least in [("pxexec_node_stored_bytes", 8_000_000),
                                            ("pxexec_bytes_put", 8_000_000),
                                            ("pxexec_node_stored_objects", 1)]):
                    break
                time.sleep(0.2)
            assert len(figures) == len(dask_cluster.workers)
            assert max(f["pxexec_node_stored_bytes"] for f in figures.values()) >= 8_000_000
            assert max(f["pxexec_bytes_put"] for f in figures.values()) >= 8_000_000
            assert max(f["pxexec_node_stored_objects"] for f in figures.values()) >= 1
            del result
        store.close()
    finally:
        client.unregister_worker_plugin(StoreUsagePlugin.name)
        client.close()
