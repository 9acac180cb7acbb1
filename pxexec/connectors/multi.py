"""MultiConnector: route each object to the backend that suits it.

A route is a connector plus a rule: serialized size bounds, Python types
("module:Name" strings or classes, matched on the object's class hierarchy), tags,
a host pattern (a regular expression on the hostname: the backend exists only on
matching nodes), and a priority. The matching route with the highest priority
wins; ties keep the order written. ``default`` names the route used when none
matches. Keys record the route (``"name:inner-key"``), so ``get``/``exists``/
``evict`` go straight to the right backend from any process.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pxexec.connectors.base import (
    BaseConnector,
    Buffer,
    ChoosesKeys,
    ConnectorConfig,
    IdentifiesContent,
    Leases,
    ListsKeys,
    Replaces,
    check_options,
    flag,
    require,
)
from pxexec.errors import ConfigError, MissingKeyError, NoRouteError
from pxexec.type_names import type_matches, type_name

_NAME = re.compile(r"[A-Za-z0-9_-]+")


__all__ = ["MultiConnector", "NoRouteError", "Route", "route_from_config"]


@dataclass
class Route:
    """One backend of a MultiConnector and the objects it takes.

    Rules: serialized size bounds, types (classes or ``"module:Name"``), tags, and a
    ``host`` regular expression (a route for other hosts stays dormant).

    >>> from pxexec.connectors.local import LocalConnector
    >>> route = Route("arrays", LocalConnector(), types=("numpy:ndarray",), min_size=1_000)
    >>> route.types
    ('numpy:ndarray',)
    """

    name: str
    #: a connector; or its config or URL, built once the route is active on this host
    connector: Any
    min_size: int | None = None
    max_size: int | None = None
    types: tuple[str, ...] = ()
    tags: frozenset[str] = field(default_factory=frozenset)
    host: str | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(f"Route name {self.name!r} must use letters, digits, '_' or '-'.")
        for option in ("types", "tags"):
            value = getattr(self, option)
            if isinstance(value, (str, bytes)) or not all(
                    isinstance(v, (str, type)) for v in value):
                raise ConfigError(
                    f"Route {self.name!r}: {option} must be a list, e.g. {option} = "
                    f"[{value!r}], got {value!r}."
                )
        self.types = tuple(type_name(t, "Route(types=...)") for t in self.types)
        self.tags = frozenset(self.tags)

    @property
    def active(self) -> bool:
        return self.host is None or re.fullmatch(self.host, socket.gethostname()) is not None

    def accepts(self, size: int, obj_type: type[Any] | None, tags: frozenset[str]) -> bool:
        if self.min_size is not None and size < self.min_size:
            return False
        if self.max_size is not None and size > self.max_size:
            return False
        if self.tags and not self.tags <= tags:
            return False
        return not self.types or (
            obj_type is not None and type_matches(obj_type, self.types)
        )

    def describe(self) -> str:
        rules = []
        if self.min_size is not None:
            rules.append(f"size >= {self.min_size}")
        if self.max_size is not None:
            rules.append(f"size <= {self.max_size}")
        if self.types:
            rules.append(f"types {list(self.types)}")
        if self.tags:
            rules.append(f"tags {sorted(self.tags)}")
        if self.host:
            rules.append(f"host ~ {self.host!r}")
        return f"{self.name!r} ({', '.join(rules) or 'anything'})"

    def config(self) -> dict[str, Any]:
        connector = self.connector if isinstance(self.connector, (dict, str)) else (
            self.connector.config()
        )
        return {
            "name": self.name, "connector": connector, "min_size": self.min_size,
            "max_size": self.max_size, "types": list(self.types), "tags": sorted(self.tags),
            "host": self.host, "priority": self.priority,
        }


class MultiConnector(BaseConnector):
    """Routes objects to backends by size, type, tags and host; see the module doc.

    >>> import numpy as np
    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> routed = MultiConnector([
    ...     Route("small", LocalConnector(), max_size=1_000),
    ...     Route("arrays", LocalConnector(), types=("numpy:ndarray",)),
    ... ])
    >>> store = Store("multi-demo", routed)
    >>> store.put(b"tiny").split(":")[0], store.put(np.zeros(1_000)).split(":")[0]
    ('small', 'arrays')
    """

    type_name = "multi"
    cacheable = False  # backends' reads may be zero-copy maps: decode each on its own

    def __init__(self, routes: Sequence[Route], default: str | None = None) -> None:
        if not routes:
            raise ConfigError("A MultiConnector needs at least one route.")
        names = [r.name for r in routes]
        if len(set(names)) != len(names):
            raise ConfigError(f"Route names must be unique, got {names}.")
        if default is not None and default not in names:
            raise ConfigError(f"default route {default!r} is not one of {names}.")
        self.routes = list(routes)
        self.default = default
        self._by_name = {r.name: r for r in self.routes}
        #: connectors of dormant routes with transfer, made on first use (see _reader)
        self._readers: dict[str, Any] = {}
        # the order in which routes are tried: priority first, then as written
        order = sorted(range(len(self.routes)), key=lambda i: (-self.routes[i].priority, i))
        self._order = [self.routes[i] for i in order]
        for route in self.routes:  # dormant routes stay a config (or URL), never imported
            if route.active and isinstance(route.connector, dict):
                from pxexec.connectors.registry import connector_from_config

                route.connector = connector_from_config(route.connector)
            elif route.active and isinstance(route.connector, str):
                from pxexec.connectors.registry import connector_from_url

                route.connector = connector_from_url(route.connector)

    # -- routing ----------------------------------------------------------------------

    def route_for(self, size: int, obj_type: type[Any] | None = None,
                  tags: Sequence[str] = ()) -> Route:
        """The route an object of ``size`` bytes, ``obj_type`` and ``tags`` takes."""
        tagset = frozenset(tags)
        for route in self._order:
            if route.active and route.accepts(size, obj_type, tagset):
                return route
        if self.default is not None and self._by_name[self.default].active:
            return self._by_name[self.default]
        kind = f"{obj_type.__module__}:{obj_type.__qualname__}" if obj_type else "unknown type"
        tried = "; ".join(
            r.describe() + ("" if r.active else " [dormant on this host]") for r in self._order
        )
        raise NoRouteError(
            f"No route accepts an object of {size} bytes of {kind} with tags "
            f"{sorted(tagset)}. Tried: {tried}. Add a route for it or set a default route."
        )

    def _backend(self, key: str) -> tuple[Any, str] | None:
        name, sep, inner = key.partition(":")
        if not sep:
            return None
        route = self._by_name.get(name)
        if route is None:
            raise ConfigError(
                f"Key {key!r} names backend {name!r}, which this MultiConnector does not "
                f"have (routes: {sorted(self._by_name)}). Use the configuration that wrote it."
            )
        if not route.active:
            return self._reader(route, key), inner
        return route.connector, inner

    def _reader(self, route: Route, key: str) -> Any:
        """The connector that reads and frees keys of a route dormant on this host.

        A node-local backend with direct transfer (its keys name the node that holds
        the object) serves them on every host: its connector is made here on first
        use, for reads (a copy pulled into this node's store) and frees (which reach
        the holder and every copy). Other dormant backends cannot be reached here.
        """
        reader = self._readers.get(route.name)
        if reader is not None:
            return reader
        config = route.connector if isinstance(route.connector, dict) else {}
        if not config.get("transfer"):
            raise ConfigError(
                f"Key {key!r} lives in backend {route.name!r}, which exists only on hosts "
                f"matching {route.host!r}; this host is {socket.gethostname()!r}. Give that "
                "backend direct transfer (a node-local store with transfer=True) to read and "
                "free its objects from other hosts, or route them to a store every host reaches."
            )
        from pxexec.connectors import connector_from_config

        reader = self._readers[route.name] = connector_from_config(config)
        return reader

    # -- objects ----------------------------------------------------------------------

    def put(self, frames: Sequence[Buffer], *, obj_type: type[Any] | None = None,
            tags: Sequence[str] = ()) -> str:
        size = sum(memoryview(f).nbytes for f in frames)
        route = self.route_for(size, obj_type, tags)
        return f"{route.name}:{route.connector.put(frames)}"

    def new_key(self, nbytes: int, *, obj_type: type[Any] | None = None,
                tags: Sequence[str] = ()) -> str | None:
        """A key on the route this object takes, or None if that backend cannot
        choose keys (then ``put`` picks one while writing)."""
        route = self.route_for(nbytes, obj_type, tags)
        if not isinstance(route.connector, ChoosesKeys):
            return None
        inner = route.connector.new_key(nbytes)
        return None if inner is None else f"{route.name}:{inner}"

    @property
    def located(self) -> bool:
        """Whether a backend's reads on another node move the object there."""
        return any(flag(route.connector, "located") for route in self.routes)

    def readonly_views_for(self, key: str) -> bool:
        """Whether ``key``'s backend returns read-only views of immutable memory (the node
        store): the store decodes those without copying, as it would from that backend."""
        target = self._backend(key)
        return target is not None and bool(getattr(target[0], "readonly_views", False))

    def binds_keys(self, key: str) -> bool:
        """Whether the backend of ``key`` writes under keys chosen first (signed stores)."""
        target = self._backend(key)
        return target is not None and isinstance(target[0], ChoosesKeys)

    def put_at(self, key: str, frames: Sequence[Buffer]) -> None:
        target = self._backend(key)
        if target is None:
            raise KeyError(f"{key!r} is not a key of this MultiConnector (no route name).")
        require(target[0], ChoosesKeys, "write under a chosen key").put_at(target[1], frames)

    def put_batch(self, payloads: Sequence[Sequence[Buffer]]) -> list[str]:
        groups: dict[str, list[int]] = {}
        for i, frames in enumerate(payloads):
            size = sum(memoryview(f).nbytes for f in frames)
            groups.setdefault(self.route_for(size).name, []).append(i)
        keys: list[str] = [""] * len(payloads)
        for name, indices in groups.items():
            inner = self._by_name[name].connector.put_batch([payloads[i] for i in indices])
            for i, key in zip(indices, inner):
                keys[i] = f"{name}:{key}"
        return keys

    def get(self, key: str) -> Buffer | None:
        target = self._backend(key)
        return None if target is None else target[0].get(target[1])

    def get_identified(self, key: str) -> tuple[Buffer, Hashable, bool] | None:
        """``get(key)`` with its backend's id of the bytes (None where it names none)
        and whether the backend verified them (False where it names none)."""
        target = self._backend(key)
        if target is None:
            return None
        backend, inner = target
        if isinstance(backend, IdentifiesContent):
            got: tuple[Buffer, Hashable, bool] | None = backend.get_identified(inner)
            return got
        buffer = backend.get(inner)
        return None if buffer is None else (buffer, None, False)

    def get_batch(self, keys: Sequence[str]) -> list[Buffer | None]:
        results: list[Buffer | None] = [None] * len(keys)
        groups: dict[int, tuple[Any, list[int], list[str]]] = {}
        for i, key in enumerate(keys):
            target = self._backend(key)
            if target is not None:
                entry = groups.setdefault(id(target[0]), (target[0], [], []))
                entry[1].append(i)
                entry[2].append(target[1])
        for connector, indices, inner in groups.values():
            for i, value in zip(indices, connector.get_batch(inner)):
                results[i] = value
        return results

    def exists(self, key: str) -> bool:
        target = self._backend(key)
        return False if target is None else bool(target[0].exists(target[1]))

    def evict(self, key: str) -> None:
        target = self._backend(key)
        if target is not None:
            target[0].evict(target[1])

    def evict_batch(self, keys: Sequence[str]) -> None:
        for connector, inner in self._group(keys):
            connector.evict_batch(inner)

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        target = self._backend(key)
        if target is None:
            raise MissingKeyError(key, f"multi ({', '.join(self._by_name)})",
                                  "The key names no route of this MultiConnector.")
        backend = require(target[0], Replaces, "replace objects")
        try:
            backend.replace(target[1], frames)
        except MissingKeyError as exc:  # name the key as the caller knows it
            route = key.partition(":")[0]
            raise MissingKeyError(key, f"route {route!r}: {exc.store}", exc.detail) from None

    def _group(self, keys: Sequence[str]) -> list[tuple[Any, list[str]]]:
        groups: dict[int, tuple[Any, list[str]]] = {}
        for key in keys:
            target = self._backend(key)
            if target is not None:
                groups.setdefault(id(target[0]), (target[0], []))[1].append(target[1])
        return list(groups.values())

    def keys(self) -> list[str]:
        """Keys stored in every active backend that can list its keys."""
        found = []
        for route in self.routes:
            if route.active and isinstance(route.connector, ListsKeys):
                listed = route.connector.keys()
                found += [f"{route.name}:{k}" for k in listed]
        return found

    # -- leases -----------------------------------------------------------------------

    @property
    def lease_seconds(self) -> float | None:
        """The shortest lease of the active backends (None: none has one)."""
        present = [x for x in (c.lease_seconds for c in self._leasing()) if x]
        return min(present) if present else None

    @property
    def tracks_owners(self) -> bool:
        """Holders are recorded through a MultiConnector only where a backend has a lease
        (as before the contract named this; backends that track owners without a lease
        are not told of holders through it)."""
        return self.lease_seconds is not None

    def _leasing(self) -> list[Leases]:
        return [r.connector for r in self.routes
                if r.active and isinstance(r.connector, Leases)]

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        for connector, inner in self._group(keys):
            if isinstance(connector, Leases):
                connector.adopt(owner, inner)

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        grouped = {id(c): (c, inner) for c, inner in self._group(keys)}
        for route in self.routes:  # file backends renew a heartbeat even with no keys
            if route.active and id(route.connector) not in grouped:
                grouped[id(route.connector)] = (route.connector, [])
        for connector, inner in grouped.values():
            lease = connector.lease_seconds if isinstance(connector, Leases) else None
            if lease:
                connector.renew(owner, inner, lease)

    def reap(self) -> int:
        return sum(int(c.reap()) for c in self._leasing())

    # -- config -----------------------------------------------------------------------

    def __repr__(self) -> str:
        routes = ", ".join(f"{r.name}={r.connector!r}" if r.active else f"{r.name}=(dormant)"
                           for r in self.routes)
        return f"MultiConnector({routes}, default={self.default!r})"

    def config(self) -> ConnectorConfig:
        return {
            "type": self.type_name,
            "routes": [r.config() for r in self.routes],
            "default": self.default,
        }

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> MultiConnector:
        options = check_options(cls.type_name, config, {"routes", "default"})
        routes = options.get("routes")
        if not isinstance(routes, list) or not routes:
            raise ConfigError("A 'multi' connector needs a non-empty list of 'routes'.")
        return cls([route_from_config(r, i) for i, r in enumerate(routes)],
                   default=options.get("default"))

    def close(self) -> None:
        for route in self.routes:
            if route.active and not isinstance(route.connector, (dict, str)):
                route.connector.close()
        for reader in self._readers.values():
            reader.close()


ROUTE_KEYS = {"name", "connector", "min_size", "max_size", "types", "tags", "host", "priority"}


def route_from_config(table: Any, index: int = 0) -> Route:
    """A Route from a config table; its connector is a URL or a connector table.

    >>> route_from_config({"name": "files", "connector": "shm", "min_size": 10_000})
    Route(name='files', ...)
    """
    where = f"routes[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table.")
    unknown = set(table) - ROUTE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: "
                          f"{sorted(ROUTE_KEYS)}.")
    if "name" not in table or "connector" not in table:
        raise ConfigError(f"{where} needs a 'name' and a 'connector'.")
    connector = table["connector"]
    host = table.get("host")
    if not isinstance(connector, (str, dict)):
        raise ConfigError(f"{where}.connector must be a URL or a table with a 'type'.")
    sizes = {}
    for bound in ("min_size", "max_size"):
        value = table.get(bound)
        if isinstance(value, str):  # a size with a unit: "10MB", "1MiB"
            from pxexec.units import parse_bytes

            try:
                value = parse_bytes(value)
            except ConfigError as exc:
                raise ConfigError(f"{where}.{bound}: {exc}") from None
        sizes[bound] = value
    for bound in ("min_size", "max_size", "priority"):
        value = sizes.get(bound, table.get(bound))
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ConfigError(f"{where}.{bound} must be a whole number or a size such as "
                              f"'10MB', got {value!r}.")
    for option in ("types", "tags"):
        value = table.get(option, ())
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{option} must be a list of strings, e.g. {option} = "
                              f"[{value!r}], got {value!r}.")
    if host is not None:
        try:
            re.compile(host)
        except re.error as exc:
            raise ConfigError(f"{where}.host is not a regular expression: {exc}.") from exc
    return Route(
        name=str(table["name"]), connector=connector, min_size=sizes["min_size"],
        max_size=sizes["max_size"], types=tuple(table.get("types", ())),
        tags=frozenset(table.get("tags", ())), host=host, priority=int(table.get("priority", 0)),
    )

