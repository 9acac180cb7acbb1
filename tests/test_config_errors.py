"""Configs and URLs that are wrong fail at load, with an error naming file and key."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from pxexec.config import from_dict, load
from pxexec.connectors import connector_from_url
from pxexec.connectors.redis import RedisConnector
from pxexec.connectors.shm import SharedMemoryConnector
from pxexec.errors import ConfigError, StoreIOError, UnknownConnectorError
from pxexec.policies import load_policy


def _write(tmp_path: Any, text: str) -> str:
    path = tmp_path / "px.toml"
    path.write_text(text)
    return str(path)


def test_a_directory_as_config(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load(str(tmp_path))


@pytest.fixture
def module_dir(tmp_path: Any, monkeypatch: Any) -> Any:
    (tmp_path / "px_broken_policy.py").write_text("raise RuntimeError('boom at import')\n")
    (tmp_path / "px_raising_factory.py").write_text(
        "from pxexec.policies import policy_factory\n"
        "@policy_factory\ndef make(**kw):\n    raise RuntimeError('boom in factory')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("px_broken_policy", "px_raising_factory"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(("policy", "message"), [
    ('type = "px_broken_policy:p"', "importing module 'px_broken_policy' raised RuntimeError"),
    ('type = "px_raising_factory:make"\nx = 1', "RuntimeError: boom in factory"),
    ('type = "os:system"', "os:system is not a policy"),
    ('type = "subprocess:getoutput"', "subprocess:getoutput is not a policy"),
    ('type = "builtins:print"', "not a policy"),
])
def test_policies_must_be_named_policies(module_dir: Any, policy: str, message: str) -> None:
    path = _write(module_dir, f'[store]\nname = "s"\nconnector = "local"\n[policy]\n{policy}\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert message in str(info.value) and path in str(info.value) and "[policy]" in str(info.value)


def test_os_system_never_runs(tmp_path: Any) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError):
        load_policy({"type": "os:system"})
    assert not marker.exists()


@pytest.mark.parametrize(("connector", "message"), [
    ('"nosuch.mod:C"', "cannot import module 'nosuch.mod'"),
    ('"redis://localhost:notaport/0"', "port that is not a number"),
    ('"file:relative"', "is not a URL"),
    ('"redis:/h"', "is not a URL"),
    ('"shm://relative/dir"', "has a host part 'relative'"),
    ('"file://relative/sub"', "has a host part 'relative'"),
    ('{ type = "redis", url = "redis://localhost:6379/0", ttl = "x" }', "ttl must be a positive"),
    ('{ type = "redis", url = "redis://localhost:6379/0", ttl = 0 }', "ttl must be a positive"),
    ('{ type = "redis", url = "redis://localhost:6379/0", ttl = -5 }', "ttl must be a positive"),
    ('{ type = "shm", directory = "relative/dir" }', "relative path"),
    ('{ type = "shm", lease = "x" }', "lease must be a positive"),
    ('{ type = "multi", routes = [{ name = "a", connector = "local", tags = "bulk" }] }',
     "tags must be a list of strings"),
])
def test_connector_mistakes_fail_at_load(tmp_path: Any, connector: str, message: str) -> None:
    path = _write(tmp_path, f'[store]\nname = "s"\nconnector = {connector}\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert message in str(info.value), str(info.value)
    assert path in str(info.value) and "[store].connector" in str(info.value)


def test_shm_tree_is_not_created_on_the_root_filesystem() -> None:
    with pytest.raises(StoreIOError, match=r"parent .* does not exist"):
        connector_from_url("shm:///nonexistent-pxexec/dir/deep")
    assert not os.path.exists("/nonexistent-pxexec")


def test_url_mistakes_in_code(tmp_path: Any) -> None:
    with pytest.raises(UnknownConnectorError, match="cannot import module"):
        connector_from_url("nosuch.mod:C")
    with pytest.raises(ConfigError, match="relative path"):
        SharedMemoryConnector("relative/dir")
    for bad in (0, -5, "x", True, float("inf")):
        with pytest.raises(ConfigError, match="ttl must be a positive"):
            RedisConnector("redis://localhost:6379/0", ttl=bad)


def test_signing_is_one_line(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("PXEXEC_CFG_SECRET", "s3cret")
    config = from_dict({"store": {"name": "s", "connector": "local",
                                  "secret_env": "PXEXEC_CFG_SECRET"}})
    assert config.store._signer is not None
