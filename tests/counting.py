"""A shared-memory connector that logs every ``get`` (a test double, kept with the tests).

Its config names ``tests.counting:CountingConnector``, so worker processes rebuild it
wherever the tests package is importable (conftest puts the repository on PYTHONPATH).
"""

from __future__ import annotations

import os

from pxexec.connectors.base import Buffer, ConnectorConfig
from pxexec.connectors.shm import SharedMemoryConnector


class CountingConnector(SharedMemoryConnector):
    """A shared-memory connector that logs every ``get`` (pid and key) to a file.

    The log lives beside the objects, so gets made in worker processes are counted
    too: ``CountingConnector.gets()`` reads them back.

    >>> import tempfile
    >>> from pxexec import Store
    >>> store = Store("counting-demo", CountingConnector(tempfile.mkdtemp()))
    >>> key = store.put(b"x")
    >>> _ = store.connector.get(key)
    >>> store.connector.gets() == [(os.getpid(), key)]
    True
    """

    type_name = "tests.counting:CountingConnector"

    @property
    def log_path(self) -> str:
        return f"{self.path}.gets"

    def get(self, key: str) -> Buffer | None:
        with open(self.log_path, "a") as f:
            f.write(f"{os.getpid()} {key}\n")
        return super().get(key)

    def gets(self) -> list[tuple[int, str]]:
        """Every get so far, as (pid, key), from every process."""
        try:
            with open(self.log_path) as f:
                return [(int(p), k) for p, k in (line.split() for line in f)]
        except FileNotFoundError:
            return []

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> CountingConnector:
        options = {k: v for k, v in config.items() if k != "type"}
        return cls(**options)
