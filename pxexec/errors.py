"""Every error pxexec raises.

Each class also subclasses the builtin exception a caller would naturally catch
(``KeyError`` for a missing key, ``ConnectionError`` for an unreachable store, ...),
so code written against the builtins keeps working.
"""

from __future__ import annotations


class PxexecError(Exception):
    """Base class of every error raised by pxexec."""


class MissingKeyError(PxexecError, KeyError):
    """A stored object was looked up but is not (or no longer) in its store."""

    def __init__(self, key: str, store: str, detail: str = "") -> None:
        self.key = key
        self.store = store
        message = (
            f"Object {key!r} is not in store {store!r}. Likely causes: it was evicted "
            "(its owner was freed, a task that received it by ownership completed, or its "
            "lease/TTL expired), the store was restarted or cleared, or this process is "
            "configured with a different store location than the process that wrote it."
        )
        if detail:
            message = f"{message} {detail}"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class StoreConnectionError(PxexecError, ConnectionError):
    """The backend of a store could not be reached or stopped answering."""


class SerializationError(PxexecError, TypeError):
    """An object could not be serialized."""


class DeserializationError(PxexecError, ValueError):
    """Stored bytes are not a valid pxexec payload (corrupted, truncated or foreign)."""


class UnknownConnectorError(PxexecError, ValueError):
    """A connector name or URL scheme is not registered."""


class MissingDependencyError(PxexecError, ImportError):
    """An optional dependency is needed for the requested feature."""

    def __init__(self, package: str, extra: str, feature: str, how: str = "") -> None:
        self.package = package
        self.extra = extra
        how = how or f"Install it with: pip install 'pxexec[{extra}]'"
        super().__init__(
            f"{feature} needs the optional package {package!r}, which is not installed. {how}",
            name=package,
        )


class ConfigError(PxexecError, ValueError):
    """A configuration (file or dict) is invalid."""


class ProxyResolveError(PxexecError, RuntimeError):
    """A proxy's factory failed while resolving the target."""


class PolicyError(PxexecError, RuntimeError):
    """A should_proxy policy raised while deciding about an argument."""


class StoreIOError(PxexecError, OSError):
    """A store's backend failed to read or write (disk full, directory removed, ...)."""


class SignatureError(DeserializationError):
    """A stored object's signature does not verify: it was not written with the secret."""
