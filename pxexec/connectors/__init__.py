"""Connector registry: short names and URL schemes mapped to lazily imported classes.

Third parties register connectors with ``register_connector`` or through the
``pxexec.connectors`` entry-point group (name -> "module:Class").
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote, urlsplit

from pxexec.connectors.base import BaseConnector, Connector, ConnectorConfig
from pxexec.errors import ConfigError, MissingDependencyError, UnknownConnectorError

__all__ = [
    "BaseConnector",
    "Connector",
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


def connector_class(name: str) -> type[Any]:
    """The class registered under ``name``, imported on first use.

    >>> connector_class("shm").__name__, connector_class("shm-files").__name__
    ('ShmConnector', 'SharedMemoryConnector')
    """
    _load_entry_points()
    name = _SCHEMES.get(name, name)
    target = name if ":" in name else _REGISTRY.get(name)  # "module:Class" works too
    if target is None:
        raise UnknownConnectorError(
            f"Unknown connector {name!r}. Known connectors: {', '.join(known_connectors())}. "
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
            f"connectors: {', '.join(known_connectors())}; a third-party one is named "
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


def connector_from_url(url: str, **options: Any) -> Any:
    """Make a connector from a short name or URL.

    ``"local"``, ``"shm"`` (or ``"shm:///dir"``; the node store), ``"node"``,
    ``"shm-files"`` (one file per object), ``"file:///path"``,
    ``"redis://host:port/db"``, ``"rediss://..."``, ``"unix:///path/redis.sock"``.
    ``options`` are passed to the connector's constructor.

    >>> connector = connector_from_url("shm", namespace="url-demo")
    >>> type(connector).__name__, connector.path.endswith("url-demo")
    ('ShmConnector', True)
    >>> connector_from_url("redis://localhost:6379/0").address   # connects on first use
    'redis://localhost:6379/0'
    """
    if "://" not in url:  # a bare name: "local", "shm", or a registered third party
        scheme, colon, _ = url.partition(":")
        if colon and scheme in _URL_SCHEMES:
            raise ConfigError(
                f"Connector URL {_redacted(url)!r} is not a URL: write {scheme}:// followed by "
                f"{_URL_SCHEMES[scheme]}."
            )
        return connector_class(url)(**options)
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("redis", "rediss", "unix"):
        return connector_class("redis")(url, **options)
    if scheme in ("file", "shm", "shm-files", "node"):
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{scheme.capitalize()} URL {url!r} has a host part {parts.netloc!r}: a path "
                f"must be absolute and follow three slashes, e.g. '{scheme}:///dev/shm/px' "
                "(relative paths are refused: each process would find another directory)."
            )
        if not parts.path:
            if scheme != "file":  # node-local stores have a default directory
                return connector_class(scheme)(**options)
            raise ConfigError(f"File URL {url!r} needs a path, e.g. 'file:///scratch/pxexec'.")
        return connector_class(scheme)(unquote(parts.path), **options)
    return connector_class(scheme)(**options)


#: URL schemes and what must follow their '://'
_URL_SCHEMES = {
    "file": "an absolute path (file:///scratch/px)",
    "shm": "an absolute path (shm:///dev/shm/px), or nothing",
    "shm-files": "an absolute path (shm-files:///dev/shm/px), or nothing",
    "node": "an absolute path (node:///dev/shm/px), or nothing",
    "redis": "host:port/db (redis://localhost:6379/0)",
    "rediss": "host:port/db (rediss://host:6380/0)",
    "unix": "the socket's absolute path (unix:///run/redis.sock)",
}


def _redacted(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.partition(':')[0]}:***@{tail}" if at else url
