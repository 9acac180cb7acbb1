"""The connector contract: moving bytes in and out of a backend.

A connector knows nothing of Python objects. ``put`` takes a sequence of buffers
(the frames of one payload) and returns a key, a small string; ``get`` returns one
buffer holding the concatenated frames, or ``None`` when the key is missing.

The contract has three parts; ``pxexec.testing.ConnectorConformance`` checks each:

- **Required** (``Connector``): ``put``, ``get``, ``exists``, ``evict``, their batch
  forms, ``config``/``from_config`` (a connector travels, and pickles, as its config)
  and ``close``. Every connector has them; ``BaseConnector`` writes the batches as loops.
- **Capabilities**: runtime-checkable Protocols, each a group of methods that pxexec
  calls only on connectors that have them (``isinstance(connector, Replaces)``):

  ============================  =====================================================
  ``ChoosesKeys``               ``new_key``, ``put_at``: write under a key chosen first
                                (a signed store binds the key into the signature)
  ``Replaces``                  ``replace``: overwrite an object (``ownership.update``)
  ``Leases``                    ``lease_seconds``, ``tracks_owners``, ``adopt``,
                                ``renew``, ``reap``: objects a process holds stay while
                                it lives (``pxexec.store.leases``)
  ``ListsKeys``                 ``keys``: what is stored (``pxexec usage``, tools)
  ``RoutesObjects``             ``route_for``; ``put``/``new_key`` take ``obj_type``
                                and ``tags`` (the MultiConnector)
  ``AllocatesInPlace``          ``allocate``, ``seal``: build an object in the store
                                (``Store.empty``)
  ``IdentifiesContent``         ``get_identified``: ``get`` plus a token naming the
                                stored bytes and whether the connector verified them
                                (a Store verifies each payload once)
  ============================  =====================================================

- **Flags**: class attributes that say how a connector behaves, read with ``flag``:
  ``cacheable`` (default True: a Store may keep recent reads; False where reads are
  already local memory), ``readonly_views`` (default False: ``get`` returns
  read-only views of shared memory, so a Store decodes them without a copy) and
  ``located`` (default False: a read costs the same on every node; True where a
  read on another node moves the object there, as with the node store's transfer).

URLs: a connector parses its own (the classmethod ``options_from_url`` returns
constructor options, or raises ``ConfigError`` before any I/O); the registry
(``pxexec.connectors.registry``) only maps a name or scheme to the class.

Two optional methods only improve messages: ``missing_detail(key)`` and
``describe_key(key)`` say why or where a missing key may have gone.

``capabilities(connector)`` names the capabilities a connector has:

>>> from pxexec.connectors.local import LocalConnector
>>> sorted(capabilities(LocalConnector()))
['ChoosesKeys', 'ListsKeys', 'Replaces']
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

Buffer = Any  # bytes, bytearray, memoryview (an mmap-backed view is fine)
ConnectorConfig = dict[str, Any]

__all__ = [
    "CAPABILITIES",
    "FLAGS",
    "AllocatesInPlace",
    "BaseConnector",
    "ChoosesKeys",
    "Connector",
    "IdentifiesContent",
    "Leases",
    "ListsKeys",
    "Replaces",
    "RoutesObjects",
    "capabilities",
    "check_directory_options",
    "check_options",
    "directory_from_url",
    "flag",
    "new_token",
    "require",
]


@runtime_checkable
class Connector(Protocol):
    """What every backend implements. Keys are strings; evict is idempotent.

    ``put`` takes the frames of a serialized object (written without joining them) and
    returns a new key; ``get`` returns one buffer or None.

    >>> from pxexec.connectors.local import LocalConnector
    >>> connector: Connector = LocalConnector()
    >>> key = connector.put([b"ab", b"cd"])
    >>> bytes(connector.get(key)), connector.get("missing")
    (b'abcd', None)
    """

    def put(self, frames: Sequence[Buffer]) -> str: ...

    def get(self, key: str) -> Buffer | None: ...

    def exists(self, key: str) -> bool: ...

    def evict(self, key: str) -> None: ...

    def put_batch(self, payloads: Sequence[Sequence[Buffer]]) -> list[str]: ...

    def get_batch(self, keys: Sequence[str]) -> list[Buffer | None]: ...

    def evict_batch(self, keys: Sequence[str]) -> None: ...

    def config(self) -> ConnectorConfig: ...

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> Connector: ...

    def close(self) -> None: ...


# -- capabilities ---------------------------------------------------------------------


@runtime_checkable
class ChoosesKeys(Protocol):
    """Writes under a key chosen before the write (ProxyStore calls it deferrable).

    ``new_key(nbytes)`` returns a fresh key for an object of ``nbytes`` (or None where
    this object's key is chosen while writing, as a MultiConnector's backend may);
    ``put_at(key, frames)`` stores a new object under it. A signed Store binds the key
    into the signature, so an object copied under another key is refused. (A connector
    that chooses keys for some objects only also says so per key: ``binds_keys(key)``.)

    >>> from pxexec.connectors.local import LocalConnector
    >>> connector = LocalConnector()
    >>> key = connector.new_key(2)
    >>> connector.put_at(key, [b"hi"]); bytes(connector.get(key))
    b'hi'
    """

    def new_key(self, nbytes: int) -> str | None: ...

    def put_at(self, key: str, frames: Sequence[Buffer]) -> None: ...


@runtime_checkable
class Replaces(Protocol):
    """Overwrites an existing object in place.

    ``replace(key, frames)`` raises ``MissingKeyError`` (a ``KeyError``) naming the
    key and the store when ``key`` holds no object: it never creates one.

    >>> from pxexec.connectors.local import LocalConnector
    >>> connector = LocalConnector()
    >>> try:
    ...     connector.replace("local:gone", [b"x"])
    ... except KeyError as exc:
    ...     print(type(exc).__name__, exc.key)
    MissingKeyError local:gone
    """

    def replace(self, key: str, frames: Sequence[Buffer]) -> None: ...


@runtime_checkable
class Leases(Protocol):
    """Objects held by a live process stay; those of a process that died go.

    ``lease_seconds``: the lease period (None: held objects never expire, yet
    ``tracks_owners`` may still record holders so that a dead process's are reaped).
    ``adopt(owner, keys)`` records ``owner`` (``pxexec.connectors.owners.process_owner``)
    as holding ``keys``; ``renew(owner, keys, seconds)`` extends its lease on them
    (one batched call); ``reap()`` deletes what owners that are gone held and returns
    how many objects went. Objects a live owner holds are never reaped.

    >>> from pxexec.connectors.local import LocalConnector
    >>> from pxexec.connectors.shm import SharedMemoryConnector
    >>> isinstance(SharedMemoryConnector(namespace="lease-doc"), Leases)
    True
    >>> isinstance(LocalConnector(), Leases)   # its objects die with its process
    False
    """

    @property
    def lease_seconds(self) -> float | None: ...

    @property
    def tracks_owners(self) -> bool: ...

    def adopt(self, owner: str, keys: Sequence[str]) -> None: ...

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None: ...

    def reap(self) -> int: ...


@runtime_checkable
class ListsKeys(Protocol):
    """Lists the keys it stores (``keys()``; for usage reports, tools and tests).

    >>> from pxexec.connectors.local import LocalConnector
    >>> connector = LocalConnector()
    >>> key = connector.put([b"x"])
    >>> connector.keys() == [key]
    True
    """

    def keys(self) -> list[str]: ...


@runtime_checkable
class RoutesObjects(Protocol):
    """Chooses a backend per object: a Store passes each object's type and tags.

    ``route_for(size, obj_type, tags)`` names the route an object takes; ``put`` (and
    ``new_key``, if it chooses keys) take the keywords ``obj_type`` and ``tags``.

    >>> from pxexec.connectors.local import LocalConnector
    >>> from pxexec.connectors.multi import MultiConnector, Route
    >>> routed = MultiConnector([Route("tagged", LocalConnector(), tags={"big"}),
    ...                          Route("rest", LocalConnector())])
    >>> isinstance(routed, RoutesObjects), routed.route_for(10, bytes, ["big"]).name
    (True, 'tagged')
    """

    def route_for(self, size: int, obj_type: type[Any] | None = None,
                  tags: Sequence[str] = ()) -> Any: ...


@runtime_checkable
class AllocatesInPlace(Protocol):
    """Builds objects in place: ``allocate(nbytes)`` returns a key and a writable
    buffer, ``seal(key)`` publishes the filled buffer (a ``KeyError`` for a key that
    is not an unsealed allocation of this process). Nobody sees it before; a buffer
    dropped before ``seal`` gives its space back.

    >>> import tempfile
    >>> from pxexec.connectors.node import NodeConnector
    >>> connector = NodeConnector(tempfile.mkdtemp(), chunk=1 << 20)
    >>> key, buffer = connector.allocate(3)
    >>> memoryview(buffer).cast("B")[:] = b"abc"
    >>> connector.seal(key); bytes(connector.get(key))
    b'abc'
    >>> connector.evict(key); del buffer
    """

    def allocate(self, nbytes: int) -> tuple[str, Any]: ...

    def seal(self, key: str) -> None: ...


@runtime_checkable
class IdentifiesContent(Protocol):
    """Names what it returns: ``get_identified(key)`` is ``(buffer, token, checked)``:
    ``get(key)``, a token that differs whenever the bytes under ``key`` may differ (the
    node store's object id: a replaced or re-stored object gets a new one), and whether
    the connector itself verified these bytes' XXH3 digests in this process (the node
    store, while pulling them from another node); None for a missing key.

    A reader that verified the payload under ``(key, token)`` once need not verify it
    again, nor one the connector checked (``Store`` checks the XXH3 digests of large
    frames once per process).

    >>> import tempfile
    >>> from pxexec.connectors.node import NodeConnector
    >>> connector = NodeConnector(tempfile.mkdtemp(), chunk=1 << 20)
    >>> key = connector.put([b"abc"])
    >>> (buffer, first, checked), (_, again, _) = (connector.get_identified(key),
    ...                                            connector.get_identified(key))
    >>> bytes(buffer), first == again, checked, connector.get_identified("0" * 32)
    (b'abc', True, False, None)
    >>> connector.replace(key, [b"xyz"]); connector.get_identified(key)[1] != first
    True
    >>> connector.evict(key); del buffer
    """

    def get_identified(self, key: str) -> tuple[Buffer, Hashable, bool] | None: ...


#: every capability, by name
CAPABILITIES: dict[str, type[Any]] = {
    "AllocatesInPlace": AllocatesInPlace,
    "ChoosesKeys": ChoosesKeys,
    "IdentifiesContent": IdentifiesContent,
    "Leases": Leases,
    "ListsKeys": ListsKeys,
    "Replaces": Replaces,
    "RoutesObjects": RoutesObjects,
}

#: behaviour flags and their values for a connector that does not set them
FLAGS: dict[str, bool] = {"cacheable": True, "readonly_views": False, "located": False}


def capabilities(connector: object) -> frozenset[str]:
    """The names of the capabilities ``connector`` has (see the module doc).

    >>> from pxexec.connectors.node import NodeConnector
    >>> sorted(capabilities(NodeConnector))  # checked on the class: nothing is made
    ['AllocatesInPlace', 'IdentifiesContent', 'Leases', 'ListsKeys', 'Replaces']
    """
    return frozenset(name for name, protocol in CAPABILITIES.items()
                     if isinstance(connector, protocol))


def flag(connector: object, name: Literal["cacheable", "readonly_views", "located"]) -> bool:
    """The behaviour flag ``name`` of ``connector`` (its default where it sets none).

    >>> from pxexec.connectors.local import LocalConnector
    >>> flag(LocalConnector(), "cacheable"), flag(LocalConnector(), "readonly_views")
    (False, False)
    """
    if name not in FLAGS:
        raise ValueError(f"{name!r} is not a connector flag; the flags are {sorted(FLAGS)}.")
    return bool(getattr(connector, name, FLAGS[name]))


def require(connector: Any, capability: Any, action: str) -> Any:
    """``connector`` if it has ``capability`` (one of ``CAPABILITIES``), else a
    ``ConfigError`` saying which connectors can ``action`` (raised before any I/O).

    >>> from pxexec.connectors.local import LocalConnector
    >>> require(LocalConnector(), Replaces, "replace objects").__class__.__name__
    'LocalConnector'
    >>> require(LocalConnector(), Leases, "hold leases")
    Traceback (most recent call last):
    ...
    pxexec.errors.ConfigError: The connector LocalConnector(...) cannot hold leases: ...
    """
    if isinstance(connector, capability):
        return connector
    from pxexec.errors import ConfigError

    name = capability.__name__
    raise ConfigError(
        f"The connector {connector!r} cannot {action}: it lacks the {name} capability "
        f"(see pxexec.connectors.base). Use a connector that has it, or add its methods "
        "to this one (pxexec.testing.ConnectorConformance checks them)."
    )


class BaseConnector:
    """A base for connectors: batch operations as loops, pickling as the config.

    A subclass sets ``type_name`` and implements ``put``, ``get``, ``exists``,
    ``evict``, ``config`` and ``from_config``, and the methods of each capability it
    has (see the module doc). ``from_url`` makes one from a URL or bare name.

    >>> class DictConnector(BaseConnector):
    ...     type_name = "dict-demo"
    ...     def __init__(self):
    ...         self.data = {}
    ...     def put(self, frames):
    ...         key = new_token()
    ...         self.data[key] = b"".join(bytes(f) for f in frames)
    ...         return key
    ...     def get(self, key):
    ...         return self.data.get(key)
    ...     def exists(self, key):
    ...         return key in self.data
    ...     def evict(self, key):
    ...         self.data.pop(key, None)
    >>> c = DictConnector()
    >>> keys = c.put_batch([[b"x"], [b"y"]])
    >>> c.get_batch(keys), sorted(capabilities(c))
    ([b'x', b'y'], [])
    """

    #: name in the connector registry; written into ``config()["type"]``
    type_name = ""

    def put(self, frames: Sequence[Buffer]) -> str:
        raise NotImplementedError

    def get(self, key: str) -> Buffer | None:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def evict(self, key: str) -> None:
        raise NotImplementedError

    def put_batch(self, payloads: Sequence[Sequence[Buffer]]) -> list[str]:
        return [self.put(frames) for frames in payloads]

    def get_batch(self, keys: Sequence[str]) -> list[Buffer | None]:
        return [self.get(key) for key in keys]

    def evict_batch(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.evict(key)

    def close(self) -> None:
        """Release client resources; stored objects stay where they are."""

    def __reduce__(self) -> tuple[Any, ...]:
        # A connector travels as its config and is rebuilt where it lands.
        from pxexec.connectors.registry import connector_from_config

        return (connector_from_config, (self.config(),))

    def config(self) -> ConnectorConfig:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> Any:
        raise NotImplementedError

    @classmethod
    def options_from_url(cls, url: str) -> dict[str, Any]:
        """The constructor options that ``url`` names (parsed here, before any I/O).

        ``url`` is what the registry was given: a bare name (``"local"``) or a URL
        whose scheme maps to this class. This default takes a bare name only; a
        connector with URLs of its own overrides it.

        >>> from pxexec.connectors.local import LocalConnector
        >>> LocalConnector.options_from_url("local")
        {}
        """
        if "://" in url:
            from pxexec.errors import ConfigError

            raise ConfigError(
                f"The {cls.type_name or cls.__qualname__!r} connector takes no URL, got "
                f"{url!r}: name it by its bare name ({cls.type_name!r}) and give options "
                "in a config table."
            )
        return {}

    def __enter__(self) -> BaseConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_token() -> str:
    """An unguessable key component (128 random bits, as 32 hex digits).

    >>> len(new_token()), new_token() != new_token()
    (32, True)
    """
    return secrets.token_hex(16)


def check_options(kind: str, config: ConnectorConfig, allowed: set[str]) -> dict[str, Any]:
    """Validate a connector config; return its options without the ``type`` entry.

    >>> check_options("file", {"type": "file", "directory": "/tmp/x"}, {"directory"})
    {'directory': '/tmp/x'}
    """
    from pxexec.errors import ConfigError

    options = {k: v for k, v in config.items() if k != "type"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"Unknown option(s) {unknown} for the {kind!r} connector; allowed: "
            f"{sorted(allowed)}."
        )
    return options


def check_directory_options(kind: str, directory: str | None, namespace: str,
                            lease: Any) -> None:
    """Validate what every directory-backed store takes (before any I/O).

    The directory must be absolute (every process must find the same store, whatever
    its working directory), the namespace a plain name, the lease positive seconds.

    >>> check_directory_options("file", "/scratch/px", "run-1", 60)
    >>> try:
    ...     check_directory_options("file", "relative/px", "run-1", None)
    ... except ValueError as exc:
    ...     print(type(exc).__name__)
    ConfigError
    """
    import os
    import re

    from pxexec.errors import ConfigError

    if directory is not None and not os.path.isabs(os.path.expanduser(directory)):
        raise ConfigError(
            f"The {kind} connector's directory {directory!r} is a relative path; give an "
            "absolute one (e.g. 'file:///scratch/px'), so that every process finds the "
            "same store whatever its working directory."
        )
    if not isinstance(namespace, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", namespace) \
            or namespace in (".", ".."):
        raise ConfigError(
            f"Namespace {namespace!r} is not a plain name: use letters, digits, '_', "
            "'-' or '.'."
        )
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, (int, float))
                              or not lease > 0 or lease == float("inf")):
        raise ConfigError(f"lease must be a positive number of seconds, got {lease!r}.")


def directory_from_url(url: str, kind: str, *, required: bool = False) -> dict[str, Any]:
    """The ``directory`` option of a directory store's URL (``kind:///abs/path``).

    A bare name (``"shm"``) or ``kind://`` alone give no directory: the store's
    default, unless ``required``. A host part, a relative path or a missing ``//``
    raise ``ConfigError`` saying how to write it.

    >>> directory_from_url("file:///scratch/px%20run", "file")
    {'directory': '/scratch/px run'}
    >>> directory_from_url("shm", "shm")
    {}
    >>> directory_from_url("file:/scratch/px", "file")
    Traceback (most recent call last):
    ...
    pxexec.errors.ConfigError: Connector URL 'file:/scratch/px' is not a URL: write \
file:// followed by an absolute path, e.g. 'file:///dev/shm/px'.
    """
    from urllib.parse import unquote, urlsplit

    from pxexec.errors import ConfigError

    example = f"'{kind}:///dev/shm/px'"
    if "://" not in url:
        if ":" in url:
            raise ConfigError(f"Connector URL {url!r} is not a URL: write {kind}:// followed "
                              f"by an absolute path, e.g. {example}.")
        if required:
            raise ConfigError(f"The {kind} connector needs a directory: write {kind}:// "
                              f"followed by an absolute path, e.g. {example}.")
        return {}
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"{kind.capitalize()} URL {url!r} has a host part {parts.netloc!r}: a path "
            f"must be absolute and follow three slashes, e.g. {example} "
            "(relative paths are refused: each process would find another directory)."
        )
    if not parts.path:
        if required:
            raise ConfigError(f"{kind.capitalize()} URL {url!r} needs a path, e.g. "
                              f"'{kind}:///scratch/pxexec'.")
        return {}
    return {"directory": unquote(parts.path)}
