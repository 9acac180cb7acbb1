"""Node-local shared memory connector (files on the /dev/shm tmpfs)."""

from __future__ import annotations

import os
from typing import Any

from pxexec.connectors.base import ConnectorConfig, check_options
from pxexec.connectors.file import FileConnector


def default_shm_directory() -> str:
    return f"/dev/shm/pxexec-{os.getuid()}"


class SharedMemoryConnector(FileConnector):
    """Objects live in RAM under /dev/shm, visible to every process on this node.

    A read maps the object copy-on-write: numpy arrays view shared memory without a
    copy, and a write by one reader is private to that reader.
    """

    type_name = "shm"

    def __init__(
        self, directory: str | None = None, *, namespace: str = "default", fsync: bool = False,
        lease: float | None = None,
    ) -> None:
        super().__init__(
            directory or default_shm_directory(), namespace=namespace, fsync=False, lease=lease
        )

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> SharedMemoryConnector:
        options: dict[str, Any] = check_options(
            cls.type_name, config, {"directory", "namespace", "fsync", "lease"}
        )
        return cls(**options)
