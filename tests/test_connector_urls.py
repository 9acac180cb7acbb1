"""URLs: the registry maps a scheme to a connector class, the class parses the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from pxexec.codec.serialize import serialize
from pxexec.connectors import (
    config_from_url,
    connector_from_url,
    known_connectors,
    register_connector,
)
from pxexec.connectors.base import Buffer, ConnectorConfig, new_token
from pxexec.connectors.file import FileConnector
from pxexec.connectors.local import LocalConnector
from pxexec.connectors.multi import MultiConnector, Route, route_from_config
from pxexec.errors import ConfigError, MissingKeyError, UnknownConnectorError
from pxexec.testing import ConnectorConformance


@pytest.mark.parametrize(("url", "config"), [
    ("local", {"type": "local"}),
    ("file:///scratch/px", {"type": "file", "directory": "/scratch/px"}),
    ("file://localhost/scratch/a%20b", {"type": "file", "directory": "/scratch/a b"}),
    ("shm", {"type": "shm"}),
    ("shm://", {"type": "shm"}),
    ("shm:///dev/shm/x", {"type": "shm", "directory": "/dev/shm/x"}),
    ("node:///dev/shm/y", {"type": "node", "directory": "/dev/shm/y"}),
    ("shm-files:///dev/shm/z", {"type": "shm-files", "directory": "/dev/shm/z"}),
    ("redis", {"type": "redis"}),
    ("redis://h:1/0", {"type": "redis", "url": "redis://h:1/0"}),
    ("rediss://h:6380/2", {"type": "redis", "url": "rediss://h:6380/2"}),
    ("unix:///run/r.sock", {"type": "redis", "url": "unix:///run/r.sock"}),
])
def test_each_connector_parses_its_own_url(url: str, config: ConnectorConfig) -> None:
    assert config_from_url(url) == config


@pytest.mark.parametrize(("url", "match"), [
    ("file", "needs a directory"),
    ("file://", "needs a path"),
    ("file:relative", "is not a URL: write file://"),
    ("file://relative/sub", "has a host part 'relative'"),
    ("node://host/dir", "has a host part 'host'"),
    ("local://x", "takes no URL"),
    ("multi://x", "takes no URL"),
    ("redis:/h", "is not a URL: write redis://"),
    ("unix:relative.sock", "is not a URL: write unix://"),
    ("unix://relative.sock", "needs an absolute path"),
    ("redis://h:99999/0", "not a number from 0 to 65535"),
    ("redis://:pw@/0", "needs a host"),
    ("", "required"),
])
def test_a_bad_url_is_refused_before_any_io(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_url(url)
    with pytest.raises(ConfigError, match=match):
        connector_from_url(url)


def test_a_password_never_reaches_the_message() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_url("redis:user:hunter2@host")
    assert "hunter2" not in str(info.value)


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(UnknownConnectorError) as info:
        config_from_url("nosuch://x")
    message = str(info.value)
    assert all(name in message for name in known_connectors())
    assert "rediss://" in message and "unix://" in message


class PlainConnector:
    """A third-party connector that is no BaseConnector (and parses no URLs)."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.data: dict[str, bytes] = {}

    def put(self, frames: Sequence[Buffer]) -> str:
        key = new_token()
        self.data[key] = b"".join(bytes(f) for f in frames)
        return key


def test_a_third_party_class_without_a_url_parser() -> None:
    register_connector("plain-demo", PlainConnector)
    made = connector_from_url("plain-demo", size=3)
    assert isinstance(made, PlainConnector) and made.options == {"size": 3}
    assert config_from_url("plain-demo") == {"type": "plain-demo"}
    with pytest.raises(ConfigError, match="parses no URLs"):
        connector_from_url("plain-demo://x")


def test_routes_keep_their_url_until_active(tmp_path: Any) -> None:
    route = route_from_config({"name": "r", "connector": f"file://{tmp_path}"})
    assert route.connector == f"file://{tmp_path}"  # parsed where it becomes active
    routed = MultiConnector([
        route,
        Route("elsewhere", "nosuch://never-parsed", host=r"no-such-host-\d+"),
    ])
    assert isinstance(routed.routes[0].connector, FileConnector)
    assert routed.routes[0].connector.directory == str(tmp_path)
    assert routed.routes[1].connector == "nosuch://never-parsed"  # dormant: untouched
    assert routed.config()["routes"][1]["connector"] == "nosuch://never-parsed"
    with pytest.raises(ConfigError, match="is not a URL"):
        MultiConnector([Route("bad", "file:relative")])


def test_replace_of_a_key_without_a_route_is_a_missing_key() -> None:
    routed = MultiConnector([Route("only", LocalConnector())])
    with pytest.raises(MissingKeyError, match="names no route"):
        routed.replace("no-route-in-it", serialize(1))


class _BareKeyErrorReplace(LocalConnector):
    """What four connectors did before: a bare KeyError for a missing key."""

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        if not self.exists(key):
            raise KeyError(key)
        super().replace(key, frames)


def test_the_suite_fails_a_bare_key_error_from_replace() -> None:
    with pytest.raises(KeyError) as info:
        ConnectorConformance().test_replace_of_a_missing_key_raises_missing_key_error(
            _BareKeyErrorReplace())
    assert not isinstance(info.value, MissingKeyError)


def test_the_suite_fails_a_lost_capability() -> None:
    class Expecting(ConnectorConformance):
        expected_capabilities = {"ChoosesKeys", "ListsKeys", "Replaces", "Leases"}

    with pytest.raises(AssertionError):
        Expecting().test_declared_capabilities(LocalConnector())
