"""The connector contract: moving bytes in and out of a backend.

A connector knows nothing of Python objects. ``put`` takes a sequence of buffers
(the frames of one payload) and returns a key, a small string; ``get`` returns one
buffer holding the concatenated frames, or ``None`` when the key is missing.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

Buffer = Any  # bytes, bytearray, memoryview (an mmap-backed view is fine)
ConnectorConfig = dict[str, Any]

__all__ = ["BaseConnector", "Connector", "check_directory_options", "check_options", "new_token"]


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


class BaseConnector:
    """A base for connectors: batch operations as loops, leases off, no replace.

    A subclass sets ``type_name`` and implements ``put``, ``get``, ``exists``,
    ``evict``, ``config`` and ``from_config``.

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
    >>> c.get_batch(keys)
    [b'x', b'y']
    """

    #: name in the connector registry; written into ``config()["type"]``
    type_name = ""
    #: seconds after which an object nobody holds expires (None: never); see pxexec.store.leases
    lease_seconds: float | None = None

    def put(self, frames: Sequence[Buffer]) -> str:
        raise NotImplementedError

    def get(self, key: str) -> Buffer | None:
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

    # -- writing under a key chosen first (signed stores bind the key into the
    # signature); connectors without these are signed without the key -----------

    new_key: Any = None  # (nbytes) -> str: a fresh key for an object of nbytes
    put_at: Any = None  # (key, frames) -> None: store a new object under new_key's key

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        """Overwrite the object under an existing ``key`` (for ``ownership.update``)."""
        raise NotImplementedError(f"The {self.type_name!r} connector cannot replace objects.")

    # -- leases (no-ops for connectors whose objects never expire) --------------------

    def adopt(self, owner: str, keys: Sequence[str]) -> None:
        """Attach ``keys`` to the lease of ``owner`` (a live process)."""

    def renew(self, owner: str, keys: Sequence[str], seconds: float) -> None:
        """Extend the lease of ``owner`` on ``keys`` by ``seconds`` (one batched call)."""

    def reap(self) -> int:
        """Delete expired objects; return how many were deleted."""
        return 0

    def close(self) -> None:
        """Release client resources; stored objects stay where they are."""

    def __reduce__(self) -> tuple[Any, ...]:
        # A connector travels as its config and is rebuilt where it lands.
        from pxexec.connectors import connector_from_config

        return (connector_from_config, (self.config(),))

    def config(self) -> ConnectorConfig:
        raise NotImplementedError

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
