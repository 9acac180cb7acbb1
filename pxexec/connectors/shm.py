"""Node-local shared memory connector (files on the /dev/shm tmpfs)."""

from __future__ import annotations

import os
from typing import Any

from pxexec.connectors.base import ConnectorConfig, check_options
from pxexec.connectors.file import OPTIONS, FileConnector

__all__ = ["SharedMemoryConnector", "default_shm_directory"]


def default_shm_directory() -> str:
    """Where shm stores live by default: a per-user directory in /dev/shm.

    >>> default_shm_directory().startswith("/dev/shm/pxexec-")
    True
    """
    return f"/dev/shm/pxexec-{os.getuid()}"


class SharedMemoryConnector(FileConnector):
    """Objects live in RAM under /dev/shm, visible to every process on this node.

    A read maps the object copy-on-write: numpy arrays view shared memory without a
    copy, and a write by one reader is private to that reader.

    >>> from pxexec import Store
    >>> import numpy as np
    >>> with Store("shm-demo", SharedMemoryConnector(namespace="demo")) as store:
    ...     key = store.put(np.arange(4))
    ...     store.get(key).tolist()
    [0, 1, 2, 3]
    """

    type_name = "shm"
    free_in_background = True
    node_local_default = True

    def __init__(
        self, directory: str | None = None, *, namespace: str = "default", fsync: bool = False,
        lease: float | None = None, **node: Any,
    ) -> None:
        super().__init__(
            directory or default_shm_directory(), namespace=namespace, fsync=False, lease=lease,
            **node,
        )

    @classmethod
    def from_config(cls, config: ConnectorConfig) -> SharedMemoryConnector:
        options: dict[str, Any] = check_options(cls.type_name, config, OPTIONS)
        return cls(**options)
