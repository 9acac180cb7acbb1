"""Sizes with units in configs, configuration from the environment, configs written back
to TOML, and Store.evict taking a proxy."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pxexec import Store, StoreExecutor
from pxexec.config import from_dict, load
from pxexec.config_io import env_overrides, tomllib
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import route_from_config
from pxexec.errors import ConfigError, MissingKeyError
from pxexec.policies import SizeAtLeast
from pxexec.store.ownership import OwnershipError, borrow

CONFIG = """
[store]
name = "env-test"
connector = "local"

[policy]
type = "size_at_least"
nbytes = "2MiB"

[executor]
ownership = true
"""


@pytest.fixture
def config_file(tmp_path: Path) -> str:
    path = tmp_path / "pxexec.toml"
    path.write_text(CONFIG)
    return str(path)


def test_sizes_with_units_in_policies_and_routes() -> None:
    assert SizeAtLeast("10MB").nbytes == 10_000_000
    config = from_dict({"store": {"name": "u", "connector": "local"},
                        "policy": {"type": "size_at_least", "nbytes": "1.5 GB"}})
    assert config.policy.nbytes == 1_500_000_000
    route = route_from_config({"name": "small", "connector": "local", "max_size": "64KiB"})
    assert route.max_size == 65536
    with pytest.raises(ConfigError, match=r"\[policy\]\.nbytes: '3 parsecs' is not a size"):
        from_dict({"store": {"name": "u", "connector": "local"},
                   "policy": {"type": "size_at_least", "nbytes": "3 parsecs"}})


def test_pxexec_config_names_the_file(config_file: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("PXEXEC_CONFIG", config_file)
    with StoreExecutor.from_config(ThreadPoolExecutor(1)) as ex:
        assert ex.store.name == "env-test"
        assert ex.should_proxy.nbytes == 2 * 2**20


def test_environment_variables_override_the_file(config_file: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("PXEXEC_STORE__NAME", "from-env")
    monkeypatch.setenv("PXEXEC_POLICY__NBYTES", "5kB")
    monkeypatch.setenv("PXEXEC_EXECUTOR__OWNERSHIP", "false")
    config = load(config_file)
    assert config.store.name == "from-env"
    assert config.policy.nbytes == 5_000
    assert config.executor_options == {"ownership": False}


def test_environment_alone_can_configure(monkeypatch: Any) -> None:
    monkeypatch.delenv("PXEXEC_CONFIG", raising=False)
    monkeypatch.setenv("PXEXEC_STORE__NAME", "env-only")
    monkeypatch.setenv("PXEXEC_STORE__CONNECTOR", "local")
    assert load().store.name == "env-only"


def test_no_config_anywhere_says_what_to_do(monkeypatch: Any) -> None:
    monkeypatch.delenv("PXEXEC_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="set PXEXEC_CONFIG"):
        load()


def test_a_bad_override_is_named(config_file: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("PXEXEC_EXECUTOR__OWNERSHIP", "perhaps")
    with pytest.raises(ConfigError, match=r"\[executor\]\.ownership must be true or false"):
        load(config_file)


def test_values_are_read_as_toml_when_they_parse() -> None:
    assert env_overrides({"PXEXEC_STORE__CACHE_SIZE": "4", "PXEXEC_A__B": '"quoted"',
                          "PXEXEC_A__C": "[1, 2]", "PXEXEC_SECRET": "x"}) == \
        {"store": {"cache_size": 4}, "a": {"b": "quoted", "c": [1, 2]}}


@pytest.mark.parametrize("text", [
    CONFIG,
    """
    [store]
    name = "routed-out"
    [store.connector]
    type = "multi"
    default = "big"
    [[store.connector.routes]]
    name = "small"
    connector = "local"
    max_size = "1MB"
    [[store.connector.routes]]
    name = "big"
    connector = "shm"
    [policy]
    type = "any"
    policies = [{ type = "type_in", types = ["pandas:DataFrame"] },
                { type = "not", policy = { type = "never" } }]
    """,
])
def test_a_config_written_to_toml_loads_back_the_same(text: str, tmp_path: Path) -> None:
    first = tmp_path / "first.toml"
    first.write_text("\n".join(line.strip() for line in text.splitlines()))
    config = load(str(first))
    second = tmp_path / "second.toml"
    second.write_text(config.to_toml())
    again = load(str(second))
    assert again.store.name == config.store.name
    assert again.store.connector.config() == config.store.connector.config()
    assert repr(again.policy) == repr(config.policy)
    assert again.executor_options == config.executor_options


def test_a_config_from_objects_writes_its_policy() -> None:
    from pxexec.config import Config
    from pxexec.policies import TypeIn

    config = Config(Store("objects", LocalConnector()), TypeIn(bytes) & ~SizeAtLeast(10))
    again = from_dict(tomllib.loads(config.to_toml()))
    assert repr(again.policy) == repr(config.policy)
    with pytest.raises(ConfigError, match="cannot be written to a config file"):
        Config(Store("lambda", LocalConnector()), lambda obj: True).to_toml()


def test_evict_takes_a_proxy_an_owner_or_a_key() -> None:
    store = Store("evict-proxy", LocalConnector())
    data = store.proxy([1, 2, 3])
    key = data.__px_factory__.key
    store.evict(data)
    assert not store.exists(key)
    owner = store.owned_proxy({"a": 1})
    owned_key = owner.__px_factory__.key
    ref = borrow(owner)
    with pytest.raises(OwnershipError, match="borrow cannot evict"):
        store.evict(ref)
    del ref
    store.evict(owner)  # the owner is freed
    assert not store.exists(owned_key)
    plain = store.put("text")
    store.evict(plain)
    assert not store.exists(plain)
    other = Store("evict-other", LocalConnector()).proxy([4])
    with pytest.raises(MissingKeyError, match="belongs to store 'evict-other'"):
        store.evict(other)
    with pytest.raises(TypeError, match="takes a key or a proxy"):
        store.evict(42)  # type: ignore[arg-type]
