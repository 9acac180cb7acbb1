from __future__ import annotations

import multiprocessing
import pickle
import subprocess
import sys
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest

from pxexec import MissingKeyError, Store, StoreConnectionError, is_resolved
from pxexec.connectors import connector_from_url
from pxexec.connectors.file import FileConnector
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import DeserializationError, MissingDependencyError
from pxexec.store.registry import clear_registry, get_or_create_store, registered_stores
from pxexec.store.store import Store as StoreClass
from tests import workers


@pytest.fixture(params=["local", "file", "shm", "redis"])
def store(request: Any, tmp_path: Any, shm_dir: str, redis_url: str) -> Any:
    name = f"s-{uuid.uuid4().hex[:6]}"
    connector: Any = {
        "local": lambda: LocalConnector(),
        "file": lambda: FileConnector(str(tmp_path)),
        "shm": lambda: SharedMemoryConnector(shm_dir),
        "redis": lambda: RedisConnector(redis_url, prefix=name),
    }[request.param]()
    with Store(name, connector) as s:
        yield s


def test_put_get_exists_evict(store: Store) -> None:
    key = store.put({"a": np.arange(3)})
    assert store.exists(key)
    assert np.array_equal(store.get(key)["a"], np.arange(3))
    store.evict(key)
    assert not store.exists(key)
    assert store.get(key, default="gone") == "gone"
    with pytest.raises(MissingKeyError) as info:
        store.get(key)
    message = str(info.value)
    assert key in message and store.name in message and "evicted" in message
    assert isinstance(info.value, KeyError)


def test_batches(store: Store) -> None:
    objs = [np.full(10, i) for i in range(5)]
    keys = store.put_batch(objs)
    assert all(np.array_equal(a, b) for a, b in zip(store.get_batch(keys), objs))
    proxies = store.proxy_batch(objs)
    assert [int(p[0]) for p in proxies] == list(range(5))
    store.evict_batch(keys)
    assert not any(store.exists(k) for k in keys)


def test_proxy_resolves_and_missing_key_at_resolve(store: Store) -> None:
    p = store.proxy([1, 2, 3])
    assert not is_resolved(p)
    assert p == [1, 2, 3] and is_resolved(p)
    q = store.proxy("x" * 10)
    store.evict(q.__px_factory__.key)
    with pytest.raises(MissingKeyError, match=store.name):
        str(q)


def test_proxy_from_key(store: Store) -> None:
    key = store.put((1, 2))
    p = store.proxy_from_key(key)
    assert p == (1, 2) and isinstance(p, tuple)


def test_writes_are_private_to_each_reader(store: Store) -> None:
    key = store.put(np.zeros(100_000))
    a = store.get(key)
    b = store.get(key)
    a[0] = 1
    assert b[0] == 0 and store.get(key)[0] == 0


def test_metrics(store: Store) -> None:
    key = store.put(b"x" * 1000)
    store.get(key)
    m = store.metrics
    assert m.puts == 1 and m.gets == 1 and m.bytes_put >= 1000 and m.bytes_got >= 1000


def test_redis_cache_hits_and_eviction(redis_url: str) -> None:
    store = Store("cache", RedisConnector(redis_url, prefix="cache"), cache_size=2)
    key = store.put(np.arange(10))
    first = store.get(key)
    second = store.get(key)
    first[0] = 99
    assert second[0] == 0 and store.metrics.cache_hits == 1
    store.evict(key)
    with pytest.raises(MissingKeyError):
        store.get(key)
    store.close()


def test_config_round_trip_and_registry(tmp_path: Any) -> None:
    store = Store("cfg", FileConnector(str(tmp_path)))
    assert Store.from_config(store.config()) is store  # same process: the same store
    assert pickle.loads(pickle.dumps(store)) is store
    clear_registry(close=False)
    rebuilt = Store.from_config(store.config())
    assert rebuilt is not store and rebuilt.config() == store.config()
    assert get_or_create_store(store.config()) is rebuilt
    key = store.put(1)
    assert rebuilt.get(key) == 1


def test_custom_serializer(tmp_path: Any) -> None:
    store = Store("custom", FileConnector(str(tmp_path)), serializer=_ser, deserializer=_de)
    key = store.put("hello")
    assert store.get(key) == "HELLO"
    clear_registry(close=False)
    assert Store.from_config(store.config()).get(key) == "HELLO"


def _ser(obj: str) -> list[bytes]:
    return [obj.upper().encode()]


def _de(buf: Any) -> str:
    return bytes(buf).decode()


def test_corrupted_payload_through_store(tmp_path: Any) -> None:
    connector = FileConnector(str(tmp_path))
    store = Store("corrupt", connector)
    key = store.put(np.arange(1000.0))
    path = f"{connector.path}/{key}"
    with open(path, "r+b") as f:
        f.truncate(500)
    with pytest.raises(DeserializationError):
        store.get(key)


def test_foreign_value_under_redis_key(redis_url: str) -> None:
    import redis

    store = Store("foreign", RedisConnector(redis_url, prefix="foreign"), cache_size=0)
    key = store.put(1)
    redis.Redis.from_url(redis_url).set(key, pickle.dumps("not ours"))
    with pytest.raises(DeserializationError, match="not written by pxexec"):
        store.get(key)


def test_unreachable_redis_at_resolve_names_address() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store("down", RedisConnector(f"redis://127.0.0.1:{port}/0", connect_timeout=1))
    p = store.proxy_from_key("pxexec:" + "0" * 32)
    with pytest.raises(StoreConnectionError, match=f"127.0.0.1:{port}"):
        len(p)


@pytest.mark.parametrize("method", ["spawn", "fork"])
@pytest.mark.parametrize("kind", ["file", "shm", "redis"])
def test_proxies_resolve_in_worker_processes(
    kind: str, method: str, tmp_path: Any, shm_dir: str, redis_url: str
) -> None:
    url = {"file": f"file://{tmp_path}", "shm": f"shm://{shm_dir}", "redis": redis_url}[kind]
    store = Store(f"procs-{kind}", connector_from_url(url))
    proxies = [store.proxy(np.full(1000, i, dtype=np.float64)) for i in range(6)]
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:
        results = list(pool.map(workers.describe, proxies))
        counts = list(pool.map(workers.resolve_and_count, proxies))
        mutated = pool.submit(workers.mutate, proxies[0]).result()
    assert [r[1] for r in results] == [1000.0 * i for i in range(6)]
    assert all(r[0] is False for r in results)  # arrived unresolved
    # one worker process builds the store once, whatever the number of proxies
    expected = len(registered_stores()) if method == "fork" else 1
    assert {c[1] for c in counts} == {expected}
    assert mutated == 1e9 and float(store.get(proxies[0].__px_factory__.key)[0]) == 0.0
    assert not any(is_resolved(p) for p in proxies)


def test_import_without_optional_dependencies() -> None:
    code = (
        "import sys\n"
        "for name in ['redis', 'numpy', 'pandas', 'polars', 'pyarrow', 'dask', 'distributed',"
        " 'parsl', 'cryptography', 'matplotlib', 'tqdm', 'scipy', 'proxystore', 'mypy']:\n"
        "    sys.modules[name] = None\n"
        "import os\n"
        "import pxexec, pxexec.cli, pxexec.codec.signing\n"
        "from pxexec.connectors.local import LocalConnector\n"
        "s = pxexec.Store('x', LocalConnector())\n"
        "assert s.proxy([1]) == [1]\n"
        "os.environ['PXEXEC_IMPORT_SECRET'] = 'k'\n"
        "signed = pxexec.Store('y', LocalConnector(), secret_env='PXEXEC_IMPORT_SECRET')\n"
        "assert signed.get(signed.put([2])) == [2]  # HMAC-SHA256 without cryptography\n"
        "try:\n"
        "    from pxexec.connectors import connector_from_url\n"
        "    connector_from_url('redis://localhost')\n"
        "except ImportError as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "MissingDependencyError" in out.stdout and "pxexec[redis]" in out.stdout


def test_missing_dependency_error_type() -> None:
    err = MissingDependencyError("redis", "redis", "The Redis connector")
    assert isinstance(err, ImportError) and "pip install 'pxexec[redis]'" in str(err)


def test_store_name_required() -> None:
    with pytest.raises(ValueError, match="name"):
        StoreClass("", LocalConnector())
