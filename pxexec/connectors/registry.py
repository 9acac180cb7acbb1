"""Connector registry: short names and URL schemes mapped to lazily imported classes.

Third parties register connectors with ``register_connector`` or through the
``pxexec.connectors`` entry-point group (name -> "module:Class"). The registry knows
only which class a name or scheme means; the class parses its own URLs
(``options_from_url``), so a URL is read in one place, by the connector it names.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from pxexec.connectors.base import ConnectorConfig
from pxexec.errors import ConfigError, MissingDependencyError, UnknownConnectorError

__all__ = [
    "config_from_url",
    "connector_class",
    "connector_from_config",
    "connector_from_url",
    "known_connectors",
    "register_connector",
]

_REGISTRY: dict[str, str] = {
    "local": "pxexec.connectors.local:LocalConnector",
    "file": "pxexec.connectors.file:FileConnector",
    "shm": "pxexec.connectors.node:ShmConnector",
    "shm-files": "pxexec.connectors.shm:SharedMemoryConnector",
    "node": "pxexec.connectors.node:NodeConnector",
    "redis": "pxexec.connectors.redis:RedisConnector",
    "multi": "pxexec.connectors.multi:MultiConnector",
    "daos": "pxexec.connectors.daos:DAOSConnector",
}
# URL schemes that map to a registered name
_SCHEMES = {"rediss": "redis", "unix": "redis"}
_EXTRAS = {"redis": "redis", "daos": "daos"}
_entry_points_loaded = False


@runtime_checkable
class _ParsesUrls(Protocol):
    @classmethod
    def options_from_url(cls, url: str) -> dict[str, Any]: ...


def register_connector(name: str, target: str | type[Any]) -> None:
    """Register a connector class (or its "module:Class" path) under ``name``.

    >>> register_connector("scratch-demo", "pxexec.connectors.local:LocalConnector")
    >>> type(connector_from_url("scratch-demo")).__name__
    'LocalConnector'
    """
    if isinstance(target, str) and ":" not in target:
        raise ConfigError(f"Connector target {target!r} must look like 'package.module:Class'.")
    if not isinstance(target, str):
        target = f"{target.__module__}:{target.__qualname__}"
    _REGISTRY[name] = target


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group="pxexec.connectors"):
        _REGISTRY.setdefault(ep.name, ep.value)


def known_connectors() -> list[str]:
    """Names of every registered connector (built-in and third-party).

    >>> {"local", "file", "shm", "redis", "multi", "daos"} <= set(known_connectors())
    True
    """
    _load_entry_points()
    return sorted(_REGISTRY)


def _known_list() -> str:
    schemes = ", ".join(f"{alias}:// ({name})" for alias, name in sorted(_SCHEMES.items()))
    return f"{', '.join(known_connectors())}; URL schemes also {schemes}"


def connector_class(name: str) -> type[Any]:
    """The class registered under ``name`` (or URL scheme), imported on first use.

    >>> connector_class("shm").__name__, connector_class("shm-files").__name__
    ('ShmConnector', 'SharedMemoryConnector')
    """
    _load_entry_points()
    name = _SCHEMES.get(name, name)
    target = name if ":" in name else _REGISTRY.get(name)  # "module:Class" works too
    if target is None:
        raise UnknownConnectorError(
            f"Unknown connector {name!r}. Known connectors: {_known_list()}. "
            "Third-party connectors register through the 'pxexec.connectors' entry point."
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except MissingDependencyError:
        raise
    except ImportError as exc:
        extra = _EXTRAS.get(name)
        if extra:
            feature = f"The {name!r} connector"
            raise MissingDependencyError(exc.name or name, extra, feature) from exc
        raise UnknownConnectorError(
            f"Connector {name!r}: cannot import module {module_name!r} ({exc}). Known "
            f"connectors: {_known_list()}; a third-party one is named "
            "'package.module:Class'."
        ) from exc
    except Exception as exc:  # the module raised while being imported
        raise UnknownConnectorError(
            f"Connector {name!r}: importing module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}."
        ) from exc
    cls: Any = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise UnknownConnectorError(
            f"Connector {name!r}: module {module_name!r} has no class {attr!r}."
        )
    return cls


def connector_from_config(config: ConnectorConfig) -> Any:
    """Rebuild a connector from the dict its ``config()`` returned.

    >>> from pxexec.connectors.shm import SharedMemoryConnector
    >>> original = SharedMemoryConnector(namespace="config-demo")
    >>> copy = connector_from_config(original.config())
    >>> copy.path == original.path
    True
    """
    if not isinstance(config, dict) or "type" not in config:
        raise ConfigError(
            f"A connector config must be a table with a 'type' key, got {config!r}."
        )
    return connector_class(str(config["type"])).from_config(config)


def _name_of(url: str) -> str:
    """The registry name (or scheme, or "module:Class") that ``url`` starts with."""
    if not isinstance(url, str) or not url:
        raise ConfigError(
            f"A connector URL or name is required, got {url!r}. Known connectors: "
            f"{_known_list()}."
        )
    scheme, sep, _ = url.partition("://")
    if sep:
        return scheme
    name, colon, _ = url.partition(":")
    _load_entry_points()
    if colon and (name in _REGISTRY or name in _SCHEMES):
        return name  # "file:/x": a URL missing its slashes (its connector says so)
    return url  # a bare name, or a third party's "package.module:Class"


def _parse(url: str) -> tuple[type[Any], dict[str, Any]]:
    cls = connector_class(_name_of(url))
    if isinstance(cls, _ParsesUrls):
        return cls, dict(cls.options_from_url(url))
    if "://" in url:
        raise ConfigError(
            f"The connector class {cls.__module__}:{cls.__qualname__} parses no URLs (it "
            f"has no options_from_url), got {url!r}: name it by its bare name."
        )
    return cls, {}


def config_from_url(url: str) -> ConnectorConfig:
    """What ``url`` names, as ``{"type": ..., **options}``: parsed by the connector
    it names, without connecting anything (a bad URL raises ``ConfigError`` here).

    >>> config_from_url("file:///scratch/px")
    {'type': 'file', 'directory': '/scratch/px'}
    >>> config_from_url("rediss://cache:6380/1")["type"]
    'redis'
    """
    cls, options = _parse(url)
    return {"type": getattr(cls, "type_name", "") or _name_of(url), **options}


def connector_from_url(url: str, **options: Any) -> Any:
    """Make a connector from a short name or URL.

    ``"local"``, ``"shm"`` (or ``"shm:///dir"``; the node store), ``"node"``,
    ``"shm-files"`` (one file per object), ``"file:///path"``,
    ``"redis://host:port/db"``, ``"rediss://..."``, ``"unix:///path/redis.sock"``.
    The connector the scheme names parses the rest (its ``options_from_url``);
    ``options`` are passed to its constructor with what the URL gave.

    >>> connector = connector_from_url("shm", namespace="url-demo")
    >>> type(connector).__name__, connector.path.endswith("url-demo")
    ('ShmConnector', True)
    >>> connector_from_url("redis://localhost:6379/0").address   # connects on first use
    'redis://localhost:6379/0'
    """
    cls, parsed = _parse(url)
    return cls(**{**parsed, **options})
