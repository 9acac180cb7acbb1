"""Every error pxexec raises.

Each class also subclasses the builtin exception a caller would naturally catch
(``KeyError`` for a missing key, ``ConnectionError`` for an unreachable store, ...),
so code written against the builtins keeps working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DeserializationError",
    "EngineOptionError",
    "MissingDependencyError",
    "MissingKeyError",
    "NoRouteError",
    "NodeUnreachableError",
    "ObjectOnOtherHostError",
    "OwnershipError",
    "PolicyError",
    "PxexecError",
    "SerializationError",
    "SignatureError",
    "StoreConnectionError",
    "StoreIOError",
    "TaskOutputError",
    "UnknownConnectorError",
    "UnsafeDirectoryError",
]


class PxexecError(Exception):
    """Base class of every error raised by pxexec.

    >>> from pxexec import Store, PxexecError
    >>> from pxexec.connectors.local import LocalConnector
    >>> try:
    ...     Store("errors-demo", LocalConnector()).get("no-such-key")
    ... except PxexecError as exc:
    ...     print(type(exc).__name__)
    MissingKeyError
    """


class MissingKeyError(PxexecError, KeyError):
    """A stored object was looked up but is not (or no longer) in its store.

    Also a ``KeyError``; ``key`` and ``store`` name what was missing.

    >>> from pxexec import Store, MissingKeyError
    >>> from pxexec.connectors.local import LocalConnector
    >>> store = Store("missing-demo", LocalConnector())
    >>> key = store.put([1, 2, 3])
    >>> store.evict(key)
    >>> try:
    ...     store.get(key)
    ... except KeyError as exc:
    ...     print(isinstance(exc, MissingKeyError), exc.store)
    True missing-demo
    """

    def __init__(self, key: str, store: str, detail: str = "") -> None:
        self.key = key
        self.store = store
        self.detail = detail
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

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries intact
        return (type(self), (self.key, self.store, self.detail))


class StoreConnectionError(PxexecError, ConnectionError):
    """The backend of a store could not be reached or stopped answering.

    Also a ``ConnectionError``; the message names the backend's address.

    >>> from pxexec.connectors.redis import RedisConnector
    >>> from pxexec.codec.serialize import serialize
    >>> down = RedisConnector("redis://127.0.0.1:1/0", connect_timeout=0.5)
    >>> try:
    ...     down.put(serialize(b"x"))
    ... except ConnectionError as exc:
    ...     print(type(exc).__name__, "127.0.0.1:1" in str(exc))
    StoreConnectionError True
    """


class SerializationError(PxexecError, TypeError):
    """An object could not be serialized (not even by cloudpickle).

    >>> import threading
    >>> from pxexec.codec.serialize import serialize
    >>> try:
    ...     serialize(threading.Lock())
    ... except TypeError as exc:
    ...     print(type(exc).__name__)
    SerializationError
    """


class DeserializationError(PxexecError, ValueError):
    """Stored bytes are not a valid pxexec payload (corrupted, truncated or foreign).

    >>> from pxexec.codec.serialize import deserialize
    >>> try:
    ...     deserialize([b"not a pxexec payload"])
    ... except ValueError as exc:
    ...     print(type(exc).__name__)
    DeserializationError
    """


class UnknownConnectorError(PxexecError, ValueError):
    """A connector name or URL scheme is not registered.

    >>> from pxexec.connectors import connector_from_url
    >>> try:
    ...     connector_from_url("ftp://example.org/x")
    ... except ValueError as exc:
    ...     print(type(exc).__name__)
    UnknownConnectorError
    """


class MissingDependencyError(PxexecError, ImportError):
    """An optional dependency is needed for the requested feature.

    Also an ``ImportError``; the message names the extra to install.

    >>> exc = MissingDependencyError("redis", "redis", "The Redis connector")
    >>> print(exc)  # doctest: +ELLIPSIS
    The Redis connector needs the optional package 'redis', ... pip install 'pxexec[redis]'
    """

    def __init__(self, package: str, extra: str, feature: str, how: str = "") -> None:
        self.package = package
        self.extra = extra
        self.feature = feature
        self.how = how
        how = how or f"Install it with: pip install 'pxexec[{extra}]'"
        super().__init__(
            f"{feature} needs the optional package {package!r}, which is not installed. {how}",
            name=package,
        )

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries intact
        return (type(self), (self.package, self.extra, self.feature, self.how))


class ConfigError(PxexecError, ValueError):
    """A configuration (file or dict) is invalid; the message names the key.

    >>> from pxexec.config import from_dict
    >>> try:
    ...     from_dict({"store": {"name": "s", "connector": "local"},
    ...                "executor": {"ownership": "yes"}})
    ... except ValueError as exc:
    ...     print(exc)
    <config>: [executor].ownership must be true or false, got 'yes'.
    """


class PolicyError(PxexecError, RuntimeError):
    """A should_proxy policy raised while deciding about an argument.

    The message names the policy and the argument's type; the policy's own exception
    is the ``__cause__``.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec import Store, StoreExecutor
    >>> from pxexec.connectors.local import LocalConnector
    >>> def picky(obj):
    ...     raise ValueError("cannot decide")
    >>> store = Store("policy-demo", LocalConnector())
    >>> with StoreExecutor(ThreadPoolExecutor(1), store, picky) as ex:
    ...     try:
    ...         ex.submit(len, "abc")
    ...     except RuntimeError as exc:
    ...         print(type(exc).__name__, type(exc.__cause__).__name__)
    PolicyError ValueError
    """


class StoreIOError(PxexecError, OSError):
    """A store's backend failed to read or write (disk full, directory removed, ...).

    Also an ``OSError``. Nothing partially written is ever visible to readers.

    >>> from pxexec.connectors.file import FileConnector

    >>> import os, tempfile
    >>> not_a_directory = tempfile.mkstemp()[1]
    >>> try:
    ...     FileConnector(os.path.join(not_a_directory, "objects"))
    ... except OSError as exc:
    ...     print(type(exc).__name__)
    StoreIOError
    """


class SignatureError(DeserializationError):
    """A stored object's signature does not verify: it was not written with the secret.

    The object is refused before anything in it is deserialized.

    >>> import os
    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> shared = LocalConnector()
    >>> os.environ["PXEXEC_DEMO_SECRET"] = "s3cret"
    >>> key = Store("unsigned", shared).put({"a": 1})      # written without the secret
    >>> signed = Store("signed", shared, secret_env="PXEXEC_DEMO_SECRET")
    >>> try:
    ...     signed.get(key)
    ... except ValueError as exc:
    ...     print(type(exc).__name__)
    SignatureError
    """


class TaskOutputError(PxexecError, EOFError):
    """An engine returned no result for a task: its output file was empty or missing.

    TaskVine reports this as a bare ``EOFError``; it means the worker's ``python3``
    could not unpickle the task or its arguments (a module missing there), the task
    left without raising an ``Exception`` (killed, out of memory, ``os._exit``), or
    its result could not be pickled. ``output`` holds the end of the task's output.

    >>> from pxexec.errors import TaskOutputError
    >>> err = TaskOutputError("TaskVine task 7 produced no result.", "ModuleNotFoundError")
    >>> isinstance(err, EOFError), err.output
    (True, 'ModuleNotFoundError')
    """

    def __init__(self, message: str, output: str = "") -> None:
        self.output = output
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.output))


class UnsafeDirectoryError(PxexecError, PermissionError):
    """A store directory could be read or replaced by another user, or is a symlink.

    pxexec refuses to read or write objects there (another user could plant a pickle
    that would run as you). The message says what is wrong and how to fix it.

    >>> import os, tempfile
    >>> from pxexec.connectors.private_dir import ensure_private_directory
    >>> shared = tempfile.mkdtemp()
    >>> os.chmod(shared, 0o777)
    >>> try:
    ...     ensure_private_directory(shared)
    ... except PermissionError as exc:
    ...     print(type(exc).__name__)
    UnsafeDirectoryError
    >>> os.rmdir(shared)
    """


class ObjectOnOtherHostError(PxexecError, KeyError):
    """An object of a node-local store was asked for on a host that cannot reach it.

    Also a ``KeyError``. The message names the host that holds the object, this host,
    and what to use instead (direct node-to-node transfer, or a store every host
    reaches).

    >>> exc = ObjectOnOtherHostError("ab12", "n1~0ca583ff", "head~0ca583ff", "shm")
    >>> print(exc)  # doctest: +ELLIPSIS
    Object 'ab12' lives in the node-local shm store of host 'n1' (boot 0ca583ff), ...
    """

    def __init__(self, key: str, holder: str, here: str, kind: str, action: str = "read",
                 ) -> None:
        self.key = key
        self.holder = holder
        self.here = here
        self.kind = kind
        self.action = action
        h_name, _, h_boot = holder.rpartition("~")
        me, _, my_boot = here.rpartition("~")
        where = "an earlier boot of this host" if h_name == me else f"host {h_name!r}"
        super().__init__(
            f"Object {key!r} lives in the node-local {kind} store of {where} (boot "
            f"{h_boot}), and this process runs on host {me!r} (boot {my_boot}), so it "
            f"cannot {action} it. Node-local stores are visible only on their own host: "
            "enable direct node-to-node transfer (transfer=True on the connector, e.g. "
            "SharedMemoryConnector(transfer=True)), or use a store every host reaches "
            "(redis://host:port, or file:// on a shared file system)."
        )

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.holder, self.here, self.kind, self.action))


class NodeUnreachableError(StoreConnectionError):
    """The node that holds an object (or a copy of it) did not answer in time.

    Also a ``ConnectionError``; ``host`` and ``address`` name the node and the address
    tried.

    >>> exc = NodeUnreachableError("n1", "10.0.0.2:4000", "fetch object 'ab12'", "timed out")
    >>> print(exc)  # doctest: +ELLIPSIS
    Could not fetch object 'ab12' from host 'n1' at 10.0.0.2:4000: timed out. ...
    """

    def __init__(self, host: str, address: str, action: str, cause: str) -> None:
        self.host = host
        self.address = address
        self.action = action
        self.cause = cause
        super().__init__(
            f"Could not {action} from host {host!r} at {address}: {cause}. The host may be "
            "down, its pxexec node server stopped, or the network between the hosts cut; "
            "objects held only in that host's memory are lost with it: resubmit the tasks "
            "that made them. The time allowed is the connector's transfer_timeout."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.host, self.address, self.action, self.cause))


class EngineOptionError(PxexecError, TypeError):
    """An engine option given to ``StoreExecutor.options`` is not one the engine takes.

    Raised before anything is stored or submitted.

    >>> from concurrent.futures import ThreadPoolExecutor
    >>> from pxexec import Store, StoreExecutor
    >>> from pxexec.connectors.local import LocalConnector
    >>> with StoreExecutor(ThreadPoolExecutor(1), Store("opt-demo", LocalConnector())) as ex:
    ...     try:
    ...         ex.options(workers=["w1"])
    ...     except TypeError as exc:
    ...         print(type(exc).__name__)
    EngineOptionError
    """


class OwnershipError(PxexecError, ReferenceError):
    """An ownership or borrowing rule was broken (use after move, borrow conflict, ...).

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> from pxexec.store.ownership import borrow, mut_borrow
    >>> store = Store("own-demo", LocalConnector())
    >>> owner = store.owned_proxy([1, 2])
    >>> ref = borrow(owner)
    >>> try:
    ...     mut_borrow(owner)
    ... except OwnershipError as exc:
    ...     print("refused")
    refused
    """


class NoRouteError(PxexecError, LookupError):
    """No route of a MultiConnector accepts an object.

    >>> from pxexec import Store
    >>> from pxexec.connectors.local import LocalConnector
    >>> from pxexec.connectors.multi import MultiConnector, Route
    >>> only_small = MultiConnector([Route("small", LocalConnector(), max_size=100)])
    >>> try:
    ...     Store("no-route-demo", only_small).put(bytes(1000))
    ... except LookupError as exc:
    ...     print(type(exc).__name__)
    NoRouteError
    """
