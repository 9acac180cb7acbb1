"""In-process connector: a dict in this process's memory (threads only)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence

from pxexec.connectors.base import BaseConnector, Buffer, ConnectorConfig, check_options, new_token
from pxexec.errors import ConfigError, MissingKeyError
from pxexec.forking import renew_locks_after_fork

_INSTANCES: weakref.WeakValueDictionary[str, LocalConnector] = weakref.WeakValueDictionary()


__all__ = ["LocalConnector"]


class LocalConnector(BaseConnector):
    """Keeps payloads in a dict of this process.

    Useful with thread pools and in tests. Proxies made on it resolve only inside this
    process: a worker process has no access to the dict (use ``shm`` or ``file``).

    >>> connector = LocalConnector()
    >>> key = connector.put([b"data"])
    >>> connector.exists(key), bytes(connector.get(key))
    (True, b'data')
    """

    type_name = "local"
    cacheable = False

    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance or new_token()
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()
        renew_locks_after_fork(self, "_lock")
        _INSTANCES[self.instance] = self

    def put(self, frames: Sequence[Buffer]) -> str:
        key = self.new_key(0)
        self.put_at(key, frames)
        return key

    def new_key(self, nbytes: int) -> str:
        return f"local:{new_token()}"

    def put_at(self, key: str, frames: Sequence[Buffer]) -> None:
        value = b"".join(frames)
        with self._lock:
            self._data[key] = value

    def get(self, key: str) -> Buffer | None:
        return self._data.get(key)

    def replace(self, key: str, frames: Sequence[Buffer]) -> None:
        with self._lock:
            if key not in self._data:
                raise MissingKeyError(key, f"local:{self.instance}")
            self._data[key] = b"".join(frames)

    def exists(self, key: str) -> bool:
        return key in self._data

    def evict(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def keys(self) -> list[str]:
        """Keys currently stored (for tests and tools)."""
        return list(self._data)

    def __repr__(self) -> str:
        return f"LocalConnector(instance={self.instance!r}, objects={len(self._data)})"

    def config(self) -> ConnectorConfig:
        return {"type": self.type_name, "instance": self.instance}

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> LocalConnector:
        options = check_options(cls.type_name, config, {"instance"})
        instance = options.get("instance")
        if instance is None:
            return cls()
        existing = _INSTANCES.get(str(instance))
        if existing is None:
            raise ConfigError(
                f"The local connector {instance!r} lives in another process (or was "
                "closed); local keeps data in the memory of the process that created it. "
                "Use the 'shm' or 'file' connector to share objects between processes."
            )
        return existing
